"""Read queries of the store, each taking the caller's session.

Rankings read the per-run summary table (one row per run and metric), never metric histories, so
`best` and a sorted `runs list` cost the same whether runs have 10 epochs or 10,000.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from tracker.errors import AmbiguousRun, MetricNotFound, RunNotFound, TrackerError
from tracker.models import Checkpoint, Experiment, Metric, MetricSummary, Param, Run, Tag
from tracker.modes import MODES, resolve_mode
from tracker.records import (
    CheckpointRecord,
    MetricPoint,
    RankedRun,
    RunDetail,
    RunRecord,
    SummaryRecord,
)

STATUSES = ("running", "finished", "failed", "interrupted", "crashed")
_HEX = re.compile(r"^[0-9a-f]{4,32}$")
_FMAX = sys.float_info.max


# -- runs -----------------------------------------------------------------------------------------


def _run_select() -> Select[tuple[Run, str]]:
    return select(Run, Experiment.name).join(Experiment, Run.experiment_id == Experiment.id)


def _record(
    run: Run, experiment: str, params: dict[str, Any], tags: dict[str, str], now: datetime
) -> RunRecord:
    status, reason = run.status, run.stop_reason
    if status == "running" and run.heartbeat_deadline < now:
        status, reason = "crashed", "crashed"  # its process stopped beating
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


def _params_tags(s: Session, run_ids: list[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    params: dict[str, dict[str, Any]] = {r: {} for r in run_ids}
    tags: dict[str, dict[str, str]] = {r: {} for r in run_ids}
    if run_ids:
        for p in s.scalars(select(Param).where(Param.run_id.in_(run_ids))):
            params[p.run_id][p.key] = json.loads(p.value)
        for t in s.scalars(select(Tag).where(Tag.run_id.in_(run_ids))):
            tags[t.run_id][t.key] = t.value
    return params, tags


def _records(s: Session, rows: list[tuple[Run, str]], now: datetime) -> list[RunRecord]:
    params, tags = _params_tags(s, [r.id for r, _ in rows])
    return [_record(r, exp, params[r.id], tags[r.id], now) for r, exp in rows]


def run_record(s: Session, run_id: str, now: datetime) -> RunRecord:
    row = s.execute(_run_select().where(Run.id == run_id)).first()
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    return _records(s, [row], now)[0]


def resolve_run_id(s: Session, ref: str, now: datetime) -> str:
    ref = ref.strip()
    if not ref:
        raise RunNotFound("empty run reference: give a run id, id prefix, name or `latest`")
    if ref == "latest":
        found = s.scalar(select(Run.id).order_by(Run.started_at.desc(), Run.id).limit(1))
        if found is None:
            raise RunNotFound("no runs recorded yet")
        return found
    if s.get(Run, ref) is not None:
        return ref
    conds = [Run.name == ref]
    low = ref.lower()
    if _HEX.match(low):
        conds.append(Run.id.startswith(low, autoescape=True))
    rows = s.execute(select(Run.id, Run.name).where(or_(*conds)).limit(11)).all()
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
            Run.status == "crashed", and_(Run.status == "running", Run.heartbeat_deadline < now)
        )
    if status == "running":
        return and_(Run.status == "running", Run.heartbeat_deadline >= now)
    return Run.status == status


def _kv_match(model: type[Param] | type[Tag], key: str, value: str, as_json: bool) -> Any:
    candidates = {value}
    if as_json:
        candidates = {json.dumps(value)}
        with contextlib.suppress(ValueError):
            candidates.add(json.dumps(json.loads(value), sort_keys=True))
    return exists().where(model.run_id == Run.id, model.key == key, model.value.in_(candidates))


def list_runs(
    s: Session,
    now: datetime,
    *,
    experiment: str | None = None,
    status: str | None = None,
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    metric: str | None = None,
    sort: str | None = None,
    agg: str = "best",
    mode: str = "auto",
) -> list[RankedRun]:
    """Runs newest first (or by `sort`), each with its best/last value of `metric`.

    `metric` is only shown; `sort` orders by that metric (runs without it last) and implies it.
    Without either, `val_loss` is shown when any run recorded it.
    """
    if status is not None and status not in STATUSES:
        raise TrackerError(f"status must be one of {', '.join(STATUSES)}. Received: {status!r}")
    if agg not in ("best", "last"):
        raise TrackerError(f"agg must be `best` or `last`. Received: agg={agg!r}")
    metric = sort or metric
    if metric is None and s.scalar(
        select(MetricSummary.key).where(MetricSummary.key == "val_loss").limit(1)
    ):
        metric = "val_loss"
    q = _run_select()
    if experiment is not None:
        q = q.where(Experiment.name == experiment)
    if status is not None:
        q = q.where(_status_filter(status, now))
    for k, v in (tags or {}).items():
        q = q.where(_kv_match(Tag, k, v, as_json=False))
    for k, v in (params or {}).items():
        q = q.where(_kv_match(Param, k, v, as_json=True))
    if since is not None:
        q = q.where(Run.started_at >= since)
    if mode not in MODES:
        raise TrackerError(f"mode must be one of {', '.join(MODES)}. Received: mode={mode!r}")
    resolved = None
    if metric:
        try:
            resolved = resolve_mode(metric, mode)
        except TrackerError:
            if sort:
                raise
            resolved = "min"  # only shown, nothing is ranked: a loss-like default is harmless
    if sort:
        col = _value_column(agg, resolved or "min")
        q = q.outerjoin(
            MetricSummary, and_(MetricSummary.run_id == Run.id, MetricSummary.key == sort)
        ).order_by(col.is_(None), col.asc() if resolved == "min" else col.desc())
    q = q.order_by(Run.started_at.desc(), Run.id)
    if limit is not None:
        q = q.limit(limit)
    runs = _records(s, s.execute(q).all(), now)
    sums = _summaries_for(s, [r.id for r in runs], metric) if metric else {}
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
        return MetricSummary.last_value
    return MetricSummary.min_value if mode == "min" else MetricSummary.max_value


def best_runs(
    s: Session,
    now: datetime,
    metric: str,
    *,
    mode: str = "auto",
    agg: str = "best",
    experiment: str | None = None,
    top: int = 1,
) -> list[RankedRun]:
    if agg not in ("best", "last"):
        raise TrackerError(f"agg must be `best` or `last`. Received: agg={agg!r}")
    if top < 1:
        raise TrackerError(f"top must be 1 or more. Received: top={top}")
    mode = resolve_mode(metric, mode)
    col = _value_column(agg, mode)
    epoch_col = {
        "last": MetricSummary.last_epoch,
        "min": MetricSummary.min_epoch,
        "max": MetricSummary.max_epoch,
    }["last" if agg == "last" else mode]
    # Ties go to the lower run id either way, so the index is walked in one direction.
    order = (
        (col.asc(), MetricSummary.run_id.asc())
        if mode == "min"
        else (col.desc(), MetricSummary.run_id.desc())
    )
    q = (
        select(MetricSummary.run_id, col, epoch_col)
        .where(MetricSummary.key == metric, col.is_not(None), col.between(-_FMAX, _FMAX))
        .order_by(*order)
        .limit(top)
    )
    if experiment is not None:
        q = (
            q.join(Run, Run.id == MetricSummary.run_id)
            .join(Experiment, Experiment.id == Run.experiment_id)
            .where(Experiment.name == experiment)
        )
    rows = s.execute(q).all()
    if not rows:
        _raise_no_metric(s, metric, experiment)
    runs = {
        r.id: r
        for r in _records(
            s, s.execute(_run_select().where(Run.id.in_([r[0] for r in rows]))).all(), now
        )
    }
    return [
        RankedRun(run=runs[rid], metric=metric, mode=mode, agg=agg, epoch=ep, value=val)
        for rid, val, ep in rows
    ]


def _raise_no_metric(s: Session, metric: str, experiment: str | None) -> None:
    keys = metric_keys(s, None)
    where = f" in experiment {experiment!r}" if experiment else ""
    if metric in keys:
        raise MetricNotFound(f"no run{where} has a finite value of {metric!r}")
    known = ", ".join(keys) if keys else "none recorded yet"
    raise MetricNotFound(f"no metric {metric!r}{where}; metrics recorded: {known}")


# -- metrics and checkpoints ---------------------------------------------------------------------


def _summary_record(m: MetricSummary) -> SummaryRecord:
    return SummaryRecord(**{f.name: getattr(m, f.name) for f in fields(SummaryRecord)})


def _summaries_for(s: Session, run_ids: list[str], key: str) -> dict[str, SummaryRecord]:
    rows = s.scalars(
        select(MetricSummary).where(MetricSummary.run_id.in_(run_ids), MetricSummary.key == key)
    )
    return {m.run_id: _summary_record(m) for m in rows}


def summaries(s: Session, run_id: str) -> dict[str, SummaryRecord]:
    rows = s.scalars(
        select(MetricSummary).where(MetricSummary.run_id == run_id).order_by(MetricSummary.key)
    )
    return {m.key: _summary_record(m) for m in rows}


def metric_history(
    s: Session, run_id: str, keys: Iterable[str] | None = None, *, batches: bool = False
) -> list[MetricPoint]:
    q = select(Metric).where(Metric.run_id == run_id)
    q = q.where(Metric.step.is_not(None) if batches else Metric.step.is_(None))
    if keys is not None:
        q = q.where(Metric.key.in_(list(keys)))
    q = q.order_by(Metric.epoch, Metric.step, Metric.key, Metric.id)
    return [
        MetricPoint(key=m.key, epoch=m.epoch, step=m.step, value=m.value, time=m.time)
        for m in s.scalars(q)
    ]


def metric_keys(s: Session, run_id: str | None) -> list[str]:
    q = select(MetricSummary.key).distinct().order_by(MetricSummary.key)
    if run_id is not None:
        q = q.where(MetricSummary.run_id == run_id)
    return list(s.scalars(q))


def checkpoint_record(c: Checkpoint) -> CheckpointRecord:
    return CheckpointRecord(**{f.name: getattr(c, f.name) for f in fields(CheckpointRecord)})


def checkpoints(s: Session, run_id: str) -> list[CheckpointRecord]:
    q = select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.id)
    return [checkpoint_record(c) for c in s.scalars(q)]


def count_runs(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(Run)) or 0


# -- several facts of a run at once (CLI) --------------------------------------------------------


def resolve_run_ids(s: Session, refs: Iterable[str], now: datetime) -> list[str]:
    """The ids `refs` name, each run once, in the order first named."""
    ids: list[str] = []
    for ref in refs:
        run_id = resolve_run_id(s, ref, now)
        if run_id not in ids:
            ids.append(run_id)
    return ids


def run_detail(
    s: Session, run_id: str, now: datetime, *, keys: Iterable[str] | None = None, history: bool
) -> RunDetail:
    return RunDetail(
        run=run_record(s, run_id, now),
        summaries=summaries(s, run_id),
        history=metric_history(s, run_id, keys) if history else [],
        checkpoints=checkpoints(s, run_id),
    )


def batch_metric_keys(s: Session, run_id: str) -> list[str]:
    q = select(Metric.key).where(Metric.run_id == run_id, Metric.step.is_not(None))
    return list(s.scalars(q.distinct().order_by(Metric.key)))


def require_metrics(wanted: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise `MetricNotFound` naming the metrics that exist when any of `wanted` is not known."""
    known = sorted(set(known))
    missing = [k for k in wanted if k not in known]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        listed = ", ".join(known) if known else "none recorded yet"
        raise MetricNotFound(f"no metric {names} {where}; metrics recorded: {listed}")


def run_ids(s: Session) -> list[str]:
    """Every run id, oldest first."""
    return list(s.scalars(select(Run.id).order_by(Run.started_at, Run.id)))
