"""The JSON API under /api: the CLI's JSON, built by the same functions (`tracker.present.views`,
`tracker.present.comparison`), so a script gets from the server exactly what `--format json` prints.

Every handler is a plain function: Starlette runs it in a thread, where the store's blocking
calls belong. Query parameters are parsed here and reach SQL only as bound values; a bad one is
a 400 and an unknown run a 404, each as `{"error": "one line"}`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from tracker import artifacts
from tracker.errors import DatabaseUnavailable, RunNotFound, TrackerError
from tracker.modes import infer_mode
from tracker.present import comparison, views
from tracker.records import RankedRun, RunRecord, SummaryRecord, json_float
from tracker.since import parse_since as parse_moment
from tracker.store.listing import SORT_COLUMNS, ListOrder, RunFilter
from tracker.store.run_store import Store
from tracker.store.series_reads import SeriesSource, all_rows
from tracker.ui import series as ser
from tracker.values import plain

MAX_LIMIT = 1000
DEFAULT_MAX_POINTS = 800


class BadRequest(TrackerError):
    """A query parameter the API cannot use (answered with 400)."""


# -- responses ----------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def dumps(data: Any) -> str:
    """Strict, compact JSON: non-finite numbers as "NaN", "Infinity", "-Infinity"."""
    return json.dumps(plain(data), allow_nan=False, separators=(",", ":"), default=_default)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status, media_type="application/json")


def error_response(message: str, status: int) -> Response:
    line = next((s.strip() for s in message.splitlines() if s.strip()), "error")
    return json_response({"error": line}, status)


def status_of(e: TrackerError) -> int:
    if isinstance(e, RunNotFound):
        return 404
    if isinstance(e, DatabaseUnavailable):
        return 503
    return 400  # a bad filter, an unknown metric, an ambiguous reference


def handles_errors(fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """Turn the library's expected errors into one-line JSON errors, never a traceback."""

    def endpoint(request: Request) -> Response:
        try:
            return fn(request)
        except TrackerError as e:
            return error_response(str(e), status_of(e))

    endpoint.__name__ = fn.__name__
    endpoint.__doc__ = fn.__doc__
    return endpoint


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


# -- parameters ---------------------------------------------------------------------------------


def int_param(q: QueryParams, name: str, default: int | None, lo: int, hi: int) -> int | None:
    text = q.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer. Received: {text!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}. Received: {value}")
    return value


def float_param(q: QueryParams, name: str) -> float | None:
    text = q.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number. Received: {text!r}")
    return value


def choice(q: QueryParams, name: str, allowed: tuple[str, ...], default: str | None) -> Any:
    value = q.get(name) or default
    if value is not None and value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}. Received: {value!r}")
    return value


def kv_params(q: QueryParams, name: str) -> dict[str, str]:
    out = {}
    for item in q.getlist(name):
        if not item.strip():
            continue  # the filters form sends its empty fields: no filter
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadRequest(f"{name} must be KEY=VALUE. Received: {item!r}")
        out[key.strip()] = value
    return out


def parse_since(value: str) -> datetime:
    """As `runs list --since` (the server's local time unless the value names a zone)."""
    try:
        return parse_moment(value)
    except ValueError as e:
        raise BadRequest(f"since must be {e}. Received: {value!r}") from None


# -- /api/runs ----------------------------------------------------------------------------------


@dataclass
class RunsQuery:
    """What the runs table shows: filters, the metrics, order and page (all from the URL)."""

    filters: RunFilter = field(default_factory=RunFilter)
    metrics: list[str] = field(default_factory=list)
    sort: str | None = None  # a metric key or a key of SORT_COLUMNS
    order: str | None = None  # asc, desc, or the sort's own default
    agg: str = "best"
    offset: int = 0
    limit: int = 50

    @classmethod
    def parse(cls, q: QueryParams) -> RunsQuery:
        since = q.get("since")
        filters = RunFilter(
            experiment=q.get("experiment") or None,
            status=q.get("status") or None,
            stop_reason=q.get("stop_reason") or None,
            tags=kv_params(q, "tag"),
            params=kv_params(q, "param"),
            environment=kv_params(q, "env"),
            text=q.get("q") or None,
            since=parse_since(since) if since else None,
        )
        return cls(
            filters=filters,
            metrics=list(dict.fromkeys(m for m in q.getlist("metric") if m)),
            sort=q.get("sort") or None,
            order=choice(q, "order", ("asc", "desc"), None),
            agg=choice(q, "agg", ("best", "last"), "best"),
            offset=int_param(q, "offset", 0, 0, 2**31) or 0,
            limit=int_param(q, "limit", 50, 1, MAX_LIMIT) or 50,
        )


def runs_data(store: Store, query: RunsQuery) -> dict[str, Any]:
    """The /api/runs object: the page's `runs list` items, each with `values` of every shown
    metric, and the total count of runs the filters match."""
    by_column = query.sort in SORT_COLUMNS
    sort_metric = None if by_column else query.sort
    order = ListOrder(
        metric=query.metrics[0] if query.metrics else None,
        sort=sort_metric,
        order_by=query.sort if by_column else None,
        descending=None if query.order is None else query.order == "desc",
        agg=query.agg,
    )
    page = store.runs_page(
        query.filters, order, metrics=query.metrics, limit=query.limit, offset=query.offset
    )
    listed = views.runs_list(page.runs).data
    shown = list(dict.fromkeys([*([sort_metric] if sort_metric else []), *query.metrics]))
    if not shown and page.runs and page.runs[0].metric:
        shown = [page.runs[0].metric]  # the CLI's default: val_loss when any run has it
    rows = [
        {**item, "values": _values(r, shown, page.summaries.get(r.run.id, {}), query.agg)}
        for r, item in zip(page.runs, listed, strict=True)
    ]
    return {
        "total": page.total,
        "offset": query.offset,
        "limit": query.limit,
        "metrics": shown,
        "runs": rows,
    }


def _values(
    main: RankedRun, keys: list[str], sums: dict[str, SummaryRecord], agg: str
) -> dict[str, Any]:
    """Each shown metric's value as the table shows it: {"value", "epoch", "mode"}."""
    out: dict[str, Any] = {}
    for key in keys:
        if key == main.metric:  # the listed metric: the very value the CLI ranks by
            mode = main.mode or None
            value, epoch = main.value, main.epoch
        else:
            mode = infer_mode(key)
            s = sums.get(key)
            value, epoch = (None, None) if s is None else _pick(s, agg, mode)
        out[key] = {"value": json_float(value), "epoch": epoch, "mode": mode}
    return out


def _pick(summary: SummaryRecord, agg: str, mode: str | None) -> tuple[float | None, int | None]:
    if agg == "last" or mode is None:  # a direction nobody can tell: its last value, as the CLI
        return summary.last_value, summary.last_epoch
    return summary.best(mode)


@handles_errors
def runs(request: Request) -> Response:
    return json_response(runs_data(store_of(request), RunsQuery.parse(request.query_params)))


# -- /api/runs/{ref} ----------------------------------------------------------------------------


def run_data(store: Store, ref: str, *, history: bool = True) -> dict[str, Any]:
    """`runs show --format json`, plus each metric's direction as `best` infers it (`modes`) and
    the restore command of each checkpoint by its index.
    Without `history` its `epochs` array is empty: the charts read the series, not this."""
    [detail] = store.run_details([ref], history=history)
    data = views.run_show(detail, artifacts.checkpoint_places(detail.checkpoints)).data
    data["modes"] = {key: infer_mode(key) for key in detail.summaries}
    data["restore_commands"] = {
        str(i): views.restore_command(detail.run, ck) for i, ck in enumerate(detail.checkpoints)
    }
    return data


@handles_errors
def run(request: Request) -> Response:
    history = choice(request.query_params, "epochs", ("0", "1"), "1") == "1"
    return json_response(run_data(store_of(request), request.path_params["ref"], history=history))


# -- /api/runs/{ref}/series ---------------------------------------------------------------------


@dataclass
class SeriesQuery:
    keys: list[str]
    batches: bool
    after_epoch: int | None
    max_points: int | None
    x_min: float | None
    x_max: float | None

    @classmethod
    def parse(cls, q: QueryParams, *, export: bool) -> SeriesQuery:
        whole = export or (q.get("format") == "json" and not q.get("max_points"))
        return cls(
            keys=list(dict.fromkeys(k for k in q.getlist("key") if k)),
            batches=choice(q, "batches", ("0", "1", "true", "false"), "0") in ("1", "true"),
            after_epoch=int_param(q, "after_epoch", None, -1, 2**31),
            max_points=None if whole else int_param(q, "max_points", DEFAULT_MAX_POINTS, 3, 10**6),
            x_min=float_param(q, "x_min"),
            x_max=float_param(q, "x_max"),
        )

    def epochs(self) -> tuple[int, int] | None:
        """The epochs that can hold points in [x_min, x_max] (x is within [epoch, epoch + 1))."""
        if self.x_min is None and self.x_max is None:
            return None
        lo = -(2**31) if self.x_min is None else math.floor(self.x_min)
        hi = 2**31 - 1 if self.x_max is None else math.floor(self.x_max)
        return lo, hi


def _steps_per_epoch(run: RunRecord) -> int | None:
    steps = run.fit_params.get("steps")
    return steps if isinstance(steps, int) and steps > 0 else None


def series_data(store: Store, ref: str, query: SeriesQuery) -> dict[str, Any]:
    if query.batches and query.max_points is not None:
        return _batch_series_data(store, ref, query, query.max_points)
    run, rows = store.metric_series(
        ref,
        query.keys,
        all_rows,
        batches=query.batches,
        after_epoch=query.after_epoch,
        epochs=query.epochs(),
    )
    out = {
        key: ser.build(
            points,
            batches=query.batches,
            steps_per_epoch=_steps_per_epoch(run),
            max_points=query.max_points,
            x_min=query.x_min,
            x_max=query.x_max,
        ).to_json()
        for key, points in rows.items()
    }
    return {"run_id": run.id, "batches": query.batches, "series": out}


def _batch_series_data(
    store: Store, ref: str, query: SeriesQuery, max_points: int
) -> dict[str, Any]:
    """A downsampled batch-level series, read from the store's block summaries (every point
    only where the range holds no more than `max_points`)."""

    def read(run: RunRecord, source: SeriesSource) -> dict[str, Any]:
        return ser.build_from_blocks(
            source,
            steps_per_epoch=_steps_per_epoch(run),
            max_points=max_points,
            x_min=query.x_min,
            x_max=query.x_max,
        ).to_json()

    run, out = store.metric_series(
        ref, query.keys, read, batches=True, after_epoch=query.after_epoch, epochs=query.epochs()
    )
    return {"run_id": run.id, "batches": True, "series": out}


@handles_errors
def series(request: Request) -> Response:
    query = SeriesQuery.parse(request.query_params, export=False)
    return json_response(series_data(store_of(request), request.path_params["ref"], query))


@handles_errors
def series_csv(request: Request) -> Response:
    """Every point (no downsampling): key, epoch, step, x, value; non-finite values by name."""
    query = SeriesQuery.parse(request.query_params, export=True)
    data = series_data(store_of(request), request.path_params["ref"], query)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["key", "epoch", "step", "x", "value"])
    for key, s in data["series"].items():
        steps = s["step"] or [None] * len(s["x"])
        for x, e, st, v in zip(s["x"], s["epoch"], steps, s["value"], strict=True):
            writer.writerow([key, e, "" if st is None else st, repr(x), _csv_value(v)])
    name = f"{data['run_id'][:8]}-{'batches' if query.batches else 'epochs'}.csv"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def _csv_value(v: float | str) -> str:
    return v if isinstance(v, str) else repr(v)


# -- /api/best, /api/compare --------------------------------------------------------------------


@handles_errors
def best(request: Request) -> Response:
    q = request.query_params
    top = int_param(q, "top", None, 1, MAX_LIMIT)
    ranked = store_of(request).best_runs(
        q.get("metric") or "val_loss",
        mode=choice(q, "mode", ("auto", "min", "max"), "auto"),
        agg=choice(q, "agg", ("best", "last"), "best"),
        experiment=q.get("experiment") or None,
        top=top or 1,
    )
    return json_response(views.best(ranked, as_list=top is not None).data)


def compare_data(store: Store, q: QueryParams) -> dict[str, Any]:
    """`compare --format json` of the runs `run=` names (two or more)."""
    refs = q.getlist("run")
    metrics = list(dict.fromkeys(m for m in q.getlist("metric") if m))
    if len(refs) < 2:
        raise BadRequest("compare needs at least two runs: give run=A&run=B")
    details = store.run_details(refs, keys=metrics or None)
    if len(details) < 2:
        raise BadRequest("these all name the same run: give at least two different runs")
    chosen = metrics or comparison.default_metrics(details)
    all_params = q.get("all") in ("1", "true")
    data: dict[str, Any] = comparison.compare(
        details, chosen, all_params=all_params, sparklines=False
    ).data
    return data


@handles_errors
def compare(request: Request) -> Response:
    return json_response(compare_data(store_of(request), request.query_params))
