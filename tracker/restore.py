"""Loading a past run's verified checkpoint into a model: the Python side of `tracker restore`."""

from __future__ import annotations

import warnings
from typing import Any

from tracker import artifacts, checkpoints
from tracker.errors import CheckpointError
from tracker.records import CheckpointRecord, RunDetail
from tracker.store import Store, open_store


def select_checkpoints(
    store: Store,
    run: str,
    *,
    epoch: int | None = None,
    batch: int | None = None,
    metric: str | None = None,
) -> tuple[RunDetail, checkpoints.Choice]:
    """The run `run` names and the checkpoints that may restore it (`checkpoints.select`). The
    metric's history is read only when the run's best epoch has no checkpoint of its end."""
    detail = store.run_detail(run, history=False)
    choice = checkpoints.select(
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
