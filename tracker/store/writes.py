"""Write helpers of the store, each working inside the caller's connection (and so its transaction).

`fold` keeps a metric's summary (first, last, min, max) in step with the rows written in the
same transaction; rankings read the summary and never the history. Every JSON value (params,
tags, the run's JSON columns) is passed through `values.plain` on its way in, here or in `Store`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Dialect, Table, delete, insert, select, update
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
def driver_transaction(
    raw: Any, dialect: Dialect, *, one_statement: bool = False
) -> Iterator[DriverCursor]:
    """One write transaction on the pooled DBAPI connection `raw`, committed on leaving;
    pipelined on PostgreSQL through psycopg 3 (`PipelinedCursor`). The caller rolls back or
    discards the connection when this raises.

    A body of `one_statement` runs it in autocommit there instead: a statement is a transaction
    by itself, and a pipeline's machinery would be most of the driver's work (and so of the
    interpreter time the writer thread takes from training at every epoch's end)."""
    if one_statement and _pipelines(raw, dialect):
        driver = raw.driver_connection
        driver.autocommit = True
        try:
            with driver.cursor() as cursor:
                yield DriverCursor(cursor, dialect)
        finally:
            driver.autocommit = False  # as the pool hands it out
        return
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
    """Points of several runs at once: three `executemany` calls at most, whatever the count.

    This is the bulk path of imports and of batch points, so the metric rows go to the driver
    as plain tuples, converted here the way the models' column types would (NaN as NULL, UTC
    times), and the summaries cost one upsert.
    """
    rows, summaries, blocks = _prepared(conn, runs)
    if rows:
        conn.exec_driver_sql(paramstyled(conn, _METRICS.values()), rows)
    if summaries:
        conn.exec_driver_sql(paramstyled(conn, _SUMMARIES.values()), summaries)
    if blocks:
        conn.exec_driver_sql(paramstyled(conn, _BLOCKS.values()), blocks)


def _prepared(
    conn: Executor, runs: list[tuple[str, list[MetricPoint]]]
) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """The metric rows, the summaries folded from the epoch-level points and the blocks folded
    from the batch points, as tuples in the order of the columns of `_METRICS`, `_SUMMARIES` and
    `_BLOCKS`."""
    rows: list[tuple] = []
    summaries: list[tuple] = []
    blocks: dict[tuple[str, str, int, int], list[Any]] = {}
    for run_id, points in runs:
        rows += metric_tuples(conn, run_id, points)
        by_key: dict[str, dict[str, Any]] = {}
        for p in points:
            if p.step is None:
                by_key[p.key] = _fold_point(by_key.get(p.key), run_id, p.key, p.epoch, p.value)
            else:
                fold_block(blocks, run_id, p.key, p.epoch, p.step, p.value)
        summaries += [_summary_tuple(f) for f in by_key.values()]
    return rows, summaries, [(*k, *v) for k, v in blocks.items()]


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


class _Rows:
    """A table's columns as the store writes them (all but an autoincrement id, in the table's
    order), and for an upsert its conflict target and SET clause: plain SQL that SQLite and
    PostgreSQL both run, where `t` is the stored row as it was before the statement and
    `excluded` the new one. (Short names: the driver caches what it makes of a statement only
    up to a length.)"""

    def __init__(self, table: Table, key: str = "", sets: str = "") -> None:
        self.table, self.key, self.sets = table.name, key, sets
        self._written = [c for c in table.columns if c is not table.autoincrement_column]
        self.columns = tuple(c.name for c in self._written)

    def insert(self, source: str) -> str:
        """INSERT of the rows `source` gives (VALUES or a SELECT), merged into the stored ones
        when the table has a conflict target."""
        sql = f"INSERT INTO {self.table} AS t ({', '.join(self.columns)}) {source}"
        return f"{sql} ON CONFLICT ({self.key}) DO UPDATE SET {self.sets}" if self.key else sql

    def values(self) -> str:
        return self.insert(f"VALUES ({', '.join('?' * len(self.columns))})")

    def unnested(self) -> str:
        """The INSERT of one array per column but the run's id, with the id of the statement's
        `run`: none when the run does not exist. Metric points in the arrays' order (their ids
        follow it)."""
        from sqlalchemy.dialects import postgresql  # only once a PostgreSQL store writes

        pg = postgresql.dialect()
        arrays = ", ".join(f"%s::{c.type.compile(dialect=pg)}[]" for c in self._written[1:])
        if self.key:
            return self.insert(f"SELECT run.id, u.* FROM run, unnest({arrays}) AS u")
        names = ", ".join(self.columns[1:])
        return self.insert(
            f"SELECT run.id, {names} FROM run,"
            f" unnest({arrays}) WITH ORDINALITY AS u({names}, n) ORDER BY n"
        )


def _take(cond: str, col: str) -> str:
    """`col` of the new row where `cond` holds, else the stored row's (`t`: see `_Rows`)."""
    return f"{col} = CASE WHEN {cond} THEN excluded.{col} ELSE t.{col} END"


def _beats(end: str, op: str, by: str) -> str:
    """The new `end` value (min or max) replaces the stored one: it is a value, and lower
    (higher); of equal values the one at the earlier `by` (step) stays, when `by` is given."""
    new, old = f"excluded.{end}_value", f"t.{end}_value"
    tie = f" OR ({new} = {old} AND excluded.{end}_{by} < t.{end}_{by})" if by else ""
    return f"{new} IS NOT NULL AND ({old} IS NULL OR {new} {op} {old}{tie})"


def _summary_merge() -> _Rows:
    """A folded summary (`_fold_point`) merged into the stored one: the new first (last) point
    wins at an earlier-or-equal (later-or-equal) epoch, min and max by value."""
    first, last = "excluded.first_epoch <= t.first_epoch", "excluded.last_epoch >= t.last_epoch"
    lower, higher = _beats("min", "<", ""), _beats("max", ">", "")
    sets = ["count = t.count + excluded.count"]
    sets += [_take(first, c) for c in ("first_value", "first_epoch")]
    sets += [_take(last, c) for c in ("last_value", "last_epoch")]
    sets += [_take(lower, c) for c in ("min_value", "min_epoch")]
    sets += [_take(higher, c) for c in ("max_value", "max_epoch")]
    return _Rows(metric_summaries, "run_id, key", ", ".join(sets))


def _block_merge() -> _Rows:
    """A folded block merged into the stored one, by `fold_block`'s rules (the stored points
    come first)."""
    lower, higher = _beats("min", "<", "step"), _beats("max", ">", "step")
    later = "excluded.last_step >= t.last_step"
    sets = [
        "count = t.count + excluded.count",
        "first_step = CASE WHEN excluded.first_step < t.first_step"
        " THEN excluded.first_step ELSE t.first_step END",
    ]
    sets += [_take(later, c) for c in ("last_value", "last_step")]
    sets += [_take(lower, c) for c in ("min_value", "min_step")]
    sets += [_take(higher, c) for c in ("max_value", "max_step")]
    return _Rows(tables.batch_blocks, "run_id, key, epoch, block", ", ".join(sets))


_METRICS = _Rows(tables.metrics)
_SUMMARIES, _BLOCKS = _summary_merge(), _block_merge()


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


def _summary_tuple(folded: dict[str, Any]) -> tuple:
    """A folded summary as a row of `_SUMMARIES`, NaN as NULL."""
    nulls = {k: tables.stored_value(folded[k]) for k in ("first_value", "last_value")}
    return tuple(nulls[c] if c in nulls else folded[c] for c in _SUMMARIES.columns)


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
    missing = RunNotFound(f"no run with id {run_id!r}")
    head = (epoch, db_time(conn, at), db_time(conn, deadline), run_id)
    if conn.dialect.name == "postgresql":
        rows, summaries, blocks = _prepared(conn, [(run_id, points)])
        arrays = [
            *_arrays(rows, _METRICS),
            *_arrays(summaries, _SUMMARIES),
            *_arrays(blocks, _BLOCKS),
        ]
        conn.expect_rows(conn.exec_driver_sql(_epoch_statement(), (*head, *arrays)), missing)
        return
    result = conn.exec_driver_sql(paramstyled(conn, EPOCH_DONE_SQL), head)
    # Before the inserts, whose error would only name a key.
    conn.expect_rows(result, missing)
    insert_points(conn, run_id, points)


def _arrays(rows: list[tuple], of: _Rows) -> list[list[Any]]:
    """The columns of `rows` but the first (the run's id, which the statement has), as lists."""
    if not rows:
        return [[] for _ in of.columns[1:]]
    return [list(c) for c in zip(*rows, strict=True)][1:]


@functools.cache
def _epoch_statement() -> str:
    """On PostgreSQL an epoch's write is this one statement: in autocommit it is a transaction
    by itself, with no BEGIN or COMMIT to send, and the driver does the least work a write can.
    When the run does not exist, its UPDATE changes no row, nothing is inserted and no row
    comes back."""
    return (
        "WITH run AS (UPDATE runs SET epochs_done = epochs_done + 1, last_epoch = %s,"
        " heartbeat_at = %s, heartbeat_deadline = %s WHERE id = %s RETURNING id),"
        f" points AS ({_METRICS.unnested()}),"
        f" summaries AS ({_SUMMARIES.unnested()}),"
        f" blocks AS ({_BLOCKS.unnested()})"
        " SELECT id FROM run"
    )


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
