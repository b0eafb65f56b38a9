"""A metric name that no run recorded (a typo) is reported as such, listing the recorded ones,
before any question of direction, wherever a metric is named."""

from __future__ import annotations

import pytest

from tracker import Store, restore_weights
from tracker.errors import MetricNotFound

from .cli_support import checkpoint_file, fails
from .helpers import seed_run, seed_three

RECORDED = "metrics recorded: accuracy, loss, val_loss"


QUERIES = [
    pytest.param(["best", "--metric", "val_los"], "no metric 'val_los'; ", id="best"),
    pytest.param(
        ["best", "--metric", "val_los", "--agg", "last", "--top", "2"],
        "no metric 'val_los'; ",
        id="best-last-top",
    ),
    pytest.param(
        ["best", "--metric", "val_los", "--mode", "min"], "no metric 'val_los'; ", id="best-min"
    ),
    pytest.param(
        ["best", "--metric", "val_los", "--experiment", "other"],
        "no metric 'val_los' in experiment 'other'; ",
        id="best-experiment",
    ),
    pytest.param(
        ["runs", "list", "--sort", "val_los"],
        "no metric 'val_los' in this database; ",
        id="list-sort",
    ),
    pytest.param(
        ["runs", "list", "--metric", "val_los"],
        "no metric 'val_los' in this database; ",
        id="list-metric",
    ),
    pytest.param(
        ["compare", "run-a", "run-b", "--metric", "val_los"],
        "no metric 'val_los' in these runs; ",
        id="compare",
    ),
]


@pytest.mark.parametrize("fmt", ["table", "json"])
@pytest.mark.parametrize("args, message", QUERIES)
def test_an_unknown_metric_is_named_with_the_recorded_ones(
    db_url, store: Store, args, message, fmt
):
    seed_three(store)
    err = fails(db_url, *args, "--format", fmt)
    assert message in err and err.rstrip().endswith(RECORDED), err


def test_restore_names_the_recorded_metrics(db_url, store: Store, tmp_path):
    ids = seed_three(store)
    checkpoint_file(store, ids["a"], tmp_path / "a.weights.h5", b"a", epoch=1)
    to = str(tmp_path / "out.weights.h5")
    err = fails(db_url, "restore", "run-a", "--metric", "val_los", "--to", to)
    assert f"no metric 'val_los' in run {ids['a'][:8]}; {RECORDED}" in err
    with pytest.raises(MetricNotFound) as e:
        restore_weights(None, "run-a", metric="val_los", store=store)
    assert str(e.value) == f"no metric 'val_los' in run {ids['a'][:8]}; {RECORDED}"


@pytest.mark.parametrize(
    "args",
    [["best", "--metric", "val_los"], ["runs", "list", "--sort", "val_los"]],
    ids=["best", "list-sort"],
)
def test_an_unknown_metric_on_an_empty_database(db_url, args):
    err = fails(db_url, *args)
    assert "no metric 'val_los'" in err and "metrics recorded: none recorded yet" in err


def test_a_recorded_metric_of_unknown_direction_still_asks_for_a_mode(db_url, store: Store):
    seed_three(store)
    seed_run(store, {"throughput": [100.0, 120.0]})
    for args in (["best", "--metric", "throughput"], ["runs", "list", "--sort", "throughput"]):
        assert "cannot tell whether 'throughput' is better high or low" in fails(db_url, *args)
