"""`tracker runs list|show|delete|tag` on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import os
import pty
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from tracker import Store

from .cli_support import checkpoint_file, fails, ok_json, run
from .helpers import seed_run, seed_three

RUN_KEYS = {"id", "name", "experiment", "status", "stop_reason", "epochs", "started_at"}
RUN_KEYS |= {"ended_at", "metric", "value", "epoch"}


def names(rows):
    return [r["name"] for r in rows]


# -- runs list ----------------------------------------------------------------------------------


def test_list_json_newest_first_with_best_val_loss(db_url, store: Store):
    ids = seed_three(store)
    rows = ok_json(db_url, "runs", "list")
    assert names(rows) == ["run-c", "run-b", "run-a"]
    assert set(rows[0]) >= RUN_KEYS
    b = rows[1]
    assert (b["id"], b["metric"], b["value"], b["epoch"], b["epochs"]) == (
        ids["b"],
        "val_loss",
        0.3,
        1,
        2,
    )
    assert (b["status"], b["stop_reason"], b["agg"], b["mode"]) == (
        "finished",
        "completed",
        "best",
        "min",
    )
    assert b["started_at"] == "2026-01-01T00:01:00+00:00" and b["ended_at"]


def test_list_table_and_csv(db_url, store: Store):
    ids = seed_three(store)
    table = run(db_url, "runs", "list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:6] == ["id", "name", "experiment", "status", "stop", "epochs"]
    assert "best val_loss" in lines[0]
    assert lines[2].split()[:7] == [ids["b"][:8], "run-b", "default", "finished", "completed"] + [
        "2/2",
        "0.3",
    ]
    # Aligned: every row's name column starts where the header's does.
    col = lines[0].index("name")
    assert all(line[col : col + 4] == "run-" for line in lines[1:])
    rows = list(csv.DictReader(io.StringIO(run(db_url, "runs", "list", "--format", "csv").stdout)))
    assert [r["id"] for r in rows] == [ids["c"], ids["b"], ids["a"]]
    assert (rows[1]["value"], rows[1]["epoch"], rows[1]["metric"]) == ("0.3", "1", "val_loss")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--experiment", "other"], ["run-c"]),
        (["--tag", "team=x"], ["run-a"]),
        (["--tag", "team=x", "--tag", "team=y"], ["run-b"]),  # the last value of a key wins
        (["--param", "lr=0.001"], ["run-b"]),
        (["--param", "units=32", "--param", "lr=0.01"], ["run-a"]),
        (["--status", "finished"], ["run-c", "run-b", "run-a"]),
        (["--status", "failed"], []),
        (["--since", "2026-01-01T00:00:30Z"], ["run-c", "run-b"]),
        (["--since", "2026-01-01T00:01:00+00:00"], ["run-c", "run-b"]),
        (["--limit", "1"], ["run-c"]),
        (["--limit", "0"], ["run-c", "run-b", "run-a"]),
        (["--sort", "val_loss"], ["run-b", "run-a", "run-c"]),
        (["--sort", "accuracy", "--agg", "last"], ["run-b", "run-a", "run-c"]),
        (["--sort", "loss", "--mode", "max"], ["run-b", "run-a", "run-c"]),  # ties: newest first
    ],
)
def test_list_filters_and_sorting(db_url, store: Store, args, expected):
    seed_three(store)
    assert names(ok_json(db_url, "runs", "list", *args)) == expected


def test_list_since_relative_age(db_url, store: Store):
    seed_three(store)
    seed_run(store, {"loss": [1.0]}, name="just-now")
    assert names(ok_json(db_url, "runs", "list", "--since", "2h")) == ["just-now"]
    assert names(ok_json(db_url, "runs", "list", "--since", "1w")) == ["just-now"]


def test_list_since_date_is_local_midnight(db_url, store: Store):
    seed_three(store)
    local_day = datetime(2026, 1, 1, tzinfo=timezone.utc).astimezone().date()
    rows = ok_json(db_url, "runs", "list", "--since", local_day.isoformat())
    assert names(rows) == ["run-c", "run-b", "run-a"]


def test_list_shows_another_metric_and_last_values(db_url, store: Store):
    seed_three(store)
    rows = ok_json(db_url, "runs", "list", "--metric", "accuracy", "--agg", "last")
    assert [(r["metric"], r["value"], r["epoch"]) for r in rows] == [
        ("accuracy", 0.6, 1),
        ("accuracy", 0.9, 1),
        ("accuracy", 0.8, 2),
    ]


def test_list_empty_database(db_url):
    assert ok_json(db_url, "runs", "list") == []
    result = run(db_url, "runs", "list")
    assert result.exit_code == 0 and "(none)" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sort", "val_acc"], "no metric 'val_acc' in this database; metrics recorded: accuracy"),
        (["--metric", "nope"], "metrics recorded: accuracy, loss, throughput, val_loss"),
        (["--sort", "throughput"], "pass --mode min or --mode max"),
        (["--status", "sleeping"], "status must be one of running, finished"),
    ],
)
def test_list_errors(db_url, store: Store, args, message):
    seed_three(store)
    seed_run(store, {"throughput": [100.0]})
    assert message in fails(db_url, "runs", "list", *args)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tag", "team"], "expected KEY=VALUE. Received: 'team'"),
        (["--param", "=3"], "expected KEY=VALUE. Received: '=3'"),
        (["--since", "yesterday"], "expected an ISO date or datetime"),
        (["--limit", "-1"], "-1 is not in the range x>=0"),
        (["--mode", "up"], "'up' is not one of 'auto', 'min', 'max'"),
        (["--format", "xml"], "'xml' is not one of 'table', 'json', 'csv'"),
    ],
)
def test_list_bad_option_values_are_usage_errors(db_url, args, message):
    assert message in fails(db_url, "runs", "list", *args, code=2)


def test_list_mode_for_an_ambiguous_metric(db_url, store: Store):
    seed_run(store, {"throughput": [100.0, 300.0]}, name="fast")
    seed_run(store, {"throughput": [200.0]}, name="slow")
    rows = ok_json(db_url, "runs", "list", "--sort", "throughput", "--mode", "max")
    assert [(r["name"], r["value"]) for r in rows] == [("fast", 300.0), ("slow", 200.0)]


def test_list_shows_the_last_value_of_a_metric_whose_direction_is_unknown(db_url, store: Store):
    seed_run(store, {"throughput": [100.0, 300.0, 200.0]}, name="fast")
    rows = ok_json(db_url, "runs", "list", "--metric", "throughput")
    assert [(r["value"], r["epoch"], r["agg"], r["mode"]) for r in rows] == [
        (200.0, 2, "last", None)
    ]
    assert "last throughput" in run(db_url, "runs", "list", "--metric", "throughput").output


# -- runs show ----------------------------------------------------------------------------------


@pytest.fixture
def detailed(store: Store, tmp_path):
    """run-a of seed_three with lr, early stopping, model, references and three checkpoints."""
    ids = seed_three(store)
    a = ids["a"]
    store.log_epoch(a, 3, {"loss": 0.65, "val_loss": 0.7, "lr": 0.001})
    store.update_run(
        a,
        fit_params={"epochs": 10, "batch_size": 32},
        environment={"python": "3.11.7", "keras": "3.6.0"},
        model={
            "class": "Sequential",
            "summary": 'Model: "sequential"\n dense (Dense)  (None, 1)  33',
            "trainable_params": 33,
            "non_trainable_params": 0,
            "optimizer": {"class": "Adam", "learning_rate": 0.001},
            "architecture": {"layers": [{"class": "Dense", "units": 1}]},
        },
        references=[{"kind": "tensorboard", "path": str(tmp_path / "logs")}],
    )
    early = {
        "monitor": "val_loss",
        "patience": 2,
        "min_delta": 0.0,
        "mode": "min",
        "baseline": None,
        "start_from_epoch": 0,
        "restore_best_weights": True,
        "best": 0.5,
        "best_epoch": 1,
        "stopped_epoch": 3,
        "restored_epoch": 1,
    }
    store.finish_run(
        a,
        status="finished",
        stop_reason="early_stopping",
        stop_details={"epoch": 3, "early_stopping": early},
    )
    ok = checkpoint_file(store, a, tmp_path / "e1.weights.h5", b"w1", epoch=1, is_best=True)
    missing = checkpoint_file(store, a, tmp_path / "e2.weights.h5", b"w2", epoch=2)
    (tmp_path / "e2.weights.h5").unlink()
    modified = checkpoint_file(store, a, tmp_path / "e3.keras", b"m3", epoch=3, monitor="val_loss")
    (tmp_path / "e3.keras").write_bytes(b"m3 changed")
    return {**ids, "checkpoints": [ok, missing, modified], "logs": str(tmp_path / "logs")}


def test_show_json(db_url, detailed):
    shown = ok_json(db_url, "runs", "show", "run-a")
    assert RUN_KEYS - {"metric", "value", "epoch"} <= set(shown)
    assert shown["id"] == detailed["a"] and shown["stop_reason"] == "early_stopping"
    assert shown["params"] == {"lr": 0.01, "units": 32} and shown["tags"] == {"team": "x"}
    assert shown["fit_params"] == {"epochs": 10, "batch_size": 32}
    assert shown["environment"]["keras"] == "3.6.0"
    assert shown["model"]["trainable_params"] == 33 and shown["model"]["class"] == "Sequential"
    assert shown["epochs_done"] == 4
    assert shown["epochs"][0] == {
        "epoch": 0,
        "metrics": {"loss": 1.0, "val_loss": 0.9, "accuracy": 0.5},
        "lr": None,
    }
    assert shown["epochs"][3] == {
        "epoch": 3,
        "metrics": {"loss": 0.65, "val_loss": 0.7},
        "lr": 0.001,
    }
    stop = shown["stop"]
    assert (stop["reason"], stop["epoch"], stop["monitor"], stop["patience"]) == (
        "early_stopping",
        3,
        "val_loss",
        2,
    )
    assert (stop["best"], stop["best_epoch"], stop["restored_epoch"]) == (0.5, 1, 1)
    assert shown["references"] == [{"kind": "tensorboard", "path": detailed["logs"]}]
    assert [c["state"] for c in shown["checkpoints"]] == ["ok", "missing", "modified"]
    first = shown["checkpoints"][0]
    ck = detailed["checkpoints"][0]
    assert {k: first[k] for k in ("epoch", "path", "sha256", "size", "is_best")} == {
        "epoch": 1,
        "path": ck.path,
        "sha256": ck.sha256,
        "size": 2,
        "is_best": True,
    }
    assert {"monitor", "value"} <= set(first)
    assert shown["summaries"]["val_loss"]["min"] == 0.5


def test_show_table_has_every_section(db_url, detailed):
    result = run(db_url, "runs", "show", detailed["a"][:6])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for title in ("Run run-a", "Params", "Tags", "Fit params", "Environment", "Model", "Stop"):
        assert f"\n{title}" in f"\n{out}"
    assert "dense (Dense)" in out  # the model summary as Keras printed it
    assert "Epochs\n  epoch  accuracy  loss  val_loss     lr\n" in out
    assert "restored_epoch        1" in out
    # nested configs get a line per leaf
    assert "\n  optimizer.class          Adam\n  optimizer.learning_rate  0.001\n" in out
    checkpoints = out.split("Checkpoints\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[1] for line in checkpoints[1:]] == ["ok", "missing", "modified"]
    assert "tensorboard" in out.split("References", 1)[1]


def test_show_lists_the_model_layers(db_url, store: Store):
    run_id = seed_run(store, {"loss": [1.0]}, name="layered")
    layers = [
        {"name": "dense", "class": "Dense", "output_shape": [None, 64], "params": 2112},
        {"name": "flat", "class": "Flatten", "output_shape": [64], "params": 0, "trainable": False},
    ]
    store.update_run(run_id, model={"class": "Sequential", "layers": layers})
    out = run(db_url, "runs", "show", "layered").stdout
    table = out.split("Layers\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert table[1].split() == ["dense", "(Dense)", "(None,", "64)", "2,112", "yes"]
    assert table[2].split() == ["flat", "(Flatten)", "(64,)", "0", "no"]
    assert ok_json(db_url, "runs", "show", "layered")["model"]["layers"] == layers


def test_show_csv_is_the_epoch_table(db_url, detailed):
    rows = list(
        csv.reader(io.StringIO(run(db_url, "runs", "show", "run-a", "--format", "csv").stdout))
    )
    assert rows[0] == ["epoch", "accuracy", "loss", "val_loss", "lr"]  # lr last
    assert rows[4] == ["3", "", "0.65", "0.7", "0.001"]


def test_show_resolves_latest_prefix_and_name(db_url, store: Store):
    ids = seed_three(store)
    assert ok_json(db_url, "runs", "show", "latest")["id"] == ids["c"]
    assert ok_json(db_url, "runs", "show", ids["b"][:5].upper())["id"] == ids["b"]
    assert ok_json(db_url, "runs", "show", "run-a")["id"] == ids["a"]


def test_show_unknown_ambiguous_and_malformed_runs(db_url, store: Store):
    seed_three(store)
    one = seed_run(store, {"loss": [1.0]}, name="twin")
    two = seed_run(store, {"loss": [1.0]}, name="twin")
    assert "no run matches 'nope'" in fails(db_url, "runs", "show", "nope")
    err = fails(db_url, "runs", "show", "twin")
    assert "matches several runs" in err and one[:8] in err and two[:8] in err
    assert "id prefixes need 4+ hex digits" in fails(db_url, "runs", "show", "ab")
    assert "empty run reference" in fails(db_url, "runs", "show", " ")


def test_show_latest_on_empty_database(db_url):
    assert "no runs recorded yet" in fails(db_url, "runs", "show", "latest")


# -- runs delete / tag --------------------------------------------------------------------------


def test_delete_with_yes(db_url, store: Store):
    ids = seed_three(store)
    result = run(db_url, "runs", "delete", "run-a", ids["b"][:8], "run-a", "--yes")
    assert result.exit_code == 0 and result.stdout == "Deleted 2 runs.\n"
    assert names(ok_json(db_url, "runs", "list")) == ["run-c"]


def test_delete_without_a_terminal_refuses(db_url, store: Store):
    seed_three(store)
    for given in (None, "y\n"):
        err = fails(db_url, "runs", "delete", "run-a", input=given)
        assert "stdin is not a terminal; pass --yes" in err
    assert len(ok_json(db_url, "runs", "list")) == 3


def test_delete_with_an_unknown_run_deletes_nothing(db_url, store: Store):
    seed_three(store)
    assert "no run matches 'ghost'" in fails(db_url, "runs", "delete", "run-a", "ghost", "--yes")
    assert len(ok_json(db_url, "runs", "list")) == 3


def _delete_on_a_terminal(db_url: str, answer: bytes) -> tuple[int, str]:
    """`runs delete run-a` with its stdin on a pseudo-terminal, answering the prompt."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli.main", "--db", db_url, "runs", "delete", "run-a"],
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(secondary)
    os.write(primary, answer)
    out, err = proc.communicate(timeout=60)
    os.close(primary)
    return proc.returncode, (out + err).decode()


@pytest.mark.parametrize("answer, deleted", [(b"y\n", True), (b"n\n", False)])
def test_delete_asks_on_a_terminal(db_url, store: Store, answer, deleted):
    seed_three(store)
    code, output = _delete_on_a_terminal(db_url, answer)
    assert "Delete 1 run: run-a" in output
    assert (code == 0) is deleted, output
    left = names(ok_json(db_url, "runs", "list"))
    assert ("run-a" not in left) is deleted and len(left) == (2 if deleted else 3)
    if not deleted:
        assert "cancelled; nothing was changed" in output


def test_tag(db_url, store: Store):
    ids = seed_three(store)
    result = run(db_url, "runs", "tag", "run-c", "stage=prod", "note=a=b", "team=z")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Tagged run-c ({ids['c'][:8]}): stage=prod, note=a=b, team=z\n"
    assert ok_json(db_url, "runs", "show", "run-c")["tags"] == {
        "stage": "prod",
        "note": "a=b",
        "team": "z",
    }
    assert names(ok_json(db_url, "runs", "list", "--tag", "stage=prod")) == ["run-c"]


def test_tag_errors(db_url, store: Store):
    seed_three(store)
    assert "expected KEY=VALUE. Received: 'stage'" in fails(
        db_url, "runs", "tag", "run-a", "stage", code=2
    )
    assert "Missing argument" in fails(db_url, "runs", "tag", "run-a", code=2)
    assert "no run matches 'ghost'" in fails(db_url, "runs", "tag", "ghost", "a=b")


def test_show_says_overwritten_when_a_later_save_replaced_the_file(db_url, store, tmp_path):
    run_id = seed_run(store, {"val_loss": [0.5, 0.4]})
    path = tmp_path / "best.weights.h5"
    checkpoint_file(store, run_id, path, b"epoch 0", epoch=0, is_best=True)
    checkpoint_file(store, run_id, path, b"epoch 1!", epoch=1, is_best=True)
    shown = ok_json(db_url, "runs", "show", run_id)
    assert [c["state"] for c in shown["checkpoints"]] == ["modified", "ok"]
    table = run(db_url, "runs", "show", run_id).stdout
    assert "overwritten (epoch 1)" in table


# -- the Keras backend a run trained on -----------------------------------------------------------


@pytest.fixture
def on_backends(store: Store):
    """Three runs as the callback records them on TensorFlow, JAX and PyTorch."""
    ids = {}
    for backend, versions in (
        ("tensorflow", {"tensorflow": "2.21.0", "jax": None, "torch": None}),
        ("jax", {"tensorflow": None, "jax": "0.10.2", "torch": None}),
        ("torch", {"tensorflow": None, "jax": None, "torch": "2.13.0+cpu"}),
    ):
        ids[backend] = seed_run(store, {"val_loss": [0.5, 0.4]}, name=f"on-{backend}")
        environment = {"python": "3.11.7", "keras": "3.15.1", "backend": backend, **versions}
        store.update_run(ids[backend], environment=environment)
    seed_run(store, {"val_loss": [0.3]}, name="older")  # recorded before backends were
    return ids


def test_list_filters_by_backend_and_version(db_url, on_backends):
    rows = ok_json(db_url, "runs", "list", "--env", "backend=jax")
    assert names(rows) == ["on-jax"]
    rows = ok_json(db_url, "runs", "list", "--env", "backend=torch", "--env", "keras=3.15.1")
    assert names(rows) == ["on-torch"]
    assert ok_json(db_url, "runs", "list", "--env", "torch=2.13.0+cpu")[0]["name"] == "on-torch"
    assert ok_json(db_url, "runs", "list", "--env", "backend=mxnet") == []
    assert len(ok_json(db_url, "runs", "list")) == 4
    assert "KEY=VALUE" in run(db_url, "runs", "list", "--env", "backend").stderr


def test_show_and_compare_tell_runs_by_backend(db_url, on_backends):
    shown = ok_json(db_url, "runs", "show", "on-jax")
    assert shown["environment"]["backend"] == "jax" and shown["environment"]["torch"] is None
    data = ok_json(db_url, "compare", "on-tensorflow", "on-jax", "on-torch", "older")
    env = {e["key"]: e for e in data["environment"]}
    ids = [on_backends[b] for b in ("tensorflow", "jax", "torch")]
    assert [env["backend"]["values"][i] for i in ids] == ["tensorflow", "jax", "torch"]
    assert env["backend"]["changed"] and None in env["backend"]["values"].values()
    assert {"params", "metrics", "curves", "runs"} <= set(data)  # the keys that were there
    text = run(db_url, "compare", "on-jax", "on-torch").stdout
    ran_on = text[text.index("Ran on") :]
    backend_line = next(line for line in ran_on.splitlines() if line.strip().startswith("backend"))
    assert "jax" in backend_line and "torch" in backend_line
