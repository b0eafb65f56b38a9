"""Checkpoint files: hashing them as written, checking them later, choosing one to restore.

A checkpoint row is a claim about a file: this path held these bytes (size, sha256) at that epoch.
Files live outside the database and can be overwritten (a fixed ModelCheckpoint `filepath`),
moved or deleted, so nothing is restored without checking the claim first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from tracker.errors import CheckpointError, TrackerError
from tracker.modes import resolve_mode
from tracker.records import CheckpointRecord, RunRecord, SummaryRecord

OK, MISSING, MODIFIED = "ok", "missing", "modified"
OWN_SOURCE = "TrackingCallback"  # the callback's own best-weights copy
SUFFIX = {"model": ".keras", "weights": ".weights.h5"}
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


def choose(
    run: RunRecord,
    cks: list[CheckpointRecord],
    summaries: dict[str, SummaryRecord],
    *,
    epoch: int | None = None,
    metric: str | None = None,
) -> CheckpointRecord:
    """The verified checkpoint to restore: at `epoch`, or at the run's best epoch by `metric`.

    At one epoch the user's own ModelCheckpoint file wins over the callback's copy; a file that
    is missing or modified is passed over for another one of the same epoch, and if none is left
    the reason is raised.

    Raises:
        CheckpointError: no checkpoint fits, or every candidate fails its check.
    """
    if not cks:
        raise CheckpointError(f"run {run.short_id} ({run.name}) recorded no checkpoints")
    if epoch is None:
        epoch = _best_epoch(run, cks, summaries, metric)
    at = [c for c in cks if c.epoch == epoch]
    if not at:
        have = sorted({c.epoch for c in cks if c.epoch is not None})
        raise CheckpointError(
            f"run {run.short_id} has no checkpoint at epoch {epoch}; epochs with checkpoints: "
            + (", ".join(map(str, have)) or "none")
        )
    # The user's files first, the newest save first within each source.
    at.sort(key=lambda c: (c.source == OWN_SOURCE, -c.id))
    problems = []
    for ck in at:
        st = state(ck)
        if st == OK:
            return ck
        problems.append(_reason(ck, st))
    raise CheckpointError("refusing to restore: " + "; ".join(problems))


def _best_epoch(
    run: RunRecord,
    cks: list[CheckpointRecord],
    summaries: dict[str, SummaryRecord],
    metric: str | None,
) -> int:
    metric = metric or default_monitor(run, cks, list(summaries))
    if metric is None:
        raise CheckpointError(f"run {run.short_id} has no metric to pick a best epoch by")
    if metric not in summaries:
        known = ", ".join(summaries) or "none"
        raise CheckpointError(f"run {run.short_id} has no metric {metric!r}; it has: {known}")
    try:
        mode = resolve_mode(metric)
    except TrackerError:
        # The checkpoints were saved when this monitor improved: the newest best is the best.
        best = [c for c in cks if c.monitor == metric and c.is_best and c.epoch is not None]
        if not best:
            raise
        return best[-1].epoch  # type: ignore[return-value]
    value, best_epoch = summaries[metric].best(mode)
    if best_epoch is None:
        raise CheckpointError(f"run {run.short_id} has no finite value of {metric!r}")
    return best_epoch


def check_target(ck: CheckpointRecord, to: Path, *, force: bool = False) -> None:
    """Refuse a destination that would lose data or mislabel the file's kind."""
    suffix = SUFFIX.get(ck.kind, "")
    if suffix and not to.name.endswith(suffix):
        what = "a full model" if ck.kind == "model" else "weights only"
        raise CheckpointError(f"the checkpoint holds {what}: --to must end with {suffix!r}")
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
