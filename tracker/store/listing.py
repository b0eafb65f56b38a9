"""Listing and ranking runs: which runs a listing holds (`RunFilter`), how it is ordered
(`ListOrder`), `runs list`, `best`, and the web UI's page of runs with its count and summaries.

Rankings read the per-run summary table (one row per run and metric), never metric histories, so
`best` and a sorted `runs list` cost the same whether runs have 10 epochs or 10,000. Each function
takes the caller's connection (and so its transaction).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    String,
    Table,
    and_,
    cast,
    exists,
    func,
    or_,
    select,
)

from tracker.errors import MetricNotFound, TrackerError
from tracker.modes import MODES, check_agg, check_mode, resolve_mode
from tracker.records import (
    RankedRun,
    SummaryRecord,
)
from tracker.store.queries import (
    STATUSES,
    _records,
    _run_select,
    _summaries_for,
    _summary_record,
    metric_keys,
    require_metrics,
)
from tracker.store.tables import experiments as exp_t
from tracker.store.tables import metric_summaries as sum_t
from tracker.store.tables import params as param_t
from tracker.store.tables import runs as run_t
from tracker.store.tables import tags as tag_t

_FMAX = sys.float_info.max


def _status_filter(status: str, now: datetime) -> Any:
    if status == "crashed":
        return or_(
            run_t.c.status == "crashed",
            and_(run_t.c.status == "running", run_t.c.heartbeat_deadline < now),
        )
    if status == "running":
        return and_(run_t.c.status == "running", run_t.c.heartbeat_deadline >= now)
    return run_t.c.status == status


def _kv_match(table: Table, key: str, value: str, as_json: bool) -> Any:
    candidates = {value}
    if as_json:
        candidates = {json.dumps(value)}
        with contextlib.suppress(ValueError):
            candidates.add(json.dumps(json.loads(value), sort_keys=True))
    c = table.c
    return exists().where(c.run_id == run_t.c.id, c.key == key, c.value.in_(candidates))


# Columns the runs table can be ordered by besides a metric, with their default direction.
SORT_COLUMNS = {
    "started_at": (run_t.c.started_at, True),
    "ended_at": (run_t.c.ended_at, True),
    "name": (run_t.c.name, False),
    "experiment": (exp_t.c.name, False),
    "status": (run_t.c.status, False),
    "stop_reason": (run_t.c.stop_reason, False),
    "epochs": (run_t.c.epochs_done, True),
}


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing holds (`runs list`'s filters, the web UI's): every one optional.

    `stop_reason`, `text` (in the name, any case) and `environment` (keys of the recorded
    environment, e.g. `{"backend": "jax"}`, compared as text) narrow as the others do.
    """

    experiment: str | None = None
    status: str | None = None
    tags: Mapping[str, str] | None = None
    params: Mapping[str, str] | None = None
    since: datetime | None = None
    stop_reason: str | None = None
    text: str | None = None
    environment: Mapping[str, str] | None = None


def _where(q: Select[Any], now: datetime, f: RunFilter) -> Select[Any]:
    """`q` (over runs joined to experiments) narrowed by the filters; every value is bound."""
    if f.status is not None and f.status not in STATUSES:
        raise TrackerError(f"status must be one of {', '.join(STATUSES)}. Received: {f.status!r}")
    if f.experiment is not None:
        q = q.where(exp_t.c.name == f.experiment)
    if f.status is not None:
        q = q.where(_status_filter(f.status, now))
    for k, v in (f.tags or {}).items():
        q = q.where(_kv_match(tag_t, k, v, as_json=False))
    for k, v in (f.params or {}).items():
        q = q.where(_kv_match(param_t, k, v, as_json=True))
    for k, v in (f.environment or {}).items():
        # As text on both databases (SQLite's json_extract, PostgreSQL's ->>).
        q = q.where(cast(run_t.c.environment[k].as_string(), String) == v)
    if f.since is not None:
        q = q.where(run_t.c.started_at >= f.since)
    if f.stop_reason is not None:
        shown_crashed = _status_filter("crashed", now)  # a dead process is a crash, not running
        q = q.where(
            shown_crashed if f.stop_reason == "crashed" else run_t.c.stop_reason == f.stop_reason
        )
    if f.text:
        q = q.where(func.lower(run_t.c.name).contains(f.text.lower(), autoescape=True))
    return q


def count_listed(conn: Connection, now: datetime, f: RunFilter) -> int:
    """How many runs `list_runs` would give with these filters and no limit (`_where`'s).
    Experiments are joined only to filter by one: counting runs alone can use an index."""
    runs_from: Any = run_t
    if f.experiment is not None:
        runs_from = run_t.join(exp_t, run_t.c.experiment_id == exp_t.c.id)
    return conn.scalar(_where(select(func.count()).select_from(runs_from), now, f)) or 0


@dataclass(frozen=True)
class ListOrder:
    """Which metric a listing shows and how it is ordered.

    `metric` is only shown; `sort` orders by that metric (runs without it last) and implies it.
    Without either, `val_loss` is shown when any run recorded it. `agg` picks each run's best
    or last value, `mode` the direction (`auto` infers it from the name). `order_by` (a key of
    `SORT_COLUMNS`) orders by a column instead; `descending` overrides the direction of either
    (a metric's default is best first).
    """

    metric: str | None = None
    sort: str | None = None
    agg: str = "best"
    mode: str = "auto"
    order_by: str | None = None
    descending: bool | None = None


def list_runs(
    conn: Connection,
    now: datetime,
    f: RunFilter,
    order: ListOrder,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> list[RankedRun]:
    """Runs newest first (or in `order`), each with its best/last value of the shown metric;
    `limit` and `offset` page."""
    metric, sort, agg, mode = order.metric, order.sort, order.agg, order.mode
    order_by, descending = order.order_by, order.descending
    check_agg(agg)
    if order_by is not None and order_by not in SORT_COLUMNS:
        known = ", ".join(SORT_COLUMNS)
        raise TrackerError(f"cannot sort by {order_by!r}: use a metric or one of {known}")
    metric = sort or metric
    if metric is None and conn.scalar(
        select(sum_t.c.key).where(sum_t.c.key == "val_loss").limit(1)
    ):
        metric = "val_loss"
    q = _where(_run_select(), now, f)
    check_mode(mode)
    resolved = None
    if metric:
        try:
            # Only a sorting metric needs a direction: a shown one falls back to its last value.
            resolved = (
                known_mode(conn, metric, mode, f.experiment) if sort else resolve_mode(metric, mode)
            )
        except TrackerError:
            if sort:
                raise
            agg = "last"  # only shown and its direction unknown: "best" means nothing, show last
    if sort:
        col = _value_column(agg, resolved or "min")
        down = resolved != "min" if descending is None else descending
        q = q.outerjoin(sum_t, and_(sum_t.c.run_id == run_t.c.id, sum_t.c.key == sort)).order_by(
            col.is_(None), col.desc() if down else col.asc()
        )
    elif order_by is not None:
        col, down = SORT_COLUMNS[order_by]
        down = down if descending is None else descending
        q = q.order_by(col.is_(None), col.desc() if down else col.asc())
    q = q.order_by(run_t.c.started_at.desc(), run_t.c.id)
    if limit is not None:
        q = q.limit(limit)
    if offset:
        q = q.offset(offset)
    runs = _records(conn, conn.execute(q).all(), now)
    sums = _summaries_for(conn, [r.id for r in runs], metric) if metric else {}
    out = []
    for r in runs:
        value, epoch = _pick(sums.get(r.id), agg, resolved or "min")
        out.append(
            RankedRun(
                run=r, metric=metric or "", mode=resolved or "", agg=agg, epoch=epoch, value=value
            )
        )
    return out


def _pick(summary: SummaryRecord | None, agg: str, mode: str) -> tuple[float | None, int | None]:
    if summary is None:
        return None, None
    if agg == "last":
        return summary.last_value, summary.last_epoch
    return summary.best(mode)


def _value_column(agg: str, mode: str) -> Any:
    if agg == "last":
        return sum_t.c.last_value
    return sum_t.c.min_value if mode == "min" else sum_t.c.max_value


def best_runs(
    conn: Connection,
    now: datetime,
    metric: str,
    *,
    mode: str = "auto",
    agg: str = "best",
    experiment: str | None = None,
    top: int = 1,
) -> list[RankedRun]:
    check_agg(agg)
    if top < 1:
        raise TrackerError(f"top must be 1 or more. Received: top={top}")
    mode = known_mode(conn, metric, mode, experiment)
    col = _value_column(agg, mode)
    epoch_col = {
        "last": sum_t.c.last_epoch,
        "min": sum_t.c.min_epoch,
        "max": sum_t.c.max_epoch,
    }["last" if agg == "last" else mode]
    # Ties go to the lower run id either way, so the index is walked in one direction.
    order = (
        (col.asc(), sum_t.c.run_id.asc()) if mode == "min" else (col.desc(), sum_t.c.run_id.desc())
    )
    q = (
        select(sum_t.c.run_id, col, epoch_col)
        .where(sum_t.c.key == metric, col.is_not(None), col.between(-_FMAX, _FMAX))
        .order_by(*order)
        .limit(top)
    )
    if experiment is not None:
        q = (
            q.join(run_t, run_t.c.id == sum_t.c.run_id)
            .join(exp_t, exp_t.c.id == run_t.c.experiment_id)
            .where(exp_t.c.name == experiment)
        )
    rows = conn.execute(q).all()
    if not rows:
        _raise_no_metric(conn, metric, experiment)
    runs = {
        r.id: r
        for r in _records(
            conn, conn.execute(_run_select().where(run_t.c.id.in_([r[0] for r in rows]))).all(), now
        )
    }
    return [
        RankedRun(run=runs[rid], metric=metric, mode=mode, agg=agg, epoch=ep, value=val)
        for rid, val, ep in rows
    ]


def known_mode(conn: Connection, metric: str, mode: str, experiment: str | None = None) -> str:
    """`resolve_mode`, except that a metric no run recorded is reported as such: a typo is not
    a question of direction. Costs a query only when the direction cannot be told.

    Raises:
        MetricNotFound: no run recorded `metric`.
        TrackerError: `mode` is not valid, or `auto` cannot tell.
    """
    try:
        return resolve_mode(metric, mode)
    except TrackerError:
        if mode in MODES:
            require_metrics([metric], metric_keys(conn, None), _in_experiment(experiment))
        raise


def _in_experiment(experiment: str | None) -> str:
    return f"in experiment {experiment!r}" if experiment else ""


def _raise_no_metric(conn: Connection, metric: str, experiment: str | None) -> None:
    keys = metric_keys(conn, None)
    if metric in keys:
        where = f" {_in_experiment(experiment)}" if experiment else ""
        raise MetricNotFound(f"no run{where} has a finite value of {metric!r}")
    require_metrics([metric], keys, _in_experiment(experiment))


# -- answers that take several statements -------------------------------------------------------


def require_listed(conn: Connection, wanted: Iterable[str | None]) -> None:
    """Raise `MetricNotFound` (naming the metrics that exist) when a metric a listing shows or
    sorts by was recorded by no run, instead of showing an empty column; in an empty database
    nothing is missing yet."""
    names = [m for m in wanted if m]
    if set(names) - recorded_keys(conn, names):  # the whole list of keys only then
        known = metric_keys(conn, None)
        if known:
            require_metrics(names, known, "in this database")


@dataclass(frozen=True)
class RunsPage:
    """One page of a listing, as the web UI's runs table shows it."""

    total: int  # runs matching the filters, all pages
    runs: list[RankedRun]
    summaries: dict[str, dict[str, SummaryRecord]]  # run id -> metric key -> summary


def runs_page(
    conn: Connection,
    now: datetime,
    f: RunFilter,
    order: ListOrder,
    metrics: Sequence[str],
    *,
    limit: int,
    offset: int,
) -> RunsPage:
    """One page of `list_runs` with the count of all the filtered runs and the summaries of
    `metrics` for the runs of the page (no metric history)."""
    require_listed(conn, [order.sort, *metrics])
    total = count_listed(conn, now, f)
    ranked = list_runs(conn, now, f, order, limit=limit, offset=offset)
    return RunsPage(total, ranked, summaries_of(conn, [r.run.id for r in ranked], list(metrics)))


# -- the web UI's reads --------------------------------------------------------------------------


def summaries_of(
    conn: Connection, run_ids: list[str], keys: list[str]
) -> dict[str, dict[str, SummaryRecord]]:
    """The summaries of `keys` for each of `run_ids` (run id -> key -> summary)."""
    out: dict[str, dict[str, SummaryRecord]] = {r: {} for r in run_ids}
    if run_ids and keys:
        q = select(sum_t).where(sum_t.c.run_id.in_(run_ids), sum_t.c.key.in_(keys))
        for m in conn.execute(q):
            out[m.run_id][m.key] = _summary_record(m)
    return out


def recorded_keys(conn: Connection, keys: list[str]) -> set[str]:
    """Which of `keys` some run recorded: a walk of the summaries' key index, not a scan."""
    if not keys:
        return set()
    q = select(sum_t.c.key).where(sum_t.c.key.in_(keys)).group_by(sum_t.c.key)
    return set(conn.scalars(q))
