"""3. Bulk ingest: whole runs (5,000 x 50 epochs x 4 metrics) into an empty database.

tracker: `Store.import_runs` in chunks of runs, one transaction each. MLflow: `MlflowClient`
create_run + log_batch + set_terminated per run, on a subset of the runs (its rate is
extrapolated). Raw: `executemany` of the same metric rows into a bare table with the columns of
tracker's `metrics` table and an index on (run_id, key, epoch), one transaction per chunk: the
rate the database itself allows, with no run rows, summaries or ORM.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from common import SynthRun, synth_runs
from harness import Context, dbname, drop_sqlite

from tracker import open_store
from tracker.records import MetricPoint, RunRecord
from tracker.store.transfer import RunBundle


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


def bundle(r: SynthRun) -> RunBundle:
    started, ended = _dt(r.started), _dt(r.ended)
    record = RunRecord(
        id=r.id,
        name=r.name,
        experiment="bench",
        status="finished",
        stop_reason="completed",
        stop_details={},
        started_at=started,
        ended_at=ended,
        heartbeat_at=ended,
        epochs_planned=max(e for _, e, _, _ in r.rows) + 1,
        epochs_done=0,
        last_epoch=None,
        params=dict(r.params),
        tags={"source": "bench"},
    )
    points = [MetricPoint(k, e, None, v, _dt(t)) for k, e, v, t in r.rows]
    return RunBundle(run=record, points=points)


def import_into(
    url: str,
    start: int,
    count: int,
    epochs: int,
    chunk: int,
    bundles: list[list[RunBundle]] | None = None,
) -> dict[str, Any]:
    """Import runs `start`.. `start+count` (or the given chunks of bundles) into the store at
    `url`, `chunk` runs a call; times only `import_runs` (bundles are built off the clock)."""
    store = open_store(url)
    seconds, rows = 0.0, 0
    chunks = iter(bundles) if bundles is not None else _bundle_chunks(start, count, epochs, chunk)
    try:
        for part in chunks:
            t0 = time.perf_counter()
            result = store.import_runs(part)
            seconds += time.perf_counter() - t0
            rows += result.points
    finally:
        store.close()
    return {"runs": count, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def _bundle_chunks(start: int, count: int, epochs: int, chunk: int) -> Iterator[list[RunBundle]]:
    for first in range(start, start + count, chunk):
        yield [bundle(r) for r in synth_runs(first, min(chunk, start + count - first), epochs)]


# -- the database's own limit ---------------------------------------------------------------------

RAW_SQLITE_DDL = (
    "CREATE TABLE metrics (id INTEGER PRIMARY KEY, run_id VARCHAR(32) NOT NULL, key TEXT NOT NULL,"
    " epoch INTEGER NOT NULL, step INTEGER, value FLOAT, time DATETIME NOT NULL)",
    "CREATE INDEX ix_metrics_run_key_epoch ON metrics (run_id, key, epoch)",
)
RAW_PG_DDL = (
    "CREATE TABLE metrics (id BIGSERIAL PRIMARY KEY, run_id VARCHAR(32) NOT NULL,"
    " key TEXT NOT NULL, epoch INTEGER NOT NULL, step INTEGER, value DOUBLE PRECISION,"
    " time TIMESTAMP WITH TIME ZONE NOT NULL)",
    "CREATE INDEX ix_metrics_run_key_epoch ON metrics (run_id, key, epoch)",
)
INSERT = "INSERT INTO metrics (run_id, key, epoch, step, value, time) VALUES (?, ?, ?, ?, ?, ?)"


def _raw_chunks(size: Any, as_text: bool) -> list[list[tuple[Any, ...]]]:
    """The metric rows, per chunk, as the driver receives them (SQLite: time as SQLAlchemy's
    text form; PostgreSQL: aware datetimes)."""
    chunks = []
    runs = list(synth_runs(0, size.ingest_runs, size.ingest_epochs))
    for i in range(0, len(runs), size.ingest_chunk):
        rows = []
        for r in runs[i : i + size.ingest_chunk]:
            for k, e, v, t in r.rows:
                ts = _dt(t)
                rows.append(
                    (r.id, k, e, None, v, ts.strftime("%Y-%m-%d %H:%M:%S.%f") if as_text else ts)
                )
        chunks.append(rows)
    return chunks


def raw_sqlite(path: str, chunks: list[list[tuple[Any, ...]]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # as tracker's engine
        for ddl in RAW_SQLITE_DDL:
            conn.execute(ddl)
        t0 = time.perf_counter()
        for rows in chunks:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT, rows)
            conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


def raw_postgres(conninfo: str, chunks: list[list[tuple[Any, ...]]]) -> float:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        for ddl in RAW_PG_DDL:
            conn.execute(ddl)
        conn.commit()
        t0 = time.perf_counter()
        with conn.cursor() as cur:
            for rows in chunks:
                cur.executemany(INSERT.replace("?", "%s"), rows)
                conn.commit()
        return time.perf_counter() - t0


def _rate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rows_per_s": statistics.median(s["rows_per_s"] for s in samples),
        "seconds": statistics.median(s["seconds"] for s in samples),
        "rows": samples[0]["rows"],
        "runs": samples[0]["runs"],
        "reps": samples,
    }


def run(ctx: Context, backend: str) -> dict[str, Any]:
    size = ctx.size
    reps = size.ingest_reps if backend == "sqlite" else size.ingest_reps_pg
    out: dict[str, Any] = {
        "runs": size.ingest_runs,
        "epochs": size.ingest_epochs,
        "metrics": 4,
        "chunk_runs": size.ingest_chunk,
        "rows": size.ingest_runs * size.ingest_epochs * 4,
    }
    tracker_reps, url = [], ""
    ctx.log(f"    building {size.ingest_runs} run bundles ...")
    bundles = list(_bundle_chunks(0, size.ingest_runs, size.ingest_epochs, size.ingest_chunk))
    for rep in range(reps):
        url = ctx.new_db(backend, "ingest_tracker")
        open_store(url).close()  # an empty store: schema made before the clock starts
        res = import_into(url, 0, size.ingest_runs, size.ingest_epochs, 0, bundles)
        tracker_reps.append(res)
        ctx.log(f"    tracker rep {rep + 1}/{reps}: {res['rows_per_s']:,.0f} rows/s")
        if rep < reps - 1:
            drop_sqlite(url)
    out["tracker"] = _rate(tracker_reps)
    ctx.shared[f"store_{backend}"] = url  # the queries benchmark reads this database

    del bundles
    raw_reps = []
    chunks = _raw_chunks(size, as_text=backend == "sqlite")
    rows = sum(len(c) for c in chunks)
    for _ in range(reps):
        raw_url = ctx.new_db(backend, "ingest_raw")
        if backend == "sqlite":
            seconds = raw_sqlite(raw_url[len("sqlite:///") :], chunks)
            drop_sqlite(raw_url)
        else:
            assert ctx.postgres is not None
            seconds = raw_postgres(ctx.postgres.conninfo(dbname(raw_url)), chunks)
        raw_reps.append(
            {
                "rows": rows,
                "runs": size.ingest_runs,
                "seconds": seconds,
                "rows_per_s": rows / seconds,
            }
        )
    out["raw"] = _rate(raw_reps)
    out["raw"]["driver"] = "sqlite3 executemany" if backend == "sqlite" else "psycopg executemany"
    out["tracker_vs_raw"] = out["tracker"]["rows_per_s"] / out["raw"]["rows_per_s"]

    if ctx.mlflow:
        ml_reps = []
        for _ in range(reps):
            res = ctx.mlflow.call(
                "ingest",
                cwd=ctx.scratch("mlflow-ingest"),
                uri=ctx.new_db(backend, "ingest_mlflow"),
                runs=size.mlflow_ingest_runs,
                epochs=size.ingest_epochs,
            )
            ml_reps.append(res)
        out["mlflow"] = _rate(ml_reps)
        out["mlflow"]["subset"] = True
    return out
