"""The run store on SQLite and PostgreSQL: what the callback and the CLI rely on."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from tracker import Store, open_store
from tracker.errors import AmbiguousRun, MetricNotFound, RunNotFound, TrackerError
from tracker.records import MetricPoint

from .helpers import seed_run, seed_three


def test_create_run_records_everything_given(store: Store):
    run = store.create_run(
        experiment="mnist",
        name="first",
        params={"lr": 0.01, "layers": [32, 16]},
        tags={"owner": "ana"},
        fit_params={"epochs": 5, "batch_size": 32},
        environment={"python": "3.11"},
        model={"class": "Sequential"},
        epochs_planned=5,
    )
    got = store.get_run(run.id)
    assert len(got.id) == 32 and got.short_id == got.id[:8]
    assert (got.name, got.experiment, got.status) == ("first", "mnist", "running")
    assert got.params == {"lr": 0.01, "layers": [32, 16]}
    assert got.tags == {"owner": "ana"}
    assert got.fit_params == {"epochs": 5, "batch_size": 32}
    assert got.environment == {"python": "3.11"} and got.model == {"class": "Sequential"}
    assert got.epochs_planned == 5 and got.epochs_done == 0
    assert got.started_at.tzinfo is not None


def test_create_run_returns_what_get_run_reads_back(store: Store):
    # create_run builds its record without reading the run back: it must still be the same.
    run = store.create_run(
        params={"shape": (28, 28), 3: "three", "nested": {"b": 1, "a": None}},
        tags={"seed": 7},
        fit_params={"validation_split": 0.2, "class_weight": {1: 2.0}},
        environment={"packages": ("keras", "tensorflow")},
        started_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
    )
    assert run == store.get_run(run.id)
    assert run.params["shape"] == [28, 28] and run.tags == {"seed": "7"}
    assert run.started_at == datetime(2026, 1, 2, 1, 4, 5, 678901, tzinfo=timezone.utc)


def test_writes_to_an_unknown_run_raise_run_not_found(store: Store):
    with pytest.raises(RunNotFound):
        store.finish_run("0" * 32, status="finished", stop_reason="completed")
    with pytest.raises(RunNotFound):
        store.log_epoch("0" * 32, 0, {"loss": 1.0})


def test_generated_names_are_readable_and_distinct(store: Store):
    names = {store.create_run().name for _ in range(5)}
    assert len(names) == 5
    assert all(n.count("-") == 2 for n in names)


def test_log_epoch_keeps_summary_in_step(store: Store):
    run_id = seed_run(store, {"loss": [3.0, 1.0, 2.0], "accuracy": [0.1, 0.9, 0.5]})
    sums = store.summaries(run_id)
    loss = sums["loss"]
    assert (loss.first_value, loss.first_epoch, loss.last_value, loss.last_epoch) == (3, 0, 2, 2)
    assert (loss.min_value, loss.min_epoch, loss.max_value, loss.max_epoch) == (1, 1, 3, 0)
    assert loss.count == 3
    assert sums["accuracy"].max_epoch == 1
    run = store.get_run(run_id)
    assert run.epochs_done == 3 and run.last_epoch == 2
    assert run.status == "finished" and run.stop_reason == "completed"


def test_non_finite_values_round_trip_and_never_win(store: Store):
    values = [math.nan, math.inf, -math.inf, 0.5]
    run_id = seed_run(store, {"val_loss": values})
    got = [p.value for p in store.metric_history(run_id, ["val_loss"])]
    assert math.isnan(got[0]) and got[1] == math.inf and got[2] == -math.inf and got[3] == 0.5
    s = store.summaries(run_id)["val_loss"]
    assert math.isnan(s.first_value) and s.last_value == 0.5
    assert (s.min_value, s.max_value) == (0.5, 0.5)
    other = seed_run(store, {"val_loss": [0.9]})
    best = store.best_runs("val_loss", mode="min")
    assert best[0].run.id == run_id and best[0].value == 0.5 and best[0].epoch == 3
    assert store.best_runs("val_loss", mode="max")[0].run.id == other


def test_only_non_finite_run_is_never_best(store: Store):
    seed_run(store, {"val_loss": [math.nan, -math.inf]})
    finite = seed_run(store, {"val_loss": [2.0]})
    ranked = store.best_runs("val_loss", top=5)
    assert [r.run.id for r in ranked] == [finite]
    assert store.best_runs("val_loss", agg="last", top=5)[0].run.id == finite


def test_best_runs_best_and_last(store: Store):
    ids = seed_three(store)
    best = store.best_runs("val_loss", top=3)
    assert [(r.run.id, r.epoch, r.value) for r in best] == [
        (ids["b"], 1, 0.3),
        (ids["a"], 1, 0.5),
        (ids["c"], 0, 0.7),
    ]
    assert best[0].mode == "min"
    acc = store.best_runs("accuracy")
    assert acc[0].mode == "max" and acc[0].run.id == ids["b"] and acc[0].value == 0.9
    last = store.best_runs("val_loss", agg="last", top=3)
    assert [r.run.id for r in last] == [ids["b"], ids["a"]]  # c's last value is NaN
    assert store.best_runs("val_loss", experiment="other")[0].run.id == ids["c"]


def test_best_runs_errors(store: Store):
    seed_three(store)
    with pytest.raises(MetricNotFound, match="accuracy, loss, val_loss"):
        store.best_runs("val_acc")
    seed_run(store, {"throughput": [10.0]})  # recorded, but of no known direction
    with pytest.raises(TrackerError, match="--mode"):
        store.best_runs("throughput")
    with pytest.raises(TrackerError, match="Received: mode='up'"):
        store.best_runs("val_loss", mode="up")


def test_list_runs_newest_first_with_filters(store: Store):
    ids = seed_three(store)
    listed = store.list_runs()
    assert [r.run.id for r in listed] == [ids["c"], ids["b"], ids["a"]]
    assert listed[0].metric == "val_loss" and listed[1].value == 0.3 and listed[1].epoch == 1
    assert [r.run.id for r in store.list_runs(experiment="other")] == [ids["c"]]
    assert [r.run.id for r in store.list_runs(tags={"team": "x"})] == [ids["a"]]
    assert [r.run.id for r in store.list_runs(params={"lr": "0.001"})] == [ids["b"]]
    assert {r.run.id for r in store.list_runs(params={"units": "32"})} == {ids["a"], ids["b"]}
    assert [r.run.id for r in store.list_runs(limit=1)] == [ids["c"]]
    since = datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
    assert len(store.list_runs(since=since)) == 2
    assert [r.run.id for r in store.list_runs(sort="val_loss")] == [ids["b"], ids["a"], ids["c"]]
    assert [r.run.id for r in store.list_runs(sort="accuracy", agg="last")][0] == ids["b"]


def test_status_running_and_crashed(store: Store):
    run = store.create_run(heartbeat_interval=30)
    assert store.get_run(run.id).status == "running"
    dead = store.create_run(
        heartbeat_interval=0.001, started_at=datetime.now(timezone.utc) - timedelta(seconds=5)
    )
    rec = store.get_run(dead.id)
    assert rec.status == "crashed" and rec.stop_reason == "crashed"
    assert [r.run.id for r in store.list_runs(status="crashed")] == [dead.id]
    assert [r.run.id for r in store.list_runs(status="running")] == [run.id]


def test_resolve_run_by_id_prefix_name_latest(store: Store):
    ids = seed_three(store)
    assert store.resolve_run(ids["a"]) == ids["a"]
    assert store.resolve_run(ids["a"][:8]) == ids["a"]
    assert store.resolve_run(ids["a"][:8].upper()) == ids["a"]
    assert store.resolve_run("run-b") == ids["b"]
    assert store.resolve_run("latest") == ids["c"]
    with pytest.raises(RunNotFound, match="nope"):
        store.resolve_run("nope")
    with pytest.raises(RunNotFound):
        store.resolve_run("'; DROP TABLE runs; --")
    assert len(store.list_runs()) == 3


def test_ambiguous_name_lists_candidates(store: Store):
    one = seed_run(store, {"loss": [1.0]}, name="same")
    two = seed_run(store, {"loss": [1.0]}, name="same")
    with pytest.raises(AmbiguousRun) as err:
        store.resolve_run("same")
    assert one[:8] in str(err.value) and two[:8] in str(err.value)


def test_batch_metrics_are_kept_apart_from_epochs(store: Store):
    run_id = seed_run(store, {"loss": [1.0]}, finish=None)
    now = datetime.now(timezone.utc)
    n = store.log_batch_metrics(
        run_id, [MetricPoint("loss", 0, step, 1.0 / (step + 1), now) for step in range(50)]
    )
    assert n == 50
    assert len(store.metric_history(run_id, batches=True)) == 50
    assert [p.value for p in store.metric_history(run_id)] == [1.0]
    assert store.summaries(run_id)["loss"].count == 1


def test_checkpoints_and_delete(store: Store):
    run_id = seed_run(store, {"val_loss": [0.5, 0.4]})
    ck = store.add_checkpoint(
        run_id,
        path="/tmp/x.weights.h5",
        kind="weights",
        source="ModelCheckpoint",
        size=10,
        sha256="ab" * 32,
        epoch=1,
        monitor="val_loss",
        value=0.4,
        is_best=True,
    )
    assert store.checkpoints(run_id) == [ck]
    keep = seed_run(store, {"val_loss": [0.7]})
    assert store.delete_runs([run_id]) == 1
    with pytest.raises(RunNotFound):
        store.get_run(run_id)
    assert store.checkpoints(run_id) == [] and store.metric_history(run_id) == []
    assert store.get_run(keep).epochs_done == 1


def test_set_tags_and_update_run(store: Store):
    run_id = seed_run(store, {"loss": [1.0]})
    assert store.set_tags(run_id[:6], {"stage": "prod"}).tags == {"stage": "prod"}
    assert store.set_tags(run_id, {"stage": "dev", "owner": 1}).tags == {
        "stage": "dev",
        "owner": "1",
    }
    store.update_run(run_id, references=[{"kind": "tensorboard", "path": "/logs"}])
    assert store.get_run(run_id).references == [{"kind": "tensorboard", "path": "/logs"}]
    with pytest.raises(ValueError):
        store.update_run(run_id, status="finished")


def test_unicode_and_sql_looking_keys_are_stored_verbatim(store: Store):
    keys = ["示例_loss ✓", "val'loss\"; DROP TABLE metrics; --", "x" * 500]
    run_id = seed_run(store, {k: [0.25] for k in keys})
    assert set(store.metric_keys(run_id)) == set(keys)
    assert {p.key for p in store.metric_history(run_id)} == set(keys)


def test_store_reopens_existing_database(db_url):
    with open_store(db_url) as s:
        run_id = seed_run(s, {"loss": [1.0]})
    with open_store(db_url) as s:
        assert s.get_run(run_id).epochs_done == 1


def test_delete_runs_reports_progress_per_chunk(store: Store):
    ids = [store.create_run(name=f"r{i}").id for i in range(150)]
    seen: list[int] = []
    assert store.delete_runs(ids, progress=seen.append) == 150
    assert seen == [100, 50] and store.list_runs() == []


def test_copy_verified_hashes_while_copying(store: Store, tmp_path):
    from tracker.checkpoints import copy_verified, file_digest
    from tracker.errors import CheckpointError

    run_id = seed_run(store, {"loss": [1.0]})
    src = tmp_path / "m.weights.h5"
    src.write_bytes(b"x" * 3_000_000)
    size, sha = file_digest(src)
    ck = store.add_checkpoint(
        run_id,
        path=str(src),
        kind="weights",
        source="ModelCheckpoint",
        size=size,
        sha256=sha,
        epoch=0,
    )
    seen: list[int] = []
    out = copy_verified(ck, tmp_path / "out.weights.h5", progress=seen.append)
    assert out.read_bytes() == src.read_bytes() and sum(seen) == size and len(seen) == 3
    src.write_bytes(b"y" * 3_000_000)  # same size, other bytes
    with pytest.raises(CheckpointError, match="changed"):
        copy_verified(ck, tmp_path / "again.weights.h5")
    assert not (tmp_path / "again.weights.h5").exists()
    assert not list(tmp_path.glob(".*partial"))
