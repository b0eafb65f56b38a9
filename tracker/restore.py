"""Loading a past run's verified checkpoint into a model: the Python side of `tracker restore`."""

from __future__ import annotations

import warnings
from typing import Any

from tracker import checkpoints
from tracker.errors import CheckpointError
from tracker.records import CheckpointRecord
from tracker.store import Store, open_store


def find_checkpoint(
    store: Store, run: str, *, epoch: int | None = None, metric: str | None = None
) -> CheckpointRecord:
    """The checkpoint `tracker restore` would pick for `run`, checked against its hash."""
    detail = store.run_detail(run, history=False)
    return checkpoints.choose(
        detail.run, detail.checkpoints, detail.summaries, epoch=epoch, metric=metric
    )


def restore_weights(
    model: Any,
    run: str,
    *,
    db: str | None = None,
    epoch: int | None = None,
    metric: str | None = None,
    store: Store | None = None,
) -> CheckpointRecord:
    """Load the weights of a past run into a built `model`.

    Args:
        model: a built Keras model with the run's architecture.
        run: a run id, unique id prefix, unique run name, or `"latest"`.
        db: database URL. Defaults to `TRACKER_DB_URL`, then `sqlite:///tracker.db`.
        epoch: restore this epoch's checkpoint. Defaults to the run's best epoch by its
            monitored metric.
        metric: pick the best epoch by this metric instead.
        store: an open store to read from instead of `db`.

    Returns:
        The checkpoint that was loaded (full-model `.keras` and `.weights.h5` files both work).

    Raises:
        CheckpointError: no checkpoint fits, or its file is missing or was modified.
    """
    own = store is None
    store = store or open_store(db)
    try:
        ck = find_checkpoint(store, run, epoch=epoch, metric=metric)
    finally:
        if own:
            store.close()
    try:
        with warnings.catch_warnings():
            # A full .keras file also holds optimizer state, which a freshly compiled model
            # has not built yet; Keras says so, and the weights load all the same.
            warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer")
            model.load_weights(ck.path)
    except (ValueError, OSError) as e:
        raise CheckpointError(f"could not load {ck.path} into {type(model).__name__}: {e}") from e
    return ck
