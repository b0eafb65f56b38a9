"""Statements that write a run's own rows: the run (start, resume, facts, heartbeat, end), its
tags, its checkpoint records, the destination a spool notes for it, and deleting runs.

Each function takes an open connection and runs in the caller's transaction (`Store` opens it);
metric points and summaries are `writes`'.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import Connection, delete, insert, update

from tracker.clock import heartbeat_deadline, shown_status, utcnow
from tracker.errors import RunNotFound
from tracker.records import CheckpointRecord, RunRecord
from tracker.store import queries, writes
from tracker.store.tables import (
    batch_blocks,
    checkpoints,
    metric_summaries,
    metrics,
    params,
    run_destinations,
    runs,
    stored_value,
    tags,
)
from tracker.store.writes import DriverCursor, db_time, paramstyled
from tracker.values import plain

# Run-level JSON facts learned after the start, which `update_run` may replace.
UPDATABLE = frozenset(
    {"model", "references", "fit_params", "environment", "epochs_planned", "stop_details"}
)
_RUN_TABLES = (metrics, batch_blocks, metric_summaries, checkpoints, params, tags, run_destinations)


def as_stored(facts: Mapping[str, Any] | None) -> dict[str, Any]:
    """`facts` as a JSON column gives them back (tuples become lists, keys strings, numpy values
    numbers and lists): `values.plain` of them."""
    return plain(facts or {})


def new_run_row(
    run_id: str, name: str | None, now: datetime, heartbeat_interval: float, epochs_planned: Any
) -> dict[str, Any]:
    """The row of a run starting now (its facts still empty), named `name` or a generated
    name."""
    return {
        "id": run_id,
        "name": name or writes.generated_name(run_id),
        "status": "running",
        "stop_details": {},
        "started_at": now,
        "heartbeat_at": now,
        "heartbeat_deadline": heartbeat_deadline(now, heartbeat_interval),
        "epochs_planned": plain(epochs_planned),
        "epochs_done": 0,
        "fit_params": {},
        "environment": {},
        "model": {},
        "references": [],
    }


def started_record(
    row: dict[str, Any], experiment: str, params: Mapping[str, Any], tags: Mapping[str, Any]
) -> RunRecord:
    """The record of the run `row` just started, built from what was written rather than read
    back (this is on every `fit`'s start)."""
    row = dict(row)
    status, reason = shown_status("running", None, row.pop("heartbeat_deadline"), utcnow())
    return RunRecord(
        **{**row, "status": status},
        experiment=experiment,
        stop_reason=reason,
        ended_at=None,
        last_epoch=None,
        params={str(k): json.loads(writes.encode_param(v)) for k, v in params.items()},
        tags={str(k): writes.encode_tag(v) for k, v in tags.items()},
    )


_RUN_COLUMNS = (
    "id",
    "name",
    "status",
    "stop_details",
    "started_at",
    "heartbeat_at",
    "heartbeat_deadline",
    "epochs_planned",
    "epochs_done",
    "fit_params",
    "environment",
    "model",
    "references",
)
_JSON_COLUMNS = {"stop_details", "fit_params", "environment", "model", "references"}
_TIME_COLUMNS = {"started_at", "heartbeat_at", "heartbeat_deadline"}


def insert_run(
    conn: DriverCursor,
    row: Mapping[str, Any],
    experiment: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
) -> None:
    """A new run (`row`: the `runs` columns but its experiment), its experiment created on first
    use, and its params and tags, in statements whose results nothing waits for: on PostgreSQL
    the run's creation is one round trip (`writes.PipelinedCursor`), and the first epoch's
    write waits for it.

    A concurrent creation of the same experiment is harmless: the insert does nothing when the
    name exists, and the run's insert reads the experiment's id afresh."""
    json_slot = "?" if conn.dialect.name == "sqlite" else "CAST(? AS JSON)"
    conn.exec_driver_sql(
        paramstyled(
            conn,
            "INSERT INTO experiments (name, created_at) SELECT ?, ? WHERE NOT EXISTS "
            "(SELECT 1 FROM experiments WHERE name = ?) ON CONFLICT (name) DO NOTHING",
        ),
        (experiment, db_time(conn, utcnow()), experiment),
    )
    slots, values = [], []
    for col in _RUN_COLUMNS:
        value = row[col]
        if col in _JSON_COLUMNS:
            slots.append(json_slot)
            value = json.dumps(value)  # as the JSON column type writes it
        else:
            slots.append("?")
            if col in _TIME_COLUMNS:
                value = db_time(conn, value)
        values.append(value)
    names = ", ".join(f'"{c}"' for c in _RUN_COLUMNS)
    conn.exec_driver_sql(
        paramstyled(
            conn,
            f"INSERT INTO runs ({names}, experiment_id) VALUES ({', '.join(slots)}, "
            "(SELECT id FROM experiments WHERE name = ?))",
        ),
        (*values, experiment),
    )
    encoded = (
        ("params", {str(k): writes.encode_param(v) for k, v in params.items()}),
        ("tags", {str(k): writes.encode_tag(v) for k, v in tags.items()}),
    )
    for table, values_by_key in encoded:
        if values_by_key:
            conn.exec_driver_sql(
                paramstyled(conn, f"INSERT INTO {table} (run_id, key, value) VALUES (?, ?, ?)"),
                [(row["id"], k, v) for k, v in values_by_key.items()],
            )


def resume_run(
    conn: Connection,
    ref: str,
    now: datetime,
    epochs_planned: int | None,
    heartbeat_interval: float,
) -> str:
    """Put the run `ref` names back in state `running`; its id."""
    run_id = queries.resolve_run_id(conn, ref, now)
    values: dict[str, Any] = {
        "status": "running",
        "stop_reason": None,
        "stop_details": {},
        "ended_at": None,
        "heartbeat_at": now,
        "heartbeat_deadline": heartbeat_deadline(now, heartbeat_interval),
    }
    if epochs_planned is not None:
        values["epochs_planned"] = plain(epochs_planned)
    conn.execute(update(runs).where(runs.c.id == run_id).values(**values))
    return run_id


def heartbeat(conn: DriverCursor, run_id: str, now: datetime, interval: float) -> None:
    """Move a running run's heartbeat deadline on (`clock.heartbeat_deadline`); a finished run
    is left as it is."""
    times = (db_time(conn, now), db_time(conn, heartbeat_deadline(now, interval)))
    conn.exec_driver_sql(paramstyled(conn, BEAT_SQL), (*times, run_id, "running"))


def update_run(conn: Connection, run_id: str, fields: Mapping[str, Any]) -> None:
    """Replace run-level facts (keys of `UPDATABLE`), each stored as `values.plain` gives it."""
    if unknown := set(fields) - UPDATABLE:
        raise ValueError(f"cannot update run fields {sorted(unknown)}")
    stored = {k: plain(v) for k, v in fields.items()}
    conn.execute(update(runs).where(runs.c.id == run_id).values(**stored))


FINISH_SQL = (
    "UPDATE runs SET status = ?, stop_reason = ?, stop_details = {json}, ended_at = ?, "
    "heartbeat_at = ? WHERE id = ?"
)
BEAT_SQL = "UPDATE runs SET heartbeat_at = ?, heartbeat_deadline = ? WHERE id = ? AND status = ?"


def finish_run(
    conn: DriverCursor,
    run_id: str,
    now: datetime,
    status: str,
    stop_reason: str,
    stop_details: Mapping[str, Any] | None,
) -> None:
    """Close the run with its final status and why it stopped: one statement on the driver's
    cursor (with the last epoch's write, what the end of `fit` waits for)."""
    when = db_time(conn, now)
    sql = FINISH_SQL.format(json="?" if conn.dialect.name == "sqlite" else "CAST(? AS JSON)")
    details = json.dumps(as_stored(stop_details))  # as the JSON column type writes it
    result = conn.exec_driver_sql(
        paramstyled(conn, sql), (status, stop_reason, details, when, when, run_id)
    )
    conn.expect_rows(result, RunNotFound(f"no run with id {run_id!r}"))


def set_tags(conn: Connection, ref: str, values: Mapping[str, Any]) -> str:
    """Add or replace tags of the run `ref` names; its id."""
    run_id = queries.resolve_run_id(conn, ref, utcnow())
    writes.put_tags(conn, run_id, values)
    return run_id


class _CheckpointFile(TypedDict):
    path: str
    kind: str
    source: str
    size: int
    sha256: str


class CheckpointFacts(_CheckpointFile, total=False):
    """What `Store.add_checkpoint` records of a checkpoint file: where it is (`path`), what it
    holds (`kind`), who wrote it (`source`), its `size` and `sha256`, the `epoch`/`batch` it
    was written at, the `monitor` metric and its `value` then, whether it `is_best`, when
    (`at`, now without), and the artifact store's copy (`artifact_root`, `artifact_key`,
    `uploaded`: already confirmed)."""

    epoch: int | None
    batch: int | None
    monitor: str | None
    value: float | None
    is_best: bool
    at: datetime | None
    artifact_root: str | None
    artifact_key: str | None
    uploaded: bool


def checkpoint_row(run_id: str, facts: CheckpointFacts) -> dict[str, Any]:
    """The checkpoints row of `facts` (its id still to come)."""
    at = facts.get("at") or utcnow()
    key = facts.get("artifact_key")
    return {
        "run_id": run_id,
        "epoch": facts.get("epoch"),
        "batch": facts.get("batch"),
        "path": facts["path"],
        "kind": facts["kind"],
        "source": facts["source"],
        "monitor": facts.get("monitor"),
        "value": stored_value(facts.get("value")),
        "is_best": facts.get("is_best", False),
        "size": facts["size"],
        "sha256": facts["sha256"],
        "created_at": at,
        "artifact_root": facts.get("artifact_root"),
        "artifact_key": key,
        "uploaded_at": at if facts.get("uploaded", False) and key else None,
    }


def add_checkpoint(conn: Connection, row: dict[str, Any]) -> CheckpointRecord:
    """Insert a checkpoint row (the columns of `tables.checkpoints` but its id)."""
    stmt = insert(checkpoints).values(**row).returning(checkpoints.c.id)
    return CheckpointRecord(id=conn.execute(stmt).scalar_one(), **row)


def mark_uploaded(conn: Connection, run_id: str, artifact_key: str, sha256: str) -> int:
    """Confirm the unconfirmed copies with this key and hash; how many rows."""
    c = checkpoints.c
    stmt = (
        update(checkpoints)
        .where(c.run_id == run_id, c.artifact_key == artifact_key)
        .where(c.sha256 == sha256, c.uploaded_at.is_(None))
        .values(uploaded_at=utcnow())
    )
    return conn.execute(stmt).rowcount


def record_upload(conn: Connection, checkpoint_id: int, root: str, key: str) -> None:
    """The checkpoint's copy is now confirmed at `root`/`key`."""
    conn.execute(
        update(checkpoints)
        .where(checkpoints.c.id == checkpoint_id)
        .values(artifact_root=root, artifact_key=key, uploaded_at=utcnow())
    )


def set_destination(conn: Connection, run_id: str, row: dict[str, Any]) -> None:
    """Replace the destination noted for the run."""
    conn.execute(delete(run_destinations).where(run_destinations.c.run_id == run_id))
    conn.execute(insert(run_destinations), [{"run_id": run_id, **row}])


def delete_runs(conn: Connection, run_ids: list[str]) -> int:
    """Delete the runs with every row they own; how many runs were deleted."""
    for table in _RUN_TABLES:
        conn.execute(delete(table).where(table.c.run_id.in_(run_ids)))
    return conn.execute(delete(runs).where(runs.c.id.in_(run_ids))).rowcount
