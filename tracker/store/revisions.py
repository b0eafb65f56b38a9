"""The schema revisions this package knows, and the check that a database is at the head one.

The list lets opening a store check the database's revision without loading alembic or the
migration scripts (query commands stay fast); alembic is loaded (`tracker.store.migrate`) only
when there is an upgrade to run. A test keeps this list equal to the revisions in
`migrations/versions`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from tracker.errors import DatabaseUnavailable, SchemaOutOfDate, SchemaTooNew
from tracker.store.db import unavailable_message

KNOWN_REVISIONS: tuple[str, ...] = ("0001", "0002", "0003", "0004", "0005")
HEAD = KNOWN_REVISIONS[-1]


def current_revision(engine: Engine) -> str | None:
    """The database's alembic revision, read with plain SQL; None for an empty database."""
    return _revision_and_identity(engine)[0]


def _has_version_table(conn: Any) -> bool:
    if conn.dialect.name == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
    else:
        sql = (
            "SELECT 1 FROM information_schema.tables WHERE table_name='alembic_version' "
            "AND table_schema = current_schema()"
        )
    return conn.execute(text(sql)).first() is not None


def check_schema(engine: Engine, *, auto_upgrade: bool) -> str | None:
    """Make sure the database is at our head revision, upgrading it when that is safe, and
    return its identity (None only if someone deleted it).

    An empty database is always migrated (it is new and nobody else depends on it). An older
    SQLite database is upgraded because the file belongs to this user; an older PostgreSQL database
    may be shared with machines running an older tracker, so we stop and name the command instead.
    """
    rev, identity = _revision_and_identity(engine)
    if rev == HEAD:
        return identity
    if rev is not None and rev not in KNOWN_REVISIONS:
        raise SchemaTooNew(
            f"database schema revision {rev!r} is newer than this tracker knows (head {HEAD!r}); "
            "upgrade the tracker package"
        )
    if rev is not None and not auto_upgrade:
        raise SchemaOutOfDate(
            f"database schema is at revision {rev!r}, this tracker needs {HEAD!r}: "
            "run `tracker db upgrade`"
        )
    from tracker.store.migrate import upgrade  # alembic is loaded only when there is work for it

    upgrade(engine, "head")
    return _revision_and_identity(engine)[1]


def _revision_and_identity(engine: Engine) -> tuple[str | None, str | None]:
    """The revision and, at the head revision, the identity, on one connection.

    A database at the head revision (every open but the first) answers one query, outside any
    transaction on a server: through a distant link each statement, `BEGIN` and `ROLLBACK`
    included, is a round trip that a process's first `fit` waits for. An empty or older database
    fails it (a table is missing) and is read step by step."""
    try:
        with engine.connect() as conn:
            if conn.dialect.name != "sqlite":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                rev, identity = conn.execute(text(_AT_HEAD)).one()
            except (ProgrammingError, OperationalError):  # no such table: empty or older
                if not _has_version_table(conn):
                    return None, None
                rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                identity = None
            if rev != HEAD:
                return rev, None
    except DBAPIError as e:
        raise DatabaseUnavailable(unavailable_message(engine, e)) from e
    return rev, identity


# Both tables exist from the revision that made the identity on: one statement reads both.
_AT_HEAD = "SELECT (SELECT version_num FROM alembic_version), (SELECT id FROM database_identity)"
