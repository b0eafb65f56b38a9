"""Rendering of command output: aligned tables for people, CSV and strict JSON for programs.

A command builds one `View` (its JSON data, the sections shown as a table, and the one table
written as CSV) and `render` turns it into text. Nothing here touches the database, so the
formats can be tested on plain values and stay the same for every command.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tracker.records import json_float
from tracker.values import fmt_float, plain

FORMATS = ("table", "json", "csv")
SPARK_BARS = "▁▂▃▄▅▆▇█"
SPARK_GAP = "·"  # an epoch whose value is NaN or infinite


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    title: str | None = None
    header: bool = True  # False for key/value listings


@dataclass
class View:
    """What one command shows: `data` for `--format json`, `sections` (tables and text blocks,
    in order) for `--format table`, `csv` for `--format csv`."""

    data: Any
    sections: list[Table | str] = field(default_factory=list)
    csv: Table | None = None


def render(view: View, fmt: str) -> str:
    """The text of `view` in `fmt` (`table`, `json` or `csv`), without a trailing newline."""
    if fmt == "json":
        return to_json(view.data)
    if fmt == "csv":
        table = view.csv or _first_table(view.sections)
        return to_csv(table) if table else ""
    if fmt != "table":
        raise ValueError(f"format must be one of {', '.join(FORMATS)}. Received: {fmt!r}")
    blocks = [s if isinstance(s, str) else to_table(s) for s in view.sections]
    return "\n\n".join(b for b in blocks if b)


def _first_table(sections: list[Table | str]) -> Table | None:
    return next((s for s in sections if isinstance(s, Table)), None)


def to_json(data: Any) -> str:
    """Strict JSON: non-finite floats become "NaN", "Infinity", "-Infinity"."""
    return json.dumps(plain(data), indent=2, allow_nan=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# -- cells ------------------------------------------------------------------------------------


def cell(value: Any) -> str:
    """A value as a table shows it: short floats, local times, compact JSON for structures."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt_float(value)
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(plain(value), allow_nan=False, default=str)
    return str(value)


def csv_cell(value: Any) -> str:
    """A value as CSV holds it: full precision, ISO times, JSON's names for non-finite floats."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(json_float(value))
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(plain(value), allow_nan=False, default=str)
    return str(value)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric(column: list[Any]) -> bool:
    """A column of numbers (and gaps) is aligned right."""
    return any(_is_number(v) for v in column) and all(_is_number(v) or v is None for v in column)


# -- tables -----------------------------------------------------------------------------------


def to_table(table: Table) -> str:
    """Columns padded to their widest cell; numbers aligned right; a title line on top."""
    texts = [[cell(v) for v in row] for row in table.rows]
    numeric = [
        _numeric([row[i] for row in table.rows]) and table.header for i in range(len(table.columns))
    ]
    lines = [table.columns] if table.header else []
    lines += texts
    widths = [max((len(line[i]) for line in lines), default=0) for i in range(len(table.columns))]
    out = [table.title] if table.title else []
    if not table.rows:
        out.append("  (none)" if table.title else "(none)")
        return "\n".join(out)
    for line in lines:
        parts = [
            text.rjust(w) if numeric[i] else text.ljust(w)
            for i, (text, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append(("  " if table.title else "") + "  ".join(parts).rstrip())
    return "\n".join(out)


def to_csv(table: Table) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([csv_cell(v) for v in row])
    return buf.getvalue().rstrip("\n")


def key_values(title: str, values: dict[str, Any], *, sort: bool = True) -> Table:
    """A titled listing of `key  value` lines, sorted by key unless `sort` is False. Nested
    configs get a line per leaf (`optimizer.config.learning_rate`), as W&B shows them."""
    values = flatten(values)
    keys = sorted(values) if sort else list(values)
    return Table(["key", "value"], [[k, values[k]] for k in keys], title, header=False)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dicts (and lists of dicts) as dotted keys; other lists stay one value."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        elif isinstance(v, list) and v and all(isinstance(i, dict) and i for i in v):
            for n, item in enumerate(v):
                out.update(flatten(item, f"{key}[{n}]."))
        else:
            out[key] = v
    return out


# -- sparklines -------------------------------------------------------------------------------


def sparkline(values: Sequence[float], lo: float, hi: float, width: int = 60) -> str:
    """One bar per value (values averaged into at most `width` bars), scaled from `lo` to `hi`."""
    buckets = _buckets(values, width)
    span = hi - lo
    bars = []
    for v in buckets:
        if v is None:
            bars.append(SPARK_GAP)
            continue
        level = 0 if span <= 0 else round((v - lo) / span * (len(SPARK_BARS) - 1))
        bars.append(SPARK_BARS[min(max(level, 0), len(SPARK_BARS) - 1)])
    return "".join(bars)


def _buckets(values: Sequence[float], width: int) -> list[float | None]:
    if len(values) <= width:
        groups = [[v] for v in values]
    else:
        step = len(values) / width
        groups = [list(values[int(i * step) : int((i + 1) * step)]) for i in range(width)]
    out: list[float | None] = []
    for group in groups:
        finite = [v for v in group if math.isfinite(v)]
        out.append(sum(finite) / len(finite) if finite else None)
    return out
