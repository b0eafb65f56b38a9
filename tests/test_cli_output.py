"""The renderer behind every `--format`: aligned tables, CSV and strict JSON from plain values."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import click
import pytest

from tracker.cli.options import parse_since, split_kv
from tracker.present.output import (
    SPARK_BARS,
    SPARK_GAP,
    Table,
    View,
    csv_cell,
    fmt_duration,
    render,
    sparkline,
    to_json,
    to_table,
)


def test_table_aligns_numbers_right_and_text_left():
    out = to_table(Table(["name", "loss"], [["a", 0.5], ["longer", 12.25], ["c", None]]))
    assert out.splitlines() == [
        "name     loss",
        "a         0.5",
        "longer  12.25",
        "c           -",
    ]


def test_titled_table_is_indented_and_empty_one_says_none():
    assert to_table(Table(["k"], [], "Params")) == "Params\n  (none)"
    assert to_table(Table(["k", "v"], [["x", 1]], "T", header=False)) == "T\n  x  1"


def test_csv_and_json_keep_full_precision_and_name_non_finite_values():
    assert [csv_cell(v) for v in (0.1 + 0.2, math.nan, -math.inf, None, True)] == [
        "0.30000000000000004",
        "NaN",
        "-Infinity",
        "",
        "True",
    ]
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert csv_cell(when) == "2026-01-02T03:04:05+00:00"
    assert csv_cell({"b": [1, math.inf]}) == '{"b": [1, "Infinity"]}'
    text = to_json({"x": [math.nan, math.inf, 1.5], "t": when})
    assert json.loads(text) == {"x": ["NaN", "Infinity", 1.5], "t": "2026-01-02T03:04:05+00:00"}


def test_render_picks_the_section_for_each_format():
    view = View({"a": 1}, ["Title line", Table(["a"], [[1]])], Table(["c"], [["x,y"]]))
    assert render(view, "json") == '{\n  "a": 1\n}'
    assert render(view, "csv") == 'c\n"x,y"'
    assert render(view, "table") == "Title line\n\na\n1"
    with pytest.raises(ValueError, match="xml"):
        render(view, "xml")


@pytest.mark.parametrize(
    "seconds, text", [(None, "-"), (4.4, "4s"), (65, "1m05s"), (3 * 3600 + 120, "3h02m")]
)
def test_durations(seconds, text):
    assert fmt_duration(seconds) == text


def test_sparkline_scale_gaps_and_width():
    assert sparkline([0.0, 0.5, 1.0], 0.0, 1.0) == f"{SPARK_BARS[0]}{SPARK_BARS[4]}{SPARK_BARS[-1]}"
    assert (
        sparkline([1.0, math.nan, math.inf], 0.0, 2.0) == f"{SPARK_BARS[4]}{SPARK_GAP}{SPARK_GAP}"
    )
    assert sparkline([3.0, 3.0], 3.0, 3.0) == SPARK_BARS[0] * 2
    long = sparkline([float(i) for i in range(1000)], 0.0, 999.0, width=50)
    assert len(long) == 50 and long[0] == SPARK_BARS[0] and long[-1] == SPARK_BARS[-1]
    assert list(long) == sorted(long)  # a rising curve stays rising when averaged into bars


def test_since_accepts_ages_and_iso_times():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("3d", now) == now - timedelta(days=3)
    assert parse_since("2026-01-31T14:00Z") == datetime(2026, 1, 31, 14, tzinfo=timezone.utc)
    local = parse_since("2026-01-31")
    assert local.tzinfo is not None and local == datetime(2026, 1, 31).astimezone()
    for bad in ("yesterday", "3 months", "-2h", ""):
        with pytest.raises(click.BadParameter, match="ISO date"):
            parse_since(bad)


def test_key_value_pairs():
    assert split_kv("a=b=c") == ("a", "b=c")
    assert split_kv(" k =") == ("k", "")
    for bad in ("novalue", "=v", " =v"):
        with pytest.raises(click.BadParameter, match="KEY=VALUE"):
            split_kv(bad)
