"""Engines, connection settings and the schema check done when a store opens.

SQLite gets WAL (readers never wait for the training process that writes), a busy timeout, foreign
keys, and `BEGIN IMMEDIATE` for write transactions: a deferred transaction that later wants to write
fails at once with "database is locked" when another process holds the lock, whatever the timeout,
while an immediate one waits its turn.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.dialects import registry
from sqlalchemy.exc import DBAPIError

from tracker.config import mask_url
from tracker.errors import DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_S = 60.0
WRITE = "tracker_write"  # execution option: this transaction will write

# psycopg as our engines open it (`engine_url`): loaded, and SQLAlchemy's psycopg dialect with it,
# only when a URL names it.
PSYCOPG, OUR_PSYCOPG = "postgresql+psycopg", "postgresql+tracker_psycopg"
registry.register("postgresql.tracker_psycopg", "tracker.store.postgres", "OneLookPsycopg")


def make_engine(
    url: str, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT_S, pre_ping: bool = True
) -> Engine:
    """An engine for `url` with the settings the store relies on.

    `pre_ping` tests a pooled connection before each use (one round trip to a server), so that
    a server restarted since fails no statement; a writer that retries failed writes (the
    training recorder) goes without it."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, busy_timeout)
    try:
        engine = create_engine(engine_url(url), pool_pre_ping=pre_ping, **_server_options(url))
    except ModuleNotFoundError as e:
        raise DatabaseUnavailable(
            f"cannot open {mask_url(url)}: driver {e.name!r} is not installed "
            "(pip install 'tracker[postgres]')"
        ) from e
    if engine.dialect.driver in ("psycopg", "psycopg2"):
        _first_look_outside_a_transaction(engine)
    return engine


def load_dialect(url: str) -> None:
    """Import the SQLAlchemy dialect of `url` (nothing when it cannot be: opening says why).

    Not its driver: psycopg imported before Keras first serialises the model (the run's facts,
    in the training thread) makes that serialisation's type checks many times slower."""
    with contextlib.suppress(Exception):
        engine_url(url).get_dialect()


def engine_url(url: str) -> URL:
    """`url` as our engines open it: psycopg through `postgres.OneLookPsycopg`."""
    parsed = make_url(url)
    if parsed.drivername == PSYCOPG:
        return parsed.set(drivername=OUR_PSYCOPG)
    return parsed


def _server_options(url: str) -> dict[str, Any]:
    """`create_engine` options for a database server. No native hstore: the schema has none,
    and looking the type up costs a new connection three round trips."""
    if not url.startswith("postgresql"):
        return {}
    options: dict[str, Any] = {"connect_args": {"connect_timeout": 10}}
    if make_url(url).get_driver_name() in ("psycopg", "psycopg2"):
        options["use_native_hstore"] = False
    return options


def _first_look_outside_a_transaction(engine: Engine) -> None:
    """SQLAlchemy's first look at a new server (its version, schema, isolation level) reads
    settings only: asked in autocommit it needs no BEGIN before and no ROLLBACK after, two round
    trips fewer in every process's first connection, which a distant database makes long.

    The driver's own autocommit flag is set on the new connection before SQLAlchemy's handlers
    run and cleared after them; connections never leave the pool in autocommit."""

    @event.listens_for(engine, "connect", insert=True)
    def _before(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.autocommit = True

    @event.listens_for(engine, "connect")
    def _after(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.autocommit = False


def _sqlite_engine(url: str, busy_timeout: float) -> Engine:
    engine = create_engine(url, connect_args={"timeout": busy_timeout})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below, not the driver, decide when transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        _use_wal(cur, busy_timeout)
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _use_wal(cur: Any, busy_timeout: float) -> None:
    """Put the file in WAL mode (it stays so: later connections only read it). Switching needs
    the file to itself, and SQLite refuses at once, without its busy timeout, while another
    process writes it: as when several processes open a new database together and one of them
    is creating the schema. So the switch is tried again until the busy timeout has passed."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def unavailable_message(engine: Engine, e: DBAPIError) -> str:
    reason = str(e.orig).strip().splitlines()[0] if e.orig else type(e).__name__
    shown = engine.url
    if shown.drivername == OUR_PSYCOPG:
        shown = shown.set(drivername=PSYCOPG)
    url = mask_url(shown.render_as_string(hide_password=False))
    return f"cannot use database {url}: {reason}"


def wrap_db_error(engine: Engine, e: DBAPIError) -> DatabaseUnavailable:
    return DatabaseUnavailable(unavailable_message(engine, e))
