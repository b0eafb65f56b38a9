"""Write helpers of the store, each working inside the caller's connection (and so its transaction).

`fold` keeps a metric's summary (first, last, min, max) in step with the rows written in the
same transaction; rankings read the summary and never the history. Every JSON value (params,
tags, the run's JSON columns) is passed through `values.plain` on its way in, here or in `Store`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Dialect, Table, and_, case, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from tracker.clock import utcnow
from tracker.errors import RunNotFound
from tracker.records import MetricPoint
from tracker.store import tables
from tracker.store.tables import experiments, metric_summaries, params, tags
from tracker.values import plain

_ADJECTIVES = [
    "amber",
    "bold",
    "calm",
    "brisk",
    "clever",
    "deft",
    "eager",
    "fair",
    "gentle",
    "keen",
    "lucid",
    "merry",
    "nimble",
    "quiet",
    "rapid",
    "steady",
    "swift",
    "vivid",
]
_NOUNS = [
    "badger",
    "cedar",
    "comet",
    "falcon",
    "fern",
    "harbor",
    "heron",
    "lark",
    "maple",
    "otter",
    "pine",
    "raven",
    "river",
    "sparrow",
    "tiger",
    "willow",
    "wren",
    "zephyr",
]


def encode_param(value: Any) -> str:
    """A param as the JSON text it is stored as: `np.int64(3)` is `3`, so `--param k=3` finds it."""
    return json.dumps(plain(value), sort_keys=True)


def encode_tag(value: Any) -> str:
    return str(plain(value))


def generated_name(run_id: str) -> str:
    """A readable name (as MLflow and W&B give), made unique by the id's first hex digits."""
    n = int(run_id[:8], 16)
    return f"{_ADJECTIVES[n % len(_ADJECTIVES)]}-{_NOUNS[(n // 97) % len(_NOUNS)]}-{run_id[:4]}"


class DriverCursor:
    """What the hot-path helpers below use of a SQLAlchemy Connection (`dialect`,
    `exec_driver_sql`), straight on a DBAPI cursor: see `Store._driver_write`."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self.cursor, self.dialect = cursor, dialect

    def exec_driver_sql(self, sql: str, params: Any) -> Any:
        if isinstance(params, list):
            self.cursor.executemany(sql, params)
        else:
            self.cursor.execute(sql, params)
        return self.cursor  # has `rowcount`, as a result has

    def expect_rows(self, result: Any, error: Exception) -> None:
        """Raise `error` if the statement of `result` changed no row (here: at once)."""
        if result.rowcount == 0:
            raise error


class PipelinedCursor(DriverCursor):
    """A PostgreSQL write transaction in psycopg's pipeline mode: BEGIN, the statements and
    COMMIT go out together and their replies are read together, so the whole transaction
    costs one round trip to the server, where each statement would cost one (a database on
    another machine charges every round trip to the writer, and the run's end waits for it).

    A statement's result is known only once the replies are in: `expect_rows` checks then. When
    a check fails, its error is raised instead of the driver's (a metric row of a deleted run
    fails on its foreign key: the run is what is missing)."""

    def __init__(self, connection: Any, dialect: Dialect) -> None:
        super().__init__(None, dialect)
        self.connection = connection
        self._checks: list[tuple[Any, Exception]] = []

    def exec_driver_sql(self, sql: str, params: Any) -> Any:
        cursor = self.connection.cursor()  # one per statement: each keeps its own result
        if isinstance(params, list):
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
        return cursor

    def expect_rows(self, result: Any, error: Exception) -> None:
        self._checks.append((result, error))

    def check(self) -> None:
        for result, error in self._checks:
            if result.pgresult is not None and result.rowcount == 0:
                raise error


_IDLE = 0  # libpq's PQTRANS_IDLE: no transaction open


def _pipelines(raw: Any, dialect: Dialect) -> bool:
    if dialect.driver != "psycopg":
        return False
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


@contextmanager
def driver_transaction(raw: Any, dialect: Dialect) -> Iterator[DriverCursor]:
    """One write transaction on the pooled DBAPI connection `raw`, committed on leaving;
    pipelined on PostgreSQL through psycopg 3 (`PipelinedCursor`). The caller rolls back or
    discards the connection when this raises."""
    if _pipelines(raw, dialect):
        driver = raw.driver_connection
        conn = PipelinedCursor(driver, dialect)
        # BEGIN and COMMIT are ours, queued like the statements: psycopg's own wait for their
        # replies, which would cost a round trip each.
        driver.autocommit = True
        try:
            with driver.pipeline():  # leaving it sends everything queued and reads the replies
                conn.exec_driver_sql("BEGIN", None)
                yield conn
                conn.exec_driver_sql("COMMIT", None)
        except dialect.loaded_dbapi.Error:
            conn.check()
            raise
        finally:
            if driver.info.transaction_status != _IDLE:
                driver.rollback()  # the body failed: what it sent is undone
            driver.autocommit = False  # as the pool hands it out
        conn.check()
        return
    cur = raw.cursor()
    try:
        if dialect.name == "sqlite":
            cur.execute("BEGIN IMMEDIATE")  # see tracker.store.db: wait for the write lock
        yield DriverCursor(cur, dialect)
        raw.commit()
    finally:
        cur.close()


Executor = Connection | DriverCursor


def experiment_id(conn: Connection, name: str) -> int:
    """The experiment's id, creating it on first use."""
    q = select(experiments.c.id).where(experiments.c.name == name)
    found = conn.scalar(q)
    if found is not None:
        return found
    try:
        with conn.begin_nested():  # another process may create the same experiment right now
            stmt = insert(experiments).values(name=name, created_at=utcnow())
            return conn.execute(stmt.returning(experiments.c.id)).scalar_one()
    except IntegrityError:
        return conn.execute(q).scalar_one()


def put_params(conn: Connection, run_id: str, values: Mapping[str, Any]) -> None:
    """Set params as JSON text (so 3 and "3" stay apart), replacing those of the same key."""
    _replace(conn, params, run_id, {str(k): encode_param(v) for k, v in values.items()})


def put_tags(conn: Connection, run_id: str, values: Mapping[str, Any]) -> None:
    _replace(conn, tags, run_id, {str(k): encode_tag(v) for k, v in values.items()})


def _replace(conn: Connection, table: Table, run_id: str, values: dict[str, str]) -> None:
    if not values:
        return
    c = table.c
    conn.execute(delete(table).where(c.run_id == run_id, c.key.in_(list(values))))
    conn.execute(
        insert(table), [{"run_id": run_id, "key": k, "value": v} for k, v in values.items()]
    )


def point_rows(run_id: str, points: Iterable[MetricPoint]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "key": p.key,
            "epoch": p.epoch,
            "step": p.step,
            "value": p.value,
            "time": p.time,
        }
        for p in points
    ]


def insert_points(conn: Executor, run_id: str, points: Iterable[MetricPoint]) -> int:
    """Insert metric points in bulk and fold the epoch-level ones into the run's summaries."""
    points = list(points)
    insert_points_of_runs(conn, [(run_id, points)])
    return len(points)


def insert_points_of_runs(conn: Executor, runs: list[tuple[str, list[MetricPoint]]]) -> None:
    """Points of several runs at once: two `executemany` calls whatever the count.

    This is the per-epoch hot path of every training run and the bulk path of imports, so the
    metric rows go to the driver as plain tuples, converted here the way the models' column
    types would (NaN as NULL, UTC times), and the summaries cost one upsert.
    """
    rows: list[tuple] = []
    folded: list[dict[str, Any]] = []
    blocks: dict[tuple[str, str, int, int], list[Any]] = {}
    for run_id, points in runs:
        rows += metric_tuples(conn, run_id, points)
        by_key: dict[str, dict[str, Any]] = {}
        for p in points:
            if p.step is None:
                by_key[p.key] = _fold_point(by_key.get(p.key), run_id, p.key, p.epoch, p.value)
            else:
                fold_block(blocks, run_id, p.key, p.epoch, p.step, p.value)
        folded += by_key.values()
    if rows:
        conn.exec_driver_sql(paramstyled(conn, _INSERT_METRICS_SQL), rows)
    if folded:
        sql, names = _summary_upsert(conn)
        folded = [_nan_as_null(row) for row in folded]
        conn.exec_driver_sql(sql, [tuple(r[n] for n in names) for r in folded] if names else folded)
    if blocks:
        conn.exec_driver_sql(
            paramstyled(conn, _block_upsert(conn)), [(*k, *v) for k, v in blocks.items()]
        )


def fold_block(
    blocks: dict[tuple[str, str, int, int], list[Any]],
    run_id: str,
    key: str,
    epoch: int,
    step: int,
    value: float | None,
) -> None:
    """Fold one batch point, written after those already folded, into its block's summary
    `[count, first_step, last_step, last_value, min_value, min_step, max_value, max_step]`.

    The rules are the series' order (epoch, step, then the order written): the last point is
    the one of the highest step written last, and of equal minima (maxima) the first in that
    order is kept. NaN (or None) is never a minimum or maximum but can be the last value.
    """
    v = None if value is None or value != value else value
    k = (run_id, key, epoch, step // tables.BATCH_BLOCK)
    b = blocks.get(k)
    if b is None:
        blocks[k] = [
            1,
            step,
            step,
            v,
            v,
            None if v is None else step,
            v,
            None if v is None else step,
        ]
        return
    b[0] += 1
    b[1] = min(b[1], step)
    if step >= b[2]:
        b[2], b[3] = step, v
    if v is not None:
        if b[4] is None or v < b[4] or (v == b[4] and step < b[5]):
            b[4], b[5] = v, step
        if b[6] is None or v > b[6] or (v == b[6] and step < b[7]):
            b[6], b[7] = v, step


def _block_upsert(conn: Executor) -> str:
    """Merge a folded block into the stored one, by `fold_block`'s rules (the stored points
    come first). Plain SQL that SQLite and PostgreSQL both run: `excluded` is the new row and
    every SET expression reads the stored row as it was before the statement."""
    t = "batch_blocks"

    def beats(end: str, op: str) -> str:  # of equal values the earlier step stays
        new, old = f"excluded.{end}_value", f"{t}.{end}_value"
        return (
            f"{new} IS NOT NULL AND ({old} IS NULL OR {new} {op} {old}"
            f" OR ({new} = {old} AND excluded.{end}_step < {t}.{end}_step))"
        )

    lower, higher = beats("min", "<"), beats("max", ">")
    later = f"excluded.last_step >= {t}.last_step"

    def take(cond: str, col: str) -> str:
        return f"{col} = CASE WHEN {cond} THEN excluded.{col} ELSE {t}.{col} END"

    return (
        f"INSERT INTO {t} (run_id, key, epoch, block, count, first_step, last_step, last_value,"
        " min_value, min_step, max_value, max_step) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (run_id, key, epoch, block) DO UPDATE SET"
        f" count = {t}.count + excluded.count,"
        f" first_step = CASE WHEN excluded.first_step < {t}.first_step"
        f" THEN excluded.first_step ELSE {t}.first_step END,"
        f" {take(later, 'last_value')}, {take(later, 'last_step')},"
        f" {take(lower, 'min_value')}, {take(lower, 'min_step')},"
        f" {take(higher, 'max_value')}, {take(higher, 'max_step')}"
    )


def discard_epochs(conn: Connection, run_id: str, from_epoch: int) -> int:
    """Delete the run's metric points (epoch and batch level) of `from_epoch` and later, and
    rebuild what was derived from them: its summaries, `epochs_done` and `last_epoch`.

    The summaries are folded again from the epoch-level points that remain, by `_fold_point`,
    so they are exactly what logging those points alone would have left. Returns how many
    epochs (with epoch-level points) were discarded.
    """
    m = tables.metrics.c
    rows = conn.execute(
        select(m.key, m.epoch, m.value)
        .where(m.run_id == run_id, m.step.is_(None))
        .order_by(m.epoch, m.id)
    ).all()
    conn.execute(delete(tables.metrics).where(m.run_id == run_id, m.epoch >= from_epoch))
    bb = tables.batch_blocks.c
    conn.execute(delete(tables.batch_blocks).where(bb.run_id == run_id, bb.epoch >= from_epoch))
    folded: dict[str, dict[str, Any]] = {}
    kept: set[int] = set()
    for key, epoch, value in rows:
        if epoch < from_epoch:
            folded[key] = _fold_point(folded.get(key), run_id, key, epoch, value)
            kept.add(epoch)
    conn.execute(delete(metric_summaries).where(metric_summaries.c.run_id == run_id))
    if folded:
        conn.execute(insert(metric_summaries), list(folded.values()))
    done = conn.execute(
        update(tables.runs)
        .where(tables.runs.c.id == run_id)
        .values(epochs_done=len(kept), last_epoch=max(kept, default=None))
    )
    if done.rowcount == 0:
        raise RunNotFound(f"no run with id {run_id!r}")
    return len({epoch for _, epoch, _ in rows} - kept)


def _nan_as_null(row: dict[str, Any]) -> dict[str, Any]:
    for k in ("first_value", "last_value"):
        row[k] = tables.stored_value(row[k])
    return row


def _fold_point(
    agg: dict[str, Any] | None, run_id: str, key: str, epoch: int, value: float
) -> dict[str, Any]:
    """Summary of the points of one key written together (the database merges it in)."""
    finite = math.isfinite(value)
    if agg is None:
        return {
            "run_id": run_id,
            "key": key,
            "count": 1,
            "first_value": value,
            "first_epoch": epoch,
            "last_value": value,
            "last_epoch": epoch,
            "min_value": value if finite else None,
            "min_epoch": epoch if finite else None,
            "max_value": value if finite else None,
            "max_epoch": epoch if finite else None,
        }
    agg["count"] += 1
    if epoch <= agg["first_epoch"]:
        agg["first_value"], agg["first_epoch"] = value, epoch
    if epoch >= agg["last_epoch"]:
        agg["last_value"], agg["last_epoch"] = value, epoch
    if finite and (agg["min_value"] is None or value < agg["min_value"]):
        agg["min_value"], agg["min_epoch"] = value, epoch
    if finite and (agg["max_value"] is None or value > agg["max_value"]):
        agg["max_value"], agg["max_epoch"] = value, epoch
    return agg


_INSERT_METRICS_SQL = (
    "INSERT INTO metrics (run_id, key, epoch, step, value, time) VALUES (?, ?, ?, ?, ?, ?)"
)
EPOCH_DONE_SQL = (
    "UPDATE runs SET epochs_done = epochs_done + 1, last_epoch = ?, heartbeat_at = ?, "
    "heartbeat_deadline = ? WHERE id = ?"
)


def epoch_done(
    conn: DriverCursor,
    run_id: str,
    epoch: int,
    at: datetime,
    deadline: datetime,
    points: list[MetricPoint],
) -> None:
    """An epoch's write: the run's count of epochs and heartbeat, then its points."""
    result = conn.exec_driver_sql(
        paramstyled(conn, EPOCH_DONE_SQL),
        (epoch, db_time(conn, at), db_time(conn, deadline), run_id),
    )
    # Before the inserts, whose error would only name a key.
    conn.expect_rows(result, RunNotFound(f"no run with id {run_id!r}"))
    insert_points(conn, run_id, points)


def paramstyled(conn: Executor, sql: str) -> str:
    """`sql` written with `?` placeholders, in the driver's own paramstyle."""
    return sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")


def db_time(conn: Executor, when: datetime) -> Any:
    """A timestamp as `UTCDateTime` would bind it: naive UTC text for SQLite, aware otherwise."""
    if when.tzinfo is not timezone.utc:
        when = when.astimezone(timezone.utc)
    if conn.dialect.name == "sqlite":
        # SQLAlchemy's own format; isoformat is cheaper than strftime (one per batch).
        return when.isoformat(" ", "microseconds")[:26]  # without the "+00:00"
    return when


def metric_tuples(conn: Executor, run_id: str, points: list[MetricPoint]) -> list[tuple]:
    times: dict[datetime, Any] = {}
    rows = []
    for p in points:
        t = times.get(p.time)
        if t is None:
            t = times[p.time] = db_time(conn, p.time)
        rows.append((run_id, p.key, p.epoch, p.step, tables.stored_value(p.value), t))
    return rows


_UPSERTS: dict[str, Any] = {}


def _summary_upsert(conn: Executor) -> tuple[str, tuple[str, ...] | None]:
    """INSERT ... ON CONFLICT DO UPDATE that merges a folded summary into the stored one.

    Every SET expression reads the row as it was before the statement, in SQLite and in
    PostgreSQL alike, so the CASEs below see the old first/last/min/max.
    """
    dialect = conn.dialect.name
    if dialect in _UPSERTS:
        return _UPSERTS[dialect]
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite as dialect_module
    else:
        from sqlalchemy.dialects import postgresql as dialect_module  # type: ignore[no-redef]
    table = metric_summaries
    stmt = dialect_module.insert(table)
    new, old = stmt.excluded, table.c

    def take(cond: Any, col: str) -> Any:
        return case((cond, new[col]), else_=old[col])

    first = new.first_epoch <= old.first_epoch
    last = new.last_epoch >= old.last_epoch
    lower = and_(
        new.min_value.is_not(None), or_(old.min_value.is_(None), new.min_value < old.min_value)
    )
    higher = and_(
        new.max_value.is_not(None), or_(old.max_value.is_(None), new.max_value > old.max_value)
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[old.run_id, old.key],
        set_={
            "count": old["count"] + new["count"],
            "first_value": take(first, "first_value"),
            "first_epoch": take(first, "first_epoch"),
            "last_value": take(last, "last_value"),
            "last_epoch": take(last, "last_epoch"),
            "min_value": take(lower, "min_value"),
            "min_epoch": take(lower, "min_epoch"),
            "max_value": take(higher, "max_value"),
            "max_epoch": take(higher, "max_epoch"),
        },
    )
    # Compiled once to the driver's SQL: the statement then runs as a plain executemany.
    compiled = stmt.compile(dialect=conn.dialect)
    names = tuple(compiled.positiontup or ()) if compiled.positional else None
    _UPSERTS[dialect] = (compiled.string, names)
    return _UPSERTS[dialect]
