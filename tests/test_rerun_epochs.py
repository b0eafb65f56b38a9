"""Re-running epochs of a resumed run: `Store.discard_epochs` then the new epochs, on both backends.

Re-running from epoch k replaces what the run held for epoch k and every later epoch: every
read (`best`, `runs show`, `metrics`, the summaries, `epochs_done`) must then agree on the new
timeline. Expected values are computed from the lists written, never typed by hand.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from tracker import Store
from tracker.errors import MetricNotFound, RunNotFound
from tracker.records import MetricPoint

from .cli_support import ok_json
from .helpers import seed_run

OLD = {
    # Epoch 4 holds the best of both: a discard that left it behind would show.
    "val_loss": [0.9, 0.7, 0.5, 0.4, 0.1],
    "accuracy": [0.5, 0.6, 0.7, 0.8, 0.99],
}
NEW = {"val_loss": [0.65, 0.6], "accuracy": [0.62, 0.61]}  # epochs 2 and 3, run again


def rerun(store: Store, old: dict, new: dict, from_epoch: int) -> tuple[str, dict, int]:
    """A run with `old`, re-run from `from_epoch` with `new`. Returns the id, the timeline the
    run must now hold (key -> value per epoch) and what `discard_epochs` returned."""
    run_id = seed_run(store, old)
    store.resume_run(run_id)
    discarded = store.discard_epochs(run_id, from_epoch)
    for i in range(max(len(v) for v in new.values())):
        store.log_epoch(run_id, from_epoch + i, {k: v[i] for k, v in new.items() if i < len(v)})
    store.finish_run(run_id, status="finished", stop_reason="completed")
    timeline = {k: list(old[k][:from_epoch]) + list(new.get(k, [])) for k in old}
    return run_id, {k: v for k, v in timeline.items() if v}, discarded


def best_of(values: list[float], pick=min) -> tuple[float | None, int | None]:
    finite = [(v, e) for e, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return None, None
    value = pick(v for v, _ in finite)
    return value, next(e for v, e in finite if v == value)  # the earliest epoch of a tie


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_summaries_follow(store: Store, run_id: str, timeline: dict) -> None:
    sums = store.summaries(run_id)
    assert set(sums) == set(timeline)
    for key, values in timeline.items():
        s = sums[key]
        assert s.count == len(values)
        assert (s.first_epoch, s.last_epoch) == (0, len(values) - 1)
        assert same(s.first_value, values[0]) and same(s.last_value, values[-1])
        assert (s.min_value, s.min_epoch) == best_of(values, min)
        assert (s.max_value, s.max_epoch) == best_of(values, max)


def test_rerun_replaces_the_epochs_from_k_everywhere(db_url, store: Store):
    run_id, timeline, discarded = rerun(store, OLD, NEW, 2)
    assert discarded == len(OLD["val_loss"]) - 2
    epochs = len(timeline["val_loss"])

    run = store.get_run(run_id)
    assert (run.epochs_done, run.last_epoch) == (epochs, epochs - 1)

    for key, pick, mode in (("val_loss", min, "min"), ("accuracy", max, "max")):
        value, epoch = best_of(timeline[key], pick)
        (best,) = store.best_runs(key, mode=mode)
        assert (best.run.id, best.value, best.epoch) == (run_id, value, epoch)
        (last,) = store.best_runs(key, mode=mode, agg="last")
        assert (last.value, last.epoch) == (timeline[key][-1], epochs - 1)

    [detail] = store.run_details([run_id])
    assert detail.run.epochs_done == epochs
    for key, values in timeline.items():
        points = [p for p in detail.history if p.key == key]
        assert [(p.epoch, p.value) for p in points] == list(enumerate(values))
        history = store.metric_history(run_id, [key])
        assert [(p.epoch, p.value) for p in history] == list(enumerate(values))
    assert_summaries_follow(store, run_id, timeline)

    # What the CLI shows is the same timeline.
    shown = ok_json(db_url, "runs", "show", run_id)
    assert shown["epochs_done"] == epochs
    assert [e["epoch"] for e in shown["epochs"]] == list(range(epochs))
    assert [e["metrics"]["val_loss"] for e in shown["epochs"]] == timeline["val_loss"]
    metrics = ok_json(db_url, "metrics", run_id)
    assert [m["metrics"]["accuracy"] for m in metrics] == timeline["accuracy"]
    best = ok_json(db_url, "best", "--metric", "val_loss")
    assert (best["value"], best["epoch"]) == best_of(timeline["val_loss"])


def test_summaries_equal_those_of_a_run_that_logged_the_timeline_once(store: Store):
    run_id, timeline, _ = rerun(store, OLD, NEW, 2)
    fresh = seed_run(store, timeline)
    assert store.summaries(run_id) == store.summaries(fresh)


def test_non_finite_values_are_refolded_as_when_logged(store: Store):
    nan, inf = float("nan"), float("inf")
    old = {
        "loss": [0.5, nan, inf, 0.2, -inf],
        "val_loss": [nan, inf, 0.3, 0.1, 0.05],  # only non-finite left before epoch 2
        "accuracy": [0.4, 0.9, -inf, 0.95, 0.97],
    }
    new = {"loss": [nan, 0.4], "val_loss": [0.7, inf], "accuracy": [0.1, inf]}
    run_id, timeline, discarded = rerun(store, old, new, 3)
    assert discarded == 2
    assert_summaries_follow(store, run_id, timeline)
    (best,) = store.best_runs("val_loss")
    assert (best.value, best.epoch) == best_of(timeline["val_loss"])
    (best,) = store.best_runs("accuracy")
    assert (best.value, best.epoch) == best_of(timeline["accuracy"], max)
    history = store.metric_history(run_id, ["loss"])
    assert all(same(p.value, v) for p, v in zip(history, timeline["loss"], strict=True))

    # Before the new epochs the summary of val_loss holds only NaN and inf: never best.
    other = seed_run(store, {"val_loss": [nan, inf, 0.3]})
    store.discard_epochs(other, 2)
    assert store.summaries(other)["val_loss"].min_value is None
    assert [r.run.id for r in store.best_runs("val_loss", top=5)] == [run_id]


def test_discarding_everything_leaves_an_empty_run(db_url, store: Store):
    run_id = seed_run(store, OLD)
    assert store.discard_epochs(run_id, 0) == len(OLD["val_loss"])
    run = store.get_run(run_id)
    assert (run.epochs_done, run.last_epoch) == (0, None)
    assert store.summaries(run_id) == {}
    assert store.metric_history(run_id) == [] and store.metric_keys(run_id) == []
    assert ok_json(db_url, "runs", "show", run_id)["epochs"] == []
    assert store.discard_epochs(run_id, 0) == 0  # nothing left to discard

    new = {"val_loss": [0.8, 0.75]}
    for epoch, value in enumerate(new["val_loss"]):
        store.log_epoch(run_id, epoch, {"val_loss": value})
    assert_summaries_follow(store, run_id, new)
    assert store.get_run(run_id).epochs_done == len(new["val_loss"])


def test_a_key_left_without_points_loses_its_summary(store: Store):
    run_id = seed_run(store, {"loss": [1.0, 0.9, 0.8, 0.7]})
    store.log_epoch(run_id, 4, {"loss": 0.6, "val_auc": 0.7})  # val_auc only from epoch 4
    store.discard_epochs(run_id, 4)
    assert set(store.summaries(run_id)) == {"loss"}
    with pytest.raises(MetricNotFound, match="val_auc"):
        store.best_runs("val_auc", mode="max")


def test_batch_points_of_the_discarded_epochs_go_too(store: Store):
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    run_id = store.create_run().id
    for epoch in range(4):
        batches = [MetricPoint("loss", epoch, step, 10.0 * epoch + step, t) for step in range(3)]
        store.log_epoch(run_id, epoch, {"loss": 10.0 * epoch}, batches=batches)
    assert store.discard_epochs(run_id, 2) == 2
    kept = store.metric_history(run_id, batches=True)
    assert {p.epoch for p in kept} == {0, 1} and len(kept) == 6

    new = [MetricPoint("loss", 2, step, -1.0 - step, t) for step in range(2)]
    store.log_epoch(run_id, 2, {"loss": -5.0}, batches=new)
    batches = store.metric_history(run_id, batches=True)
    assert [(p.epoch, p.step, p.value) for p in batches if p.epoch == 2] == [
        (p.epoch, p.step, p.value) for p in new
    ]
    # Batch points never enter the summaries.
    assert_summaries_follow(store, run_id, {"loss": [0.0, 10.0, -5.0]})


def test_checkpoints_are_kept(store: Store):
    run_id = seed_run(store, OLD)
    store.add_checkpoint(
        run_id,
        path="/x/e3.keras",
        kind="model",
        source="ModelCheckpoint",
        size=1,
        sha256="0" * 64,
        epoch=3,
    )
    store.discard_epochs(run_id, 2)
    assert [c.epoch for c in store.checkpoints(run_id)] == [3]


def test_discarding_past_the_last_epoch_changes_nothing(store: Store):
    run_id = seed_run(store, OLD)
    before = (store.summaries(run_id), store.metric_history(run_id), store.get_run(run_id))
    assert store.discard_epochs(run_id, len(OLD["val_loss"])) == 0
    assert (store.summaries(run_id), store.metric_history(run_id), store.get_run(run_id)) == before


def test_other_runs_are_untouched(store: Store):
    keep = seed_run(store, OLD)
    before = (store.summaries(keep), store.metric_history(keep, batches=False))
    rerun(store, OLD, NEW, 1)
    assert (store.summaries(keep), store.metric_history(keep)) == before


def test_unknown_run_raises_run_not_found(store: Store):
    with pytest.raises(RunNotFound):
        store.discard_epochs("0" * 32, 0)
