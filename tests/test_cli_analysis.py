"""`tracker best`, `tracker compare` and `tracker metrics` on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import sys
from datetime import datetime, timezone

import pytest

from tracker import Store
from tracker.records import MetricPoint

from .cli_support import fails, ok_json, run, strict_json
from .helpers import seed_run, seed_three

BEST_KEYS = {"run_id", "run_name", "metric", "mode", "epoch", "value"}


# -- best ---------------------------------------------------------------------------------------


def test_best_is_one_object(db_url, store: Store):
    ids = seed_three(store)
    best = ok_json(db_url, "best", "--metric", "val_loss")
    assert set(best) >= BEST_KEYS
    assert (best["run_id"], best["run_name"], best["epoch"], best["value"], best["mode"]) == (
        ids["b"],
        "run-b",
        1,
        0.3,
        "min",
    )
    assert ok_json(db_url, "best") == best  # val_loss is the default metric


def test_best_top_is_an_array(db_url, store: Store):
    ids = seed_three(store)
    top = ok_json(db_url, "best", "--top", "3")
    assert [(r["run_id"], r["epoch"], r["value"]) for r in top] == [
        (ids["b"], 1, 0.3),
        (ids["a"], 1, 0.5),
        (ids["c"], 0, 0.7),
    ]
    assert len(ok_json(db_url, "best", "--top", "1")) == 1


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--metric", "accuracy"], ("run-b", "max", 1, 0.9)),
        (["--metric", "accuracy", "--mode", "min"], ("run-a", "min", 0, 0.5)),
        (["--agg", "last"], ("run-b", "min", 1, 0.3)),
        (["--experiment", "other"], ("run-c", "min", 0, 0.7)),
        (["--metric", "throughput", "--mode", "max"], ("fast", "max", 1, 300.0)),
    ],
)
def test_best_options(db_url, store: Store, args, expected):
    seed_three(store)
    seed_run(store, {"throughput": [100.0, 300.0]}, name="fast")
    best = ok_json(db_url, "best", *args)
    assert (best["run_name"], best["mode"], best["epoch"], best["value"]) == expected


def test_best_last_skips_a_nan_last_value(db_url, store: Store):
    seed_three(store)
    top = ok_json(db_url, "best", "--agg", "last", "--top", "5")
    assert [r["run_name"] for r in top] == ["run-b", "run-a"]


def test_best_table_and_csv(db_url, store: Store):
    ids = seed_three(store)
    table = run(db_url, "best", "--top", "2")
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "rank",
        "run_id",
        "run_name",
        "experiment",
        "metric",
        "mode",
        "agg",
        "epoch",
        "value",
    ]
    assert lines[1].split() == ["1", ids["b"][:8], "run-b", "default", "val_loss", "min"] + [
        "best",
        "1",
        "0.3",
    ]
    rows = list(csv.DictReader(io.StringIO(run(db_url, "best", "--format", "csv").stdout)))
    assert [(r["run_id"], r["value"], r["epoch"]) for r in rows] == [(ids["b"], "0.3", "1")]


def test_best_errors(db_url, store: Store):
    seed_three(store)
    err = fails(db_url, "best", "--metric", "val_acc")
    assert "no metric 'val_acc'; metrics recorded: accuracy, loss, val_loss" in err
    seed_run(store, {"throughput": [1.0]})
    assert "pass --mode min or --mode max" in fails(db_url, "best", "--metric", "throughput")
    assert "in experiment 'nope'" in fails(db_url, "best", "--experiment", "nope")
    assert "x>=1" in fails(db_url, "best", "--top", "0", code=2)


def test_best_on_empty_database(db_url):
    assert "metrics recorded: none recorded yet" in fails(db_url, "best")


# -- compare ------------------------------------------------------------------------------------


def test_compare_json(db_url, store: Store):
    ids = seed_three(store)
    data = ok_json(db_url, "compare", "run-a", "run-c", "run-a")
    assert set(data) == {"runs", "params", "metrics", "curves", "environment"}
    assert [r["id"] for r in data["runs"]] == [ids["a"], ids["c"]]  # each run once
    assert data["runs"][0]["stop"] == {"reason": "completed", "epoch": 2}
    assert data["params"] == [
        {"key": "lr", "changed": True, "values": {ids["a"]: 0.01, ids["c"]: 0.1}},
        {"key": "units", "changed": True, "values": {ids["a"]: 32, ids["c"]: 64}},
    ]
    val_loss = next(m for m in data["metrics"] if m["key"] == "val_loss")
    assert val_loss["mode"] == "min"
    assert val_loss["runs"][ids["a"]] == {
        "best": 0.5,
        "best_epoch": 1,
        "last": 0.6,
        "last_epoch": 2,
    }
    assert val_loss["runs"][ids["c"]]["last"] == "NaN"
    assert [m["key"] for m in data["metrics"]] == ["accuracy", "loss", "val_loss"]
    curve = next(c for c in data["curves"] if c["metric"] == "val_loss" and c["run_id"] == ids["c"])
    assert curve == {
        "metric": "val_loss",
        "run_id": ids["c"],
        "epochs": [0, 1],
        "values": [0.7, "NaN"],
    }


def test_compare_hides_unchanged_params_unless_all(db_url, store: Store):
    ids = seed_three(store)
    changed = ok_json(db_url, "compare", "run-a", "run-b")["params"]
    assert [p["key"] for p in changed] == ["lr"]
    every = ok_json(db_url, "compare", "run-a", "run-b", "--all")["params"]
    assert [(p["key"], p["changed"]) for p in every] == [("lr", True), ("units", False)]
    only_in_one = seed_run(store, {"loss": [1.0]}, params={"lr": 0.01, "units": 32, "drop": 0.5})
    params = ok_json(db_url, "compare", ids["a"], only_in_one)["params"]
    assert params == [{"key": "drop", "changed": True, "values": {only_in_one: 0.5}}]


def test_compare_metric_choice_and_lr(db_url, store: Store):
    a = seed_run(store, {"loss": [1.0, 0.5], "lr": [0.1, 0.01]}, name="x")
    seed_run(store, {"loss": [0.9, 0.4], "lr": [0.1, 0.05]}, name="y")
    default = ok_json(db_url, "compare", "x", "y")
    assert [m["key"] for m in default["metrics"]] == ["loss"]  # lr is left out by default
    chosen = ok_json(db_url, "compare", "x", "y", "--metric", "lr")
    lr = chosen["metrics"][0]
    assert (lr["key"], lr["mode"], lr["runs"][a]["best"], lr["runs"][a]["last"]) == (
        "lr",
        None,
        None,
        0.01,
    )
    assert {c["metric"] for c in chosen["curves"]} == {"lr"}


def test_compare_table_with_sparklines(db_url, store: Store):
    seed_three(store)
    result = run(db_url, "compare", "run-a", "run-b", "--metric", "val_loss")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Params that differ (--all for every one)" in out and "units" not in out
    assert "val_loss  best (min)  0.5 @1" in out
    assert "Stop" in out and "completed" in out
    epochs = out.split("Epochs\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert epochs[0].split() == ["epoch", "val_loss", "[run-a]", "val_loss", "[run-b]"]
    assert epochs[3].split() == ["2", "0.6", "-"]
    curves = out.split("Curves\n", 1)[1].splitlines()
    assert curves[0] == "val_loss  (scale 0.3 .. 0.9)"
    # One scale for both runs: 0.3 is the lowest bar, 0.9 the highest.
    assert curves[1].split()[2:] == ["█▃▄", "0.9", "->", "0.6"]
    assert curves[2].split()[2:] == ["▇▁", "0.8", "->", "0.3"]


def test_compare_csv_one_row_per_run(db_url, store: Store):
    ids = seed_three(store)
    out = run(db_url, "compare", "run-a", "run-c", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run_id"] for r in rows] == [ids["a"], ids["c"]]
    assert rows[0]["param:lr"] == "0.01" and rows[1]["param:units"] == "64"
    assert (rows[0]["val_loss:best"], rows[0]["val_loss:best_epoch"]) == ("0.5", "1")
    assert rows[1]["val_loss:last"] == "NaN"


def _matplotlib():
    """The `plot` extra (it needs numpy): in the dev install; `-m "not keras"` also runs
    without numpy (scripts/test), where these tests are skipped, named as such."""
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")


def test_compare_plot(db_url, store: Store, tmp_path):
    _matplotlib()
    seed_three(store)
    target = tmp_path / "curves.png"
    result = run(db_url, "compare", "run-a", "run-b", "run-c", "--plot", str(target))
    assert result.exit_code == 0, result.stderr
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 5000
    assert f"Wrote {target}" in result.stderr
    assert "Curves" not in result.stdout and "Params" in result.stdout
    as_json = run(db_url, "compare", "run-a", "run-b", "--plot", str(tmp_path / "c.svg"))
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    assert as_json.exit_code == 0


def test_compare_plot_errors(db_url, store: Store, tmp_path):
    _matplotlib()
    seed_three(store)
    missing_dir = tmp_path / "nope" / "c.png"
    err = fails(db_url, "compare", "run-a", "run-b", "--plot", str(missing_dir))
    assert f"directory {missing_dir.parent} does not exist" in err
    assert "use one of" in fails(
        db_url, "compare", "run-a", "run-b", "--plot", str(tmp_path / "c.xyz")
    )


def test_compare_plot_without_matplotlib_says_how_to_get_it(
    db_url, store: Store, tmp_path, monkeypatch
):
    seed_three(store)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    err = fails(db_url, "compare", "run-a", "run-b", "--plot", str(tmp_path / "c.png"))
    assert "pip install 'tracker[plot]'" in err
    assert not (tmp_path / "c.png").exists()


def test_compare_errors(db_url, store: Store):
    ids = seed_three(store)
    assert "at least two runs" in fails(db_url, "compare", "run-a", code=2)
    assert "same run" in fails(db_url, "compare", "run-a", ids["a"][:8], code=2)
    err = fails(db_url, "compare", "run-a", "run-b", "--metric", "val_acc")
    assert "no metric 'val_acc' in these runs; metrics recorded: accuracy, loss, val_loss" in err
    assert "no run matches 'ghost'" in fails(db_url, "compare", "run-a", "ghost")


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_table_json_csv(db_url, store: Store):
    seed_three(store)
    rows = ok_json(db_url, "metrics", "run-a")
    assert rows == [
        {"epoch": 0, "metrics": {"accuracy": 0.5, "loss": 1.0, "val_loss": 0.9}},
        {"epoch": 1, "metrics": {"accuracy": 0.7, "loss": 0.8, "val_loss": 0.5}},
        {"epoch": 2, "metrics": {"accuracy": 0.8, "loss": 0.7, "val_loss": 0.6}},
    ]
    table = run(db_url, "metrics", "run-a").stdout.splitlines()
    assert table[0].startswith("Run run-a")
    assert table[1].split() == ["epoch", "accuracy", "loss", "val_loss"]
    assert table[3].split() == ["1", "0.7", "0.8", "0.5"]
    out = run(db_url, "metrics", "run-c", "--key", "val_loss", "--format", "csv").stdout
    assert out == "epoch,val_loss\n0,0.7\n1,NaN\n"


def test_metrics_keys_and_batches(db_url, store: Store):
    run_id = seed_run(store, {"loss": [1.0, 0.5], "lr": [0.1, 0.05]}, name="b")
    at = datetime.now(timezone.utc)
    points = [MetricPoint("loss", e, s, 1.0 / (e * 10 + s + 1), at) for e in (0, 1) for s in (0, 1)]
    store.log_batch_metrics(run_id, points)
    assert ok_json(db_url, "metrics", "b", "--key", "lr") == [
        {"epoch": 0, "metrics": {"lr": 0.1}},
        {"epoch": 1, "metrics": {"lr": 0.05}},
    ]
    batches = ok_json(db_url, "metrics", "b", "--batches")
    assert [(r["epoch"], r["step"]) for r in batches] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert batches[1]["metrics"] == {"loss": 0.5}
    table = run(db_url, "metrics", "b", "--batches").stdout.splitlines()
    assert table[1].split() == ["epoch", "step", "loss"]
    err = fails(db_url, "metrics", "b", "--batches", "--key", "lr")
    assert "no metric 'lr' at batch level in run" in err and "metrics recorded: loss" in err


def test_metrics_errors(db_url, store: Store):
    seed_three(store)
    err = fails(db_url, "metrics", "run-a", "--key", "val_acc")
    assert "no metric 'val_acc' at epoch level" in err
    assert "metrics recorded: accuracy, loss, val_loss" in err
    assert "no run matches 'ghost'" in fails(db_url, "metrics", "ghost")


def test_metrics_of_a_run_without_epochs(db_url, store: Store):
    store.create_run(name="fresh")
    assert ok_json(db_url, "metrics", "fresh") == []
    assert (
        strict_json(run(db_url, "runs", "show", "fresh", "--format", "json").stdout)["epochs"] == []
    )
