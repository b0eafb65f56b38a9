"""Choosing a past run's checkpoint and restoring it: the one home of `tracker restore`'s logic.

`select` chooses the epoch (the run's best by its monitor, or the one asked for) and the
checkpoints that hold it; `choose_for_target` takes the first whose bytes can be had (its own
file, checked against its hash, else the artifact store's confirmed copy) in the format the
target file names; `restore_weights` loads it into a model (Keras is only met through the model).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracker import artifacts
from tracker import checkpoint_files as files
from tracker.errors import CheckpointError, TrackerError
from tracker.modes import resolve_mode
from tracker.records import CheckpointRecord, MetricPoint, RunDetail, RunRecord, SummaryRecord
from tracker.store.run_store import Store, open_store
from tracker.values import fmt_float

# -- choosing -----------------------------------------------------------------------------------


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
    return sorted(cks, key=lambda c: (c.source == files.OWN_SOURCE, -c.id))


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
    from tracker.store.queries import require_metrics  # the store's reads are imported already here

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


def choose_for_target(choice: Choice, to: Path) -> CheckpointRecord:
    """The first intact of the chosen checkpoints, preferring one whose format fits `to`'s
    suffix (a run may hold both a ModelCheckpoint `.keras` and the callback's `.weights.h5`
    there)."""
    wanted = files.file_format(to.name)
    fitting = [c for c in choice.candidates if files.checkpoint_format(c) == wanted]
    if wanted is None or not fitting:
        return artifacts.verified(choice.candidates)  # copy_out then names the suffix it needs
    ck, problems = artifacts.first_obtainable(fitting)
    if ck is not None:
        return ck
    others = [c for c in choice.candidates if c not in fitting]
    intact, more = artifacts.first_obtainable(others)
    refused = "refusing to restore: " + "; ".join(problems)
    if intact is None:
        raise CheckpointError("; ".join([refused, *more]))
    raise CheckpointError(
        f"{refused}; the {intact.kind} checkpoint of epoch {intact.epoch} is intact: "
        f"--to {to.name} would need the suffix {files.checkpoint_format(intact)!r} for it"
    )


# -- restoring ----------------------------------------------------------------------------------


def select_checkpoints(
    store: Store,
    run: str,
    *,
    epoch: int | None = None,
    batch: int | None = None,
    metric: str | None = None,
) -> tuple[RunDetail, Choice]:
    """The run `run` names and the checkpoints that may restore it (`select`). The
    metric's history is read only when the run's best epoch has no checkpoint of its end."""
    [detail] = store.run_details([run], history=False)
    choice = select(
        detail.run,
        detail.checkpoints,
        detail.summaries,
        lambda key: store.metric_history(detail.run.id, [key]),
        epoch=epoch,
        batch=batch,
        metric=metric,
    )
    return detail, choice


def find_checkpoint(
    store: Store,
    run: str,
    *,
    epoch: int | None = None,
    batch: int | None = None,
    metric: str | None = None,
) -> CheckpointRecord:
    """The checkpoint `tracker restore` would pick for `run`: its local file checked against its
    hash, else a confirmed copy in the artifact store (checked as it is fetched)."""
    _, choice = select_checkpoints(store, run, epoch=epoch, batch=batch, metric=metric)
    return artifacts.verified(choice.candidates)


def restore_weights(
    model: Any,
    run: str,
    *,
    db: str | None = None,
    epoch: int | None = None,
    batch: int | None = None,
    metric: str | None = None,
    store: Store | None = None,
) -> CheckpointRecord:
    """Load the weights of a past run into a built `model`.

    Args:
        model: a built Keras model with the run's architecture.
        run: a run id, unique id prefix, unique run name, or `"latest"`.
        db: database URL. Defaults to `TRACKER_DB_URL`, then `sqlite:///tracker.db`.
        epoch: restore the weights of this epoch's end. Defaults to the best epoch by the
            run's monitored metric that has a checkpoint (the returned record's `epoch` says
            which: a `min_delta` or a batch-based `save_freq` can leave the run's best epoch
            without one).
        batch: with `epoch`, restore a batch-based ModelCheckpoint save of this batch instead.
        metric: pick the best epoch by this metric instead.
        store: an open store to read from instead of `db`.

    Returns:
        The checkpoint that was loaded, from its own file when that is intact, else from the
        artifact store (`TRACKER_ARTIFACTS` when it holds the copy, else the recorded root).
        `.keras`, `.weights.h5` and legacy HDF5 `.h5` files, full model or weights, all work.

    Raises:
        CheckpointError: no checkpoint fits, or its file is missing or was modified and the
            artifact store holds no copy that matches the record.
        MetricNotFound: the run did not record `metric`.
    """
    own = store is None
    store = store or open_store(db)
    try:
        ck = find_checkpoint(store, run, epoch=epoch, batch=batch, metric=metric)
    finally:
        if own:
            store.close()
    try:
        with warnings.catch_warnings():
            # A full .keras file also holds optimizer state, which a freshly compiled model
            # has not built yet; Keras says so, and the weights load all the same.
            warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer")
            with artifacts.local_copy(ck) as path:
                model.load_weights(path)  # Keras picks the reader by the suffix, as recorded
    except (ValueError, OSError) as e:
        raise CheckpointError(f"could not load {ck.path} into {type(model).__name__}: {e}") from e
    return ck
