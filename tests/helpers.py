"""Seeding helpers shared by the store and CLI tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from tracker import Store


def seed_run(
    store: Store,
    history: dict[str, Sequence[float]],
    *,
    name: str | None = None,
    experiment: str = "default",
    params: dict | None = None,
    tags: dict | None = None,
    finish: str | None = "completed",
    started_at: datetime | None = None,
) -> str:
    """A run whose epochs carry `history` (key -> one value per epoch). Returns its id."""
    epochs = max((len(v) for v in history.values()), default=0)
    run = store.create_run(
        experiment=experiment,
        name=name,
        params=params,
        tags=tags,
        epochs_planned=epochs,
        started_at=started_at,
    )
    for epoch in range(epochs):
        store.log_epoch(run.id, epoch, {k: v[epoch] for k, v in history.items() if epoch < len(v)})
    if finish:
        status = "finished" if finish == "completed" else finish
        store.finish_run(run.id, status=status, stop_reason=finish)
    return run.id


def seed_three(store: Store) -> dict[str, str]:
    """Three finished runs with known best epochs, started a minute apart (a oldest)."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return {
        "a": seed_run(
            store,
            {"loss": [1.0, 0.8, 0.7], "val_loss": [0.9, 0.5, 0.6], "accuracy": [0.5, 0.7, 0.8]},
            name="run-a",
            params={"lr": 0.01, "units": 32},
            tags={"team": "x"},
            started_at=t0,
        ),
        "b": seed_run(
            store,
            {"loss": [1.0, 0.6], "val_loss": [0.8, 0.3], "accuracy": [0.6, 0.9]},
            name="run-b",
            params={"lr": 0.001, "units": 32},
            tags={"team": "y"},
            started_at=t0 + timedelta(minutes=1),
        ),
        "c": seed_run(
            store,
            {"loss": [0.9, 0.95], "val_loss": [0.7, float("nan")], "accuracy": [0.65, 0.6]},
            name="run-c",
            experiment="other",
            params={"lr": 0.1, "units": 64},
            started_at=t0 + timedelta(minutes=2),
        ),
    }
