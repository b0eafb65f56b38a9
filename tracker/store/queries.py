"""Read queries of a run's facts, each taking the caller's connection (and so its transaction):
resolving a reference, the run's record, summaries, history, checkpoints and metric keys, and the
answers that put several of them together. Listing and ranking runs is `listing`'s; the series a
chart reads, `series_reads`'. Everything here is SQLAlchemy Core: query commands never pay for
importing the ORM.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
    func,
    or_,
    select,
)

from tracker.clock import shown_status
from tracker.errors import AmbiguousRun, MetricNotFound, RunNotFound
from tracker.records import (
    CheckpointRecord,
    MetricPoint,
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
