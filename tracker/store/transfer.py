"""Moving whole runs between stores: `tracker sync` (spool to database) and bulk imports.

Importing is idempotent: a run that is already there gains only the metric points (by key, epoch
and batch step) and checkpoints (by epoch, batch, path and hash) it lacks, so a sync that is run
twice, or again after it was cut off, neither duplicates nor loses anything. Each run is imported
in one transaction: it lands whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from sqlalchemy import Connection, insert, select
from sqlalchemy.orm import Session

from tracker.clock import heartbeat_deadline, utcnow
from tracker.records import CheckpointRecord, MetricPoint, RunRecord
from tracker.store import queries, tables, writes
from tracker.store.models import Checkpoint, Metric, Run
from tracker.values import plain

_FINAL = ("finished", "failed", "interrupted", "crashed")


@dataclass(frozen=True)
class RunBundle:
    run: RunRecord
    points: list[MetricPoint] = field(default_factory=list)  # epoch and batch level
    checkpoints: list[CheckpointRecord] = field(default_factory=list)


@dataclass
class ImportResult:
    runs_created: int = 0
    runs_updated: int = 0
    points: int = 0
    checkpoints: int = 0


def export_run(conn: Connection, run_id: str) -> RunBundle:
    now = utcnow()
    epochs = queries.metric_history(conn, run_id)
    batches = queries.metric_history(conn, run_id, batches=True)
    return RunBundle(
        run=queries.run_record(conn, run_id, now),
        points=epochs + batches,
        checkpoints=queries.checkpoints(conn, run_id),
    )


def import_runs(s: Session, bundles: list[RunBundle]) -> ImportResult:
    """Runs new to this database are written together, a few bulk statements for the whole
    batch; runs it already has are merged one by one (`import_run`). What was added, counted
    afresh on each call (a transaction tried again counts once)."""
    result = ImportResult()
    ids = [b.run.id for b in bundles]
    have = set(s.scalars(select(Run.id).where(Run.id.in_(ids)))) if ids else set()
    fresh = [b for b in bundles if b.run.id not in have]
    if fresh:
        _create_many(s, fresh)
        result.runs_created += len(fresh)
        result.points += sum(len(b.points) for b in fresh)
        result.checkpoints += sum(len(b.checkpoints) for b in fresh)
    for bundle in bundles:
        if bundle.run.id in have:
            import_run(s, bundle, result)
    return result


def _create_many(s: Session, bundles: list[RunBundle]) -> None:
    conn = s.connection()
    experiments = {
        name: writes.experiment_id(conn, name) for name in {b.run.experiment for b in bundles}
    }
    runs, params, tags, checkpoints, points = [], [], [], [], []
    for b in bundles:
        r = b.run
        epochs = {p.epoch for p in b.points if p.step is None}
        row = _run_row(r, experiments[r.experiment])
        row.update(epochs_done=len(epochs), last_epoch=max(epochs) if epochs else None)
        runs.append(row)
        params += [
            {"run_id": r.id, "key": k, "value": writes.encode_param(v)} for k, v in r.params.items()
        ]
        tags += [
            {"run_id": r.id, "key": k, "value": writes.encode_tag(v)} for k, v in r.tags.items()
        ]
        checkpoints += [{**_checkpoint_row(c), "run_id": r.id} for c in b.checkpoints]
        points.append((r.id, b.points))
    conn.execute(insert(tables.runs), runs)
    for table, rows in (
        (tables.params, params),
        (tables.tags, tags),
        (tables.checkpoints, checkpoints),
    ):
        if rows:
            conn.execute(insert(table), rows)
    writes.insert_points_of_runs(conn, points)


def _run_row(r: RunRecord, experiment_id: int) -> dict:
    """The run's row, its JSON facts as `values.plain` gives them (bundles may be hand-made)."""
    return {
        "id": r.id,
        "name": r.name,
        "experiment_id": experiment_id,
        "status": r.status,
        "stop_reason": r.stop_reason,
        "stop_details": plain(r.stop_details),
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "heartbeat_at": r.heartbeat_at,
        "heartbeat_deadline": heartbeat_deadline(r.heartbeat_at),
        "epochs_planned": plain(r.epochs_planned),
        "epochs_done": 0,
        "last_epoch": None,
        "fit_params": plain(r.fit_params),
        "environment": plain(r.environment),
        "model": plain(r.model),
        "references": plain(r.references),
    }


def _checkpoint_row(c: CheckpointRecord) -> dict:
    row = {f.name: getattr(c, f.name) for f in fields(CheckpointRecord)}
    del row["id"]
    return row


def import_run(s: Session, bundle: RunBundle, result: ImportResult) -> None:
    r = bundle.run
    existing = s.get(Run, r.id)
    if existing is None:
        _create(s, r)
        result.runs_created += 1
        have: set[tuple[str, int, int | None]] = set()
    else:
        q = select(Metric.key, Metric.epoch, Metric.step).where(Metric.run_id == r.id)
        have = {(k, e, st) for k, e, st in s.execute(q)}
        result.runs_updated += 1
    new = [p for p in bundle.points if (p.key, p.epoch, p.step) not in have]
    s.flush()
    result.points += writes.insert_points(s.connection(), r.id, new)
    new_epochs = {p.epoch for p in new if p.step is None}
    run = s.get(Run, r.id)
    assert run is not None
    if new_epochs:
        run.epochs_done = len({e for _, e, step in have if step is None} | new_epochs)
        run.last_epoch = max(new_epochs | {run.last_epoch if run.last_epoch is not None else -1})
    if existing is not None and (run.status not in _FINAL or r.status in _FINAL):
        _copy_outcome(run, r)
    writes.put_params(s.connection(), r.id, r.params)
    writes.put_tags(s.connection(), r.id, r.tags)
    result.checkpoints += _import_checkpoints(s, r.id, bundle.checkpoints)


def _create(s: Session, r: RunRecord) -> None:
    exp_id = writes.experiment_id(s.connection(), r.experiment)
    s.execute(insert(tables.runs), [_run_row(r, exp_id)])


def _copy_outcome(run: Run, r: RunRecord) -> None:
    run.status, run.stop_reason, run.stop_details = r.status, r.stop_reason, plain(r.stop_details)
    run.ended_at, run.heartbeat_at = r.ended_at, r.heartbeat_at
    run.heartbeat_deadline = heartbeat_deadline(r.heartbeat_at)
    for name in ("fit_params", "environment", "model", "references"):
        if getattr(r, name):
            setattr(run, name, plain(getattr(r, name)))


def _import_checkpoints(s: Session, run_id: str, cks: list[CheckpointRecord]) -> int:
    q = select(Checkpoint.epoch, Checkpoint.batch, Checkpoint.path, Checkpoint.sha256).where(
        Checkpoint.run_id == run_id
    )
    have = {tuple(row) for row in s.execute(q)}
    added = 0
    for c in cks:
        if (c.epoch, c.batch, c.path, c.sha256) in have:
            continue
        s.execute(insert(tables.checkpoints), [{**_checkpoint_row(c), "run_id": run_id}])
        added += 1
    return added
