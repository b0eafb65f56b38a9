"""Checkpoint files: hashing them as written, checking them later, choosing one to restore.

A checkpoint row is a claim about a file: this path held these bytes (size, sha256) at that epoch.
Files live outside the database and can be overwritten (a fixed ModelCheckpoint `filepath`),
moved or deleted, so nothing is restored without checking the claim first.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tracker.errors import CheckpointError, TrackerError
from tracker.modes import resolve_mode
from tracker.output import fmt_float
from tracker.records import CheckpointRecord, MetricPoint, RunRecord, SummaryRecord

OK, MISSING, MODIFIED = "ok", "missing", "modified"
OWN_SOURCE = "TrackingCallback"  # the callback's own best-weights copy
SUFFIX = {"model": ".keras", "weights": ".weights.h5"}  # by kind, for a file named otherwise
_LEGACY = (".h5", ".hdf5")
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Size in bytes and sha256 hex digest of a file."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256") if hasattr(hashlib, "file_digest") else None
        if digest is None:  # Python 3.10
            h = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            digest = h
    return os.path.getsize(path), digest.hexdigest()


def state(ck: CheckpointRecord) -> str:
    """`ok`, `missing` or `modified` (size checked first: it costs no read)."""
    path = Path(ck.path)
    if not path.is_file():
        return MISSING
    if path.stat().st_size != ck.size:
        return MODIFIED
    return OK if file_digest(path)[1] == ck.sha256 else MODIFIED


def _reason(ck: CheckpointRecord, st: str) -> str:
    what = "no longer exists" if st == MISSING else "was changed after it was recorded"
    return f"checkpoint {ck.path} (epoch {ck.epoch}) {what}"


def default_monitor(run: RunRecord, cks: list[CheckpointRecord], keys: list[str]) -> str | None:
    """The metric the run itself was judged by: its callbacks' monitor, else val_loss, else loss."""
    for ck in reversed(cks):
        if ck.monitor:
            return ck.monitor
    es = run.stop_details.get("early_stopping") or {}
    if es.get("monitor"):
        return str(es["monitor"])
    for key in ("val_loss", "loss"):
        if key in keys:
            return key
    return None


# -- choosing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """Where a restore takes its weights from, and why there.

    `candidates` all hold the weights of that point (the user's own files first, the newest save
    first within each source); the first whose file checks out is restored. A default restore
    also says which `metric` chose the epoch, its `value` there and, when the run's best epoch by
    that metric could not be used, `missed`: why not.
    """

    epoch: int
    candidates: list[CheckpointRecord]
    metric: str | None = None
    value: float | None = None
    missed: str | None = None


def last_batch(run: RunRecord) -> int | None:
    """The index of an epoch's last batch (`steps - 1`), when the number of steps is known."""
    steps = run.fit_params.get("steps")
    return steps - 1 if isinstance(steps, int) and steps > 0 else None


def at_epoch_end(ck: CheckpointRecord, last: int | None) -> bool:
    """Whether the checkpoint holds the weights of its epoch's end.

    A batch-based ModelCheckpoint save (`save_freq=<int>`) does only when it came after the last
    batch. Under `steps_per_execution` Keras reports each group by `first + steps_per_execution
    - 1`, which for the last group can be past the last batch (5 steps in groups of 2 are
    reported as batches 1, 3, 5), and for any other group is before it.
    """
    return ck.epoch is not None and (ck.batch is None or (last is not None and ck.batch >= last))


def select(
    run: RunRecord,
    cks: list[CheckpointRecord],
    summaries: dict[str, SummaryRecord],
    history: Callable[[str], Iterable[MetricPoint]],
    *,
    epoch: int | None = None,
    batch: int | None = None,
    metric: str | None = None,
) -> Choice:
    """The checkpoints a restore may take, before any file is checked.

    With `epoch`, those holding the weights at that epoch's end; with `batch` too, those of that
    batch (an end-of-epoch save counts for the last batch). Otherwise the best epoch by `metric`
    among the epochs with an end-of-epoch checkpoint; `history(metric)` is read only when the
    run's best epoch has none.

    Raises:
        CheckpointError: a bad combination of arguments, or no checkpoint fits.
        MetricNotFound: the run did not record `metric`.
    """
    if batch is not None and (epoch is None or batch < 0):
        raise CheckpointError(
            f"a batch needs the epoch it belongs to, and counts from 0. Received: "
            f"epoch={epoch}, batch={batch}"
        )
    if epoch is not None and metric is not None:
        raise CheckpointError(
            f"an epoch and a metric cannot both choose the checkpoint. Received: "
            f"epoch={epoch}, metric={metric!r}"
        )
    if not cks:
        raise CheckpointError(f"run {run.short_id} ({run.name}) recorded no checkpoints")
    if epoch is not None:
        return Choice(epoch, _at(run, cks, epoch, batch))
    return _best(run, cks, summaries, history, metric)


def _ordered(cks: list[CheckpointRecord]) -> list[CheckpointRecord]:
    return sorted(cks, key=lambda c: (c.source == OWN_SOURCE, -c.id))


def _epochs(cks: list[CheckpointRecord]) -> list[int]:
    return sorted({c.epoch for c in cks if c.epoch is not None})


def _listed(numbers: Iterable[int]) -> str:
    return ", ".join(map(str, numbers)) or "none"


def _at(
    run: RunRecord, cks: list[CheckpointRecord], epoch: int, batch: int | None
) -> list[CheckpointRecord]:
    last = last_batch(run)
    at = [c for c in cks if c.epoch == epoch]
    if batch is None:
        found = [c for c in at if at_epoch_end(c, last)]
    else:
        is_last = last is not None and batch >= last
        found = [c for c in at if c.batch == batch or (is_last and at_epoch_end(c, last))]
    if found:
        return _ordered(found)
    batches = sorted({c.batch for c in at if c.batch is not None and not at_epoch_end(c, last)})
    if batch is None and batches:
        raise CheckpointError(
            f"run {run.short_id} has no checkpoint of the end of epoch {epoch}, only of its "
            f"batches {_listed(batches)}: ask for one of them by batch (--batch N, batch=N)"
        )
    if batch is not None and at:
        parts = [f"batches {_listed(batches)}"] if batches else []
        parts += ["its end"] if any(at_epoch_end(c, last) for c in at) else []
        raise CheckpointError(
            f"run {run.short_id} has no checkpoint at batch {batch} of epoch {epoch}; "
            f"checkpoints of epoch {epoch}: {' and '.join(parts)}"
        )
    have = _epochs([c for c in cks if at_epoch_end(c, last)])
    raise CheckpointError(
        f"run {run.short_id} has no checkpoint at epoch {epoch}; "
        f"epochs with checkpoints: {_listed(have)}"
    )


def _best(
    run: RunRecord,
    cks: list[CheckpointRecord],
    summaries: dict[str, SummaryRecord],
    history: Callable[[str], Iterable[MetricPoint]],
    metric: str | None,
) -> Choice:
    """The best epoch that has an end-of-epoch checkpoint (a `min_delta`, a `save_best_only`, a
    batch-based `save_freq` can each leave the run's best epoch without one)."""
    from tracker.queries import require_metrics  # the store's reads are imported already here

    last = last_batch(run)
    ends = [c for c in cks if at_epoch_end(c, last)]
    metric = metric or default_monitor(run, cks, list(summaries))
    if metric is None:
        raise CheckpointError(f"run {run.short_id} has no metric to pick a best epoch by")
    require_metrics([metric], summaries, f"in run {run.short_id}")
    if not ends:
        raise CheckpointError(
            f"run {run.short_id} has no checkpoint of an epoch's end, only batch checkpoints: "
            "ask for one by epoch and batch (--epoch N --batch M)"
        )
    try:
        mode = resolve_mode(metric)
    except TrackerError:
        # The checkpoints were saved when this monitor improved: the newest best is the best.
        saved = [c for c in ends if c.monitor == metric and c.is_best]
        if not saved:
            raise CheckpointError(
                f"cannot tell whether {metric!r} is better high or low, and run {run.short_id} "
                "saved no checkpoint as a best of it: choose one by epoch (--epoch N)"
            ) from None
        pick = _epochs(saved[-1:])[0]
        found = _ordered([c for c in ends if c.epoch == pick])
        return Choice(pick, found, metric, saved[-1].value)
    best_value, best_epoch = summaries[metric].best(mode)
    if best_value is None or best_epoch is None:
        raise CheckpointError(f"run {run.short_id} has no finite value of {metric!r}")
    epochs = _epochs(ends)
    if best_epoch in epochs:
        found = _ordered([c for c in ends if c.epoch == best_epoch])
        return Choice(best_epoch, found, metric, best_value)
    values = {p.epoch: p.value for p in history(metric) if p.epoch in epochs}
    scored = [(v, e) for e, v in values.items() if math.isfinite(v)]
    if not scored:
        raise CheckpointError(
            f"run {run.short_id} has no finite value of {metric!r} at an epoch with a checkpoint "
            f"(epochs {_listed(epochs)}): choose one by epoch (--epoch N)"
        )
    # The earliest epoch wins a tie, as Keras's strict improvement does.
    value, pick = min(scored) if mode == "min" else max(scored, key=lambda s: (s[0], -s[1]))
    only = "only batch checkpoints" if any(c.epoch == best_epoch for c in cks) else "no checkpoint"
    missed = f"the run's best epoch {best_epoch} ({metric} {fmt_float(best_value)}) has {only}"
    found = _ordered([c for c in ends if c.epoch == pick])
    return Choice(pick, found, metric, value, missed)


def first_intact(cks: list[CheckpointRecord]) -> tuple[CheckpointRecord | None, list[str]]:
    """The first checkpoint whose file checks out, and what is wrong with those before it."""
    problems: list[str] = []
    for ck in cks:
        st = state(ck)
        if st == OK:
            return ck, problems
        problems.append(_reason(ck, st))
    return None, problems


def verified(cks: list[CheckpointRecord]) -> CheckpointRecord:
    """The first of `cks` (which all hold the same weights) whose file checks out: a missing or
    modified file is passed over for another copy, never for another epoch.

    Raises:
        CheckpointError: every one is missing or modified (with each reason).
    """
    ck, problems = first_intact(cks)
    if ck is None:
        raise CheckpointError("refusing to restore: " + "; ".join(problems))
    return ck


# -- file formats and copying -------------------------------------------------------------------


def file_format(name: str) -> str | None:
    """The format Keras reads a file as, from its name: `.keras` (a zipped full model),
    `.weights.h5` (weights), `.h5` (legacy HDF5, full model or weights; `.hdf5` too)."""
    if name.endswith(".keras"):
        return ".keras"
    if name.endswith(".weights.h5"):
        return ".weights.h5"
    if name.endswith(_LEGACY):
        return ".h5"
    return None


def checkpoint_format(ck: CheckpointRecord) -> str | None:
    return file_format(Path(ck.path).name) or SUFFIX.get(ck.kind)


def _what(ck: CheckpointRecord, fmt: str) -> str:
    if fmt == ".h5":
        return f"is a legacy HDF5 file ({'full model' if ck.kind == 'model' else 'weights'})"
    return "holds a full model" if ck.kind == "model" else "holds weights only"


def _suffixes(fmt: str, to: Path) -> str:
    if fmt != ".h5":
        return repr(fmt)
    if file_format(to.name) == ".weights.h5":
        return "'.h5' or '.hdf5' ('.weights.h5' is Keras 3's own weights format)"
    return "'.h5' or '.hdf5'"


def check_target(ck: CheckpointRecord, to: Path, *, force: bool = False) -> None:
    """Refuse a destination that would lose data or mislabel the file's format (Keras picks
    the reader by the suffix)."""
    fmt = checkpoint_format(ck)
    if fmt is not None and file_format(to.name) != fmt:
        raise CheckpointError(
            f"the checkpoint {_what(ck, fmt)}: --to must end with {_suffixes(fmt, to)}"
        )
    if not to.parent.is_dir():
        raise CheckpointError(f"directory {to.parent} does not exist")
    if to.exists() and not force:
        raise CheckpointError(f"{to} already exists; pass --force to overwrite it")


def copy_verified(
    ck: CheckpointRecord,
    to: Path,
    *,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Copy the checkpoint to `to`, hashing the bytes as they are copied.

    The copy is written under a temporary name and only renamed to `to` once its size and
    sha256 match the record, so a file changed since the run (or during the copy) is refused
    and no half-written copy is ever left under the target name. `progress` receives the
    number of bytes copied by each chunk.
    """
    to = to.expanduser().resolve()
    check_target(ck, to, force=force)
    if not Path(ck.path).is_file():
        raise CheckpointError("refusing to restore: " + _reason(ck, MISSING))
    tmp = to.with_name(f".{to.name}.partial")
    h, size = hashlib.sha256(), 0
    try:
        with open(ck.path, "rb") as src, open(tmp, "wb") as dst:
            for block in iter(lambda: src.read(_CHUNK), b""):
                dst.write(block)
                h.update(block)
                size += len(block)
                if progress is not None:
                    progress(len(block))
        if (size, h.hexdigest()) != (ck.size, ck.sha256):
            raise CheckpointError("refusing to restore: " + _reason(ck, MODIFIED))
        os.replace(tmp, to)
    finally:
        tmp.unlink(missing_ok=True)
    return to
