"""Running the shipped alembic migrations from code (`tracker db upgrade`, first use of a database).

All of a migration runs in one transaction that first takes a lock (SQLite: `BEGIN IMMEDIATE`;
PostgreSQL: an advisory lock), and the revision is read again once the lock is held, so two
processes opening a new database at the same moment migrate it once.
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from tracker.store.db import WRITE

_PG_LOCK_KEY = 0x7472_6163_6B65  # "tracke": any constant shared by all tracker processes


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("tracker.migrations")))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_heads() -> tuple[str, ...]:
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def script_revisions() -> list[str]:
    """Every shipped revision, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def _locked(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
        _locked(conn)
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.connect().execution_options(**{WRITE: True}) as conn, conn.begin():
        _locked(conn)
        command.downgrade(alembic_config(conn), revision)
