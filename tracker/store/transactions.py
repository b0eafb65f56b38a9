"""How the store opens its transactions: reads, SQLAlchemy writes, the driver-cursor write of
the per-epoch hot path, ORM writes for moving runs, and the retry when SQLite reports a lock.

`Store` owns one `Transactions` and runs every public method in exactly one of them; the
statements themselves (`queries`, `writes`, `run_writes`, `transfer`) take the connection as an
argument and never open their own.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from tracker.store.db import WRITE, wrap_db_error
from tracker.store.writes import DriverCursor, driver_transaction

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

T = TypeVar("T")

LOCK_RETRIES = 2  # busy_timeout already waits; one more try covers a checkpoint race


class Transactions:
    """The transactions of one engine. Writes go through an engine marked `WRITE`, which
    `tracker.store.db` turns into SQLite's `BEGIN IMMEDIATE` (wait for the write lock up front)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(**{WRITE: True})

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction; with `snapshot`, every statement in it sees the same data on
        PostgreSQL too (REPEATABLE READ; SQLite's transactions always do)."""
        try:
            with self.engine.connect() as conn:
                if snapshot and conn.dialect.name == "postgresql":
                    conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except DBAPIError as e:
            if isinstance(e, IntegrityError):
                raise
            raise wrap_db_error(self.engine, e) from e

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction on a SQLAlchemy connection: committed on success."""
        with self._write_engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def driver_write(self, *, one_statement: bool = False) -> Iterator[DriverCursor]:
        """The per-epoch hot path: the driver's own cursor in a write transaction, which costs
        less than a SQLAlchemy Connection for the same statements (bench/RESULTS.md, section 9);
        this runs between the training steps. Driver errors come out as SQLAlchemy's, like every
        other method's. With `one_statement`, the body runs one statement (on PostgreSQL; see
        `driver_transaction`)."""
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            raw = self.engine.raw_connection()  # unlike connect(), it leaves driver errors bare
        except dbapi.Error as e:
            raise DBAPIError.instance(None, None, e, dbapi.Error) from e
        try:
            with driver_transaction(raw, self.engine.dialect, one_statement=one_statement) as conn:
                yield conn
        except dbapi.Error as e:
            raw.invalidate()  # whatever state it is in, the pool gets a fresh one
            raise DBAPIError.instance(None, None, e, dbapi.Error) from e
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()

    @contextmanager
    def orm_write(self) -> Iterator[Session]:
        """A write transaction on an ORM session (only moving whole runs uses one)."""
        from sqlalchemy.orm import Session

        with Session(self._write_engine, expire_on_commit=False) as s, s.begin():
            yield s

    def run(
        self, fn: Callable[[Any], T], opens: Callable[[], AbstractContextManager[Any]] | None = None
    ) -> T:
        """`fn(conn)` in one write transaction that `opens` makes (`write` without it), the
        whole transaction tried again while SQLite reports a lock held past its timeout.
        Database errors other than an integrity error come out as a `TrackerError` that says
        which database failed."""
        opener = opens or self.write
        for attempt in range(LOCK_RETRIES):
            try:
                with opener() as conn:
                    return fn(conn)
            except OperationalError as e:
                locked = "locked" in str(e.orig) or "busy" in str(e.orig)
                if not locked or attempt == LOCK_RETRIES - 1:
                    raise wrap_db_error(self.engine, e) from e
                time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
            except DBAPIError as e:
                if isinstance(e, IntegrityError):
                    raise
                raise wrap_db_error(self.engine, e) from e
        raise AssertionError("unreachable")
