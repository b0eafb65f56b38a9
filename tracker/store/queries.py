"""Read queries of the store, each taking the caller's connection (and so its transaction).

Rankings read the per-run summary table (one row per run and metric), never metric histories, so
`best` and a sorted `runs list` cost the same whether runs have 10 epochs or 10,000. Everything
here is SQLAlchemy Core: query commands never pay for importing the ORM.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
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

from tracker.clock import shown_status
from tracker.errors import AmbiguousRun, MetricNotFound, RunNotFound, TrackerError
from tracker.modes import MODES, check_agg, check_mode, resolve_mode
from tracker.records import (
    CheckpointRecord,
    MetricPoint,
    RankedRun,
    RunDestination,
    RunDetail,
    RunRecord,
    SummaryRecord,
)
from tracker.store.tables import batch_blocks as blocks_t
from tracker.store.tables import checkpoints as ck_t
from tracker.store.tables import experiments as exp_t
from tracker.store.tables import metric_summaries as sum_t
from tracker.store.tables import metrics as metric_t
from tracker.store.tables import params as param_t
from tracker.store.tables import run_destinations as dest_t
from tracker.store.tables import runs as run_t
from tracker.store.tables import tags as tag_t

STATUSES = ("running", "finished", "failed", "interrupted", "crashed")
_HEX = re.compile(r"^[0-9a-f]{4,32}$")
_FMAX = sys.float_info.max


# -- runs -----------------------------------------------------------------------------------------


def _run_select() -> Select[Any]:
    return select(run_t, exp_t.c.name.label("experiment_name")).join(
        exp_t, run_t.c.experiment_id == exp_t.c.id
    )


def _record(
    run: Row[Any], experiment: str, params: dict[str, Any], tags: dict[str, str], now: datetime
) -> RunRecord:
    status, reason = shown_status(run.status, run.stop_reason, run.heartbeat_deadline, now)
    return RunRecord(
        id=run.id,
        name=run.name,
        experiment=experiment,
        status=status,
        stop_reason=reason,
        stop_details=dict(run.stop_details or {}),
        started_at=run.started_at,
        ended_at=run.ended_at,
        heartbeat_at=run.heartbeat_at,
        epochs_planned=run.epochs_planned,
        epochs_done=run.epochs_done,
        last_epoch=run.last_epoch,
        params=params,
        tags=tags,
        fit_params=dict(run.fit_params or {}),
        environment=dict(run.environment or {}),
        model=dict(run.model or {}),
        references=list(run.references or []),
    )


def _params_tags(conn: Connection, run_ids: list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    params: dict[str, dict[str, Any]] = {r: {} for r in run_ids}
    tags: dict[str, dict[str, str]] = {r: {} for r in run_ids}
    if run_ids:
        for p in conn.execute(select(param_t).where(param_t.c.run_id.in_(run_ids))):
            params[p.run_id][p.key] = json.loads(p.value)
        for t in conn.execute(select(tag_t).where(tag_t.c.run_id.in_(run_ids))):
            tags[t.run_id][t.key] = t.value
    return params, tags


def _records(conn: Connection, rows: Sequence[Row[Any]], now: datetime) -> list[RunRecord]:
    params, tags = _params_tags(conn, [r.id for r in rows])
    return [_record(r, r.experiment_name, params[r.id], tags[r.id], now) for r in rows]


def run_record(conn: Connection, run_id: str, now: datetime) -> RunRecord:
    row = conn.execute(_run_select().where(run_t.c.id == run_id)).first()
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    return _records(conn, [row], now)[0]


def resolve_run_id(conn: Connection, ref: str, now: datetime) -> str:
    ref = ref.strip()
    if not ref:
        raise RunNotFound("empty run reference: give a run id, id prefix, name or `latest`")
    if ref == "latest":
        found = conn.scalar(
            select(run_t.c.id).order_by(run_t.c.started_at.desc(), run_t.c.id).limit(1)
        )
        if found is None:
            raise RunNotFound("no runs recorded yet")
        return found
    if conn.scalar(select(run_t.c.id).where(run_t.c.id == ref)) is not None:
        return ref
    conds = [run_t.c.name == ref]
    low = ref.lower()
    if _HEX.match(low):
        conds.append(run_t.c.id.startswith(low, autoescape=True))
    rows = conn.execute(select(run_t.c.id, run_t.c.name).where(or_(*conds)).limit(11)).all()
    if len(rows) == 1:
        return rows[0].id
    if not rows:
        hint = "" if _HEX.match(low) or len(ref) >= 4 else " (id prefixes need 4+ hex digits)"
        raise RunNotFound(f"no run matches {ref!r}{hint}; see `tracker runs list`")
    listed = ", ".join(f"{r.id[:8]} ({r.name})" for r in rows[:10])
    raise AmbiguousRun(f"{ref!r} matches several runs: {listed}; give more of the id")


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


# -- metrics and checkpoints ---------------------------------------------------------------------


def _from_row(record: type[Any], row: Row[Any]) -> Any:
    # By mapping, not attribute: a Row is a tuple, so `row.count` would be tuple.count.
    m = row._mapping
    return record(**{f.name: m[f.name] for f in fields(record)})


def _summary_record(m: Row[Any]) -> SummaryRecord:
    return _from_row(SummaryRecord, m)


def _summaries_for(conn: Connection, run_ids: list[str], key: str) -> dict[str, SummaryRecord]:
    rows = conn.execute(select(sum_t).where(sum_t.c.run_id.in_(run_ids), sum_t.c.key == key))
    return {m.run_id: _summary_record(m) for m in rows}


def summaries(conn: Connection, run_id: str) -> dict[str, SummaryRecord]:
    rows = conn.execute(select(sum_t).where(sum_t.c.run_id == run_id).order_by(sum_t.c.key))
    return {m.key: _summary_record(m) for m in rows}


def metric_history(
    conn: Connection, run_id: str, keys: Iterable[str] | None = None, *, batches: bool = False
) -> list[MetricPoint]:
    q = select(metric_t).where(metric_t.c.run_id == run_id)
    q = q.where(metric_t.c.step.is_not(None) if batches else metric_t.c.step.is_(None))
    if keys is not None:
        q = q.where(metric_t.c.key.in_(list(keys)))
    q = q.order_by(metric_t.c.epoch, metric_t.c.step, metric_t.c.key, metric_t.c.id)
    return [
        MetricPoint(key=m.key, epoch=m.epoch, step=m.step, value=m.value, time=m.time)
        for m in conn.execute(q)
    ]


def metric_keys(conn: Connection, run_id: str | None) -> list[str]:
    q = select(sum_t.c.key).distinct().order_by(sum_t.c.key)
    if run_id is not None:
        q = q.where(sum_t.c.run_id == run_id)
    return list(conn.scalars(q))


def checkpoint_record(c: Row[Any]) -> CheckpointRecord:
    return _from_row(CheckpointRecord, c)


def pending_uploads(conn: Connection, run_id: str | None) -> list[CheckpointRecord]:
    q = select(ck_t).where(ck_t.c.artifact_key.is_not(None), ck_t.c.uploaded_at.is_(None))
    if run_id is not None:
        q = q.where(ck_t.c.run_id == run_id)
    return [checkpoint_record(c) for c in conn.execute(q.order_by(ck_t.c.id))]


def checkpoints(conn: Connection, run_id: str) -> list[CheckpointRecord]:
    q = select(ck_t).where(ck_t.c.run_id == run_id).order_by(ck_t.c.id)
    return [checkpoint_record(c) for c in conn.execute(q)]


def count_runs(conn: Connection) -> int:
    return conn.scalar(select(func.count()).select_from(run_t)) or 0


# -- several facts of a run at once (CLI) --------------------------------------------------------


def resolve_run_ids(conn: Connection, refs: Iterable[str], now: datetime) -> list[str]:
    """The ids `refs` name, each run once, in the order first named."""
    ids: list[str] = []
    for ref in refs:
        run_id = resolve_run_id(conn, ref, now)
        if run_id not in ids:
            ids.append(run_id)
    return ids


def run_detail(
    conn: Connection,
    run_id: str,
    now: datetime,
    *,
    keys: Iterable[str] | None = None,
    history: bool,
) -> RunDetail:
    return RunDetail(
        run=run_record(conn, run_id, now),
        summaries=summaries(conn, run_id),
        history=metric_history(conn, run_id, keys) if history else [],
        checkpoints=checkpoints(conn, run_id),
    )


def has_batch_metrics(conn: Connection, run_id: str, keys: Sequence[str]) -> bool:
    """Whether the run has batch points of every one of `keys`: a seek per key."""
    c = blocks_t.c
    return all(
        conn.scalar(select(c.block).where(c.run_id == run_id, c.key == k).limit(1)) is not None
        for k in keys
    )


def batch_metric_keys(conn: Connection, run_id: str) -> list[str]:
    """The keys the run has batch points of: its batch blocks' keys (a walk of their primary
    key, where the metrics would be a scan of every batch point)."""
    q = select(blocks_t.c.key).where(blocks_t.c.run_id == run_id)
    return list(conn.scalars(q.distinct().order_by(blocks_t.c.key)))


def require_metrics(wanted: Iterable[str], known: Iterable[str], where: str = "") -> None:
    """Raise `MetricNotFound` naming the metrics that exist when any of `wanted` is not known.

    The one wording of an unknown metric, wherever one is named (`best`, `runs list`, `compare`,
    `metrics`, `restore`); `where` says where it was looked for ("in run 3f2a9c1e").
    """
    known = sorted(set(known))
    missing = [k for k in wanted if k not in known]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        at = f" {where}" if where else ""
        listed = ", ".join(known) if known else "none recorded yet"
        raise MetricNotFound(f"no metric {names}{at}; metrics recorded: {listed}")


def run_ids(conn: Connection) -> list[str]:
    """Every run id, oldest first."""
    return list(conn.scalars(select(run_t.c.id).order_by(run_t.c.started_at, run_t.c.id)))


def destinations(conn: Connection) -> dict[str, RunDestination | None]:
    """Every run id (oldest first) with its noted destination, None where none was noted."""
    q = (
        select(run_t.c.id, dest_t.c.url, dest_t.c.database_id)
        .outerjoin(dest_t, dest_t.c.run_id == run_t.c.id)
        .order_by(run_t.c.started_at, run_t.c.id)
    )
    return {
        run_id: None if url is None else RunDestination(url, database_id)
        for run_id, url, database_id in conn.execute(q)
    }


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


def run_details(
    conn: Connection,
    refs: Iterable[str],
    now: datetime,
    *,
    keys: Sequence[str] | None,
    history: bool,
) -> list[RunDetail]:
    """`run_detail` of the runs `refs` name (each once), with the history of `keys` only;
    `MetricNotFound` when one of `keys` was recorded by none of them."""
    ids = resolve_run_ids(conn, refs, now)
    details = [run_detail(conn, i, now, keys=keys, history=history) for i in ids]
    if keys:
        require_metrics(keys, {k for d in details for k in d.summaries}, "in these runs")
    return details


def run_and_keys(
    conn: Connection, ref: str, now: datetime, keys: Sequence[str] | None, *, batches: bool
) -> tuple[RunRecord, list[str]]:
    """The run `ref` names and the metric keys to read of it at epoch (or batch) level: `keys`,
    once each is known recorded there (`MetricNotFound` otherwise), or every recorded key."""
    run = run_record(conn, resolve_run_id(conn, ref, now), now)
    if keys and batches and has_batch_metrics(conn, run.id, keys):
        return run, list(keys)  # a seek per key, where listing the keys walks them all
    known = (batch_metric_keys if batches else metric_keys)(conn, run.id)
    if not keys:
        return run, known
    level = "batch" if batches else "epoch"
    require_metrics(keys, known, f"at {level} level in run {run.short_id}")
    return run, list(keys)


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


def series_rows(
    conn: Connection,
    run_id: str,
    key: str,
    *,
    batches: bool,
    after_epoch: int | None = None,
    epochs: tuple[int, int] | None = None,
) -> list[tuple[int, int | None, float | None]]:
    """(epoch, step, value) rows of one metric of one run in time order (value None for NaN).

    A batch series can hold a million points: they are read on the driver's own cursor, in
    the caller's transaction, which takes half the time of SQLAlchemy's result rows and
    `MetricValue`'s per-row conversion (the same trade as the per-epoch write's).
    """
    sql = "SELECT epoch, step, value FROM metrics WHERE run_id = ? AND key = ? AND step IS "
    sql += "NOT NULL" if batches else "NULL"
    args: list[Any] = [run_id, key]
    if after_epoch is not None:
        sql += " AND epoch > ?"
        args.append(after_epoch)
    if epochs is not None:
        sql += " AND epoch BETWEEN ? AND ?"
        args += list(epochs)
    sql += " ORDER BY epoch, step, id"
    return _driver_rows(conn, sql, args)


def _driver_rows(conn: Connection, sql: str, args: Sequence[Any]) -> list[Any]:
    """Rows of `sql` (written with `?`) on the driver's own cursor, in the caller's transaction."""
    if conn.dialect.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall())
    finally:
        cursor.close()


# A block: (epoch, count, first_step, last_step, last_value, min_value, min_step, max_value,
# max_step), values None for NaN (min/max None: the block holds only NaN).
BlockRow = tuple[
    int, int, int, int, float | None, float | None, int | None, float | None, int | None
]
# A span of batch points: (epoch, first step, last step), both steps included.
Span = tuple[int, int, int]


class SeriesSource:
    """One series (a metric of one run at epoch or batch level) as a chart reads it, inside the
    caller's transaction: all of its points, or at batch level its block summaries or the
    points of a few spans (what downsampling needs)."""

    def __init__(
        self,
        conn: Connection,
        run_id: str,
        key: str,
        *,
        batches: bool,
        after_epoch: int | None,
        epochs: tuple[int, int] | None,
    ) -> None:
        self.conn, self.run_id, self.key, self.batches = conn, run_id, key, batches
        self.after_epoch, self.epochs = after_epoch, epochs

    def blocks(self) -> list[BlockRow]:
        """The series' blocks (after `after_epoch`, within `epochs`) in order."""
        sql = (
            "SELECT epoch, count, first_step, last_step, last_value, min_value, min_step,"
            " max_value, max_step FROM batch_blocks WHERE run_id = ? AND key = ?"
        )
        args: list[Any] = [self.run_id, self.key]
        if self.after_epoch is not None:
            sql += " AND epoch > ?"
            args.append(self.after_epoch)
        if self.epochs is not None:
            sql += " AND epoch BETWEEN ? AND ?"
            args += list(self.epochs)
        return _driver_rows(self.conn, sql + " ORDER BY epoch, block", args)

    def points(self, spans: Sequence[Span]) -> list[tuple[int, int, float | None]]:
        """(epoch, step, value) of the points in `spans` (given in order), in order: one query
        a few hundred spans, each a seek of the batch points' index."""
        out: list[tuple[int, int, float | None]] = []
        for i in range(0, len(spans), 300):
            chunk = spans[i : i + 300]
            values = ", ".join(
                ["(CAST(? AS INTEGER), CAST(? AS INTEGER), CAST(? AS INTEGER))"] * len(chunk)
            )
            sql = f"WITH spans (e, lo, hi) AS (VALUES {values}) " + (
                # each span a seek of the index, whatever the planner's statistics say:
                # SQLite walks a CROSS JOIN's left side first, PostgreSQL a LATERAL per row
                "SELECT m.epoch, m.step, m.value FROM spans CROSS JOIN metrics m"
                " WHERE m.run_id = ? AND m.key = ? AND m.epoch = spans.e"
                " AND m.step IS NOT NULL AND m.step BETWEEN spans.lo AND spans.hi"
                " ORDER BY m.epoch, m.step, m.id"
                if self.conn.dialect.name == "sqlite"
                else "SELECT m.epoch, m.step, m.value FROM spans CROSS JOIN LATERAL"
                " (SELECT epoch, step, value, id FROM metrics WHERE run_id = ? AND key = ?"
                " AND epoch = spans.e AND step IS NOT NULL AND step BETWEEN spans.lo AND spans.hi"
                " OFFSET 0) AS m ORDER BY m.epoch, m.step, m.id"  # OFFSET 0: kept a subquery
            )
            args = [v for span in chunk for v in span] + [self.run_id, self.key]
            out += _driver_rows(self.conn, sql, args)
        return out

    def rows(self) -> list[tuple[int, int, float | None]]:
        """Every point (after `after_epoch`, within `epochs`), as `series_rows` gives them."""
        rows = series_rows(
            self.conn,
            self.run_id,
            self.key,
            batches=self.batches,
            after_epoch=self.after_epoch,
            epochs=self.epochs,
        )
        return rows  # type: ignore[return-value]


def all_rows(run: RunRecord, source: SeriesSource) -> list[tuple[int, int, float | None]]:
    """Every point of the series (`metric_series`'s reader when nothing is downsampled)."""
    return source.rows()
