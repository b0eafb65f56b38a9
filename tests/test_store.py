"""The run store on SQLite and PostgreSQL: what the callback and the CLI rely on."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker import Store, open_store
from tracker.errors import AmbiguousRun, MetricNotFound, RunNotFound, TrackerError
from tracker.records import MetricPoint

from .cli_support import ok_json
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


def _poison_summaries_of(store: Store, key: str) -> None:
    """A trigger that fails the insert of `key`'s summary: a write that fails in the database,
    after the run's row and the metric points were written in the same transaction."""
    with store.engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER poison BEFORE INSERT ON metric_summaries"
                f" WHEN NEW.key = '{key}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
            )
            return
        conn.exec_driver_sql(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF NEW.key = '{key}' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER poison BEFORE INSERT ON metric_summaries"
            " FOR EACH ROW EXECUTE FUNCTION poison()"
        )


def test_an_epochs_write_is_all_or_nothing(store: Store):
    """An epoch's write that the database refuses half-way leaves the run as it was: not its
    count of epochs, nor a point or a summary of that epoch, epoch or batch level."""
    run_id = store.create_run().id
    at = datetime.now(timezone.utc)
    store.log_epoch(run_id, 0, {"loss": 2.0}, batches=[MetricPoint("loss", 0, 0, 2.5, at)])
    _poison_summaries_of(store, "poison")
    batch = [MetricPoint("loss", 1, s, 1.5, at) for s in range(3)]
    with pytest.raises(Exception, match="poisoned"):  # SQLite's RAISE is a constraint's error
        store.log_epoch(run_id, 1, {"loss": 1.0, "poison": 0.0}, batches=batch)
    run = store.get_run(run_id)
    assert (run.epochs_done, run.last_epoch) == (1, 0)
    assert [(p.epoch, p.value) for p in store.metric_history(run_id)] == [(0, 2.0)]
    assert [(p.epoch, p.step) for p in store.metric_history(run_id, batches=True)] == [(0, 0)]
    assert list(store.summaries(run_id)) == ["loss"]
    assert store.summaries(run_id)["loss"].last_epoch == 0
    store.log_epoch(run_id, 1, {"loss": 1.0}, batches=batch)  # the next write goes through
    assert store.get_run(run_id).epochs_done == 2
    assert len(store.metric_history(run_id, batches=True)) == 4


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
    assert store.get_run(ids["a"]).id == ids["a"]
    assert store.get_run(ids["a"][:8]).id == ids["a"]
    assert store.get_run(ids["a"][:8].upper()).id == ids["a"]
    assert store.get_run("run-b").id == ids["b"]
    assert store.get_run("latest").id == ids["c"]
    with pytest.raises(RunNotFound, match="nope"):
        store.get_run("nope")
    with pytest.raises(RunNotFound):
        store.get_run("'; DROP TABLE runs; --")
    assert len(store.list_runs()) == 3


def test_ambiguous_name_lists_candidates(store: Store):
    one = seed_run(store, {"loss": [1.0]}, name="same")
    two = seed_run(store, {"loss": [1.0]}, name="same")
    with pytest.raises(AmbiguousRun) as err:
        store.get_run("same")
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
    from tracker.checkpoint_files import copy_verified, file_digest
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


# -- values at the store boundary: everything goes through values.plain --------------------------


@pytest.fixture
def np():
    """numpy, for the tests that hand over numpy values as sweeps do; where it is not installed
    (`-m "not keras"` runs without it, scripts/test checks) they are skipped, named as such."""
    return pytest.importorskip("numpy", reason="numpy values need numpy")


class Opaque:
    """A user's object with no JSON form: stored as its repr."""

    def __repr__(self) -> str:
        return "Opaque(7)"


def numpy_values(np) -> tuple[dict, dict]:
    """Values as users hand them over (numpy, tuples, NaN, an object) and how they are stored."""
    given = {
        "units": np.int64(3),
        "dropout": np.float32(0.9),
        "flag": np.bool_(True),
        "kernel": np.array([[1, 2], [3, 4]], dtype=np.int32),
        "shape": (28, (np.int32(1), np.float64(0.5), None)),
        "lr": float("nan"),
        "eps": np.float64("inf"),
        "opaque": Opaque(),
        "path": Path("/data/set"),
    }
    stored = {
        "units": 3,
        "dropout": float(str(np.float32(0.9))),  # its shortest text, as the user wrote it
        "flag": True,
        "kernel": [[1, 2], [3, 4]],
        "shape": [28, [1, 0.5, None]],
        "lr": "NaN",
        "eps": "Infinity",
        "opaque": "Opaque(7)",
        "path": str(Path("/data/set")),
    }
    return given, stored


def early_stopping_config(np) -> tuple[dict, dict]:
    given = {
        "EarlyStopping": {
            "patience": np.int64(3),
            "baseline": np.float32(0.9),
            "restore_best_weights": np.bool_(True),
            "min_delta": np.float64("nan"),
        },
        "validation_split": np.float32(0.25),
    }
    stored = {
        "EarlyStopping": {
            "patience": 3,
            "baseline": float(str(np.float32(0.9))),
            "restore_best_weights": True,
            "min_delta": "NaN",
        },
        "validation_split": 0.25,
    }
    return given, stored


def test_numpy_values_are_stored_as_plain_json(db_url, store: Store, np):
    given, stored = numpy_values(np)
    fit_given, fit_stored = early_stopping_config(np)
    run = store.create_run(
        params=given,
        tags={"seed": np.int64(7), "good": np.bool_(False), "obj": Opaque(), "t": ("a", 1)},
        fit_params=fit_given,
        environment={"cwd": Path("/work"), "pid": np.int32(12)},
        model={"layers": [{"output_shape": (None, np.int64(10))}], "params": np.int64(10)},
        epochs_planned=np.int64(5),
    )
    got = store.get_run(run.id)
    assert run == got  # create_run's record is what was stored
    assert got.params == stored
    assert type(got.params["units"]) is int and got.params["flag"] is True
    assert got.tags == {"seed": "7", "good": "False", "obj": "Opaque(7)", "t": "['a', 1]"}
    assert got.fit_params == fit_stored
    assert got.environment == {"cwd": str(Path("/work")), "pid": 12}
    assert got.model == {"layers": [{"output_shape": [None, 10]}], "params": 10}
    assert got.epochs_planned == 5

    shown = ok_json(db_url, "runs", "show", run.id)
    assert shown["params"] == stored and shown["fit_params"] == fit_stored
    assert shown["tags"] == got.tags and shown["model"] == got.model


def test_numpy_params_match_param_filters(db_url, store: Store, np):
    given, _ = numpy_values(np)
    run_id = store.create_run(params=given).id
    store.create_run(params={"units": np.int64(4), "flag": np.bool_(False), "lr": 0.1})
    for k, v in (("units", "3"), ("flag", "true"), ("kernel", "[[1, 2], [3, 4]]"), ("lr", "NaN")):
        assert [r.run.id for r in store.list_runs(params={k: v})] == [run_id], k
    rows = ok_json(db_url, "runs", "list", "--param", "units=3", "--param", "flag=true")
    assert [r["id"] for r in rows] == [run_id]
    assert rows[0]["params"]["units"] == 3


def test_numpy_values_after_the_start_are_plain_too(db_url, store: Store, np):
    given, stored = numpy_values(np)
    fit_given, fit_stored = early_stopping_config(np)
    run_id = store.create_run().id
    store.update_run(
        run_id,
        fit_params=fit_given,
        references=[{"kind": "tensorboard", "path": Path("/logs/tb")}],
        model={"counts": (np.int64(1), np.int64(2))},
        epochs_planned=np.int64(8),
    )
    store.set_tags(run_id, {"best": np.float32(0.5), "n": np.int16(2)})
    details = {"best": np.float32(0.5), "best_epoch": np.int64(4), "value": float("nan")}
    store.finish_run(run_id, status="finished", stop_reason="early_stopping", stop_details=details)
    got = store.get_run(run_id)
    assert got.fit_params == fit_stored and got.model == {"counts": [1, 2]}
    assert got.references == [{"kind": "tensorboard", "path": str(Path("/logs/tb"))}]
    assert got.epochs_planned == 8 and got.tags == {"best": "0.5", "n": "2"}
    assert got.stop_details == {"best": 0.5, "best_epoch": 4, "value": "NaN"}
    stop = ok_json(db_url, "runs", "show", run_id)["stop"]
    assert (stop["best"], stop["best_epoch"], stop["value"]) == (0.5, 4, "NaN")

    assert store.resume_run(run_id, epochs_planned=np.int64(12)).epochs_planned == 12
    store.finish_run(run_id, status="failed", stop_reason="error", stop_details={"x": given})
    assert store.get_run(run_id).stop_details == {"x": stored}


def test_imported_runs_are_stored_plain(store: Store, np):
    from tracker.store.transfer import RunBundle

    given, stored = numpy_values(np)
    fit_given, fit_stored = early_stopping_config(np)
    base = store.get_run(store.create_run(experiment="imp").id)
    store.delete_runs([base.id])
    record = replace(
        base,
        params=given,
        tags={"seed": np.int64(7)},
        fit_params=fit_given,
        model={"shape": (np.int64(2),)},
        references=[{"path": Path("/r")}],
        epochs_planned=np.int64(4),
    )
    store.import_runs([RunBundle(run=record)])
    got = store.get_run(base.id)
    assert got.params == stored and got.tags == {"seed": "7"}
    assert got.fit_params == fit_stored and got.model == {"shape": [2]}
    assert got.references == [{"path": str(Path("/r"))}] and got.epochs_planned == 4

    # Merging into the run the store has: the outcome and its details arrive plain as well.
    ended = replace(
        record,
        status="finished",
        stop_reason="early_stopping",
        stop_details={"best": np.float32(0.5), "stopped_epoch": np.int64(3)},
        ended_at=record.started_at,
        params={"units": np.int64(4)},
        tags={"seed": np.int64(8)},
    )
    store.import_runs([RunBundle(run=ended)])
    got = store.get_run(base.id)
    assert got.stop_details == {"best": 0.5, "stopped_epoch": 3}
    assert got.params["units"] == 4 and got.tags["seed"] == "8"
    assert got.fit_params == fit_stored


keys = st.text(min_size=1, max_size=80).filter(lambda k: "\x00" not in k)
values = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    history=st.dictionaries(keys, st.lists(values, min_size=1, max_size=5), min_size=1, max_size=4)
)
def test_any_metric_name_and_value_round_trips(store, history):
    run = store.create_run(experiment="prop")
    epochs = max(len(v) for v in history.values())
    for e in range(epochs):
        store.log_epoch(run.id, e, {k: v[e] for k, v in history.items() if e < len(v)})
    got: dict[str, list[float]] = {}
    for p in store.metric_history(run.id):
        got.setdefault(p.key, []).append(p.value)
    assert set(got) == set(history)
    for key, expected in history.items():
        assert len(got[key]) == len(expected)
        for a, b in zip(got[key], expected, strict=True):
            assert (math.isnan(a) and math.isnan(b)) or a == b
        summary = store.summaries(run.id)[key]
        finite = [v for v in expected if math.isfinite(v)]
        assert summary.min_value == (min(finite) if finite else None)
        assert summary.max_value == (max(finite) if finite else None)
