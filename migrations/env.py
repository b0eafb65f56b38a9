"""Alembic environment. From code, the connection arrives in `config.attributes["connection"]`
(already inside the caller's locked transaction); from the `alembic` command line in the repository,
the URL comes from `tracker.config` (`TRACKER_DB_URL` or the default SQLite file)."""

from alembic import context

from tracker.config import resolve_url
from tracker.store.db import make_engine
from tracker.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(resolve_url(config.get_main_option("sqlalchemy.url") or None))
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_migrations_online()
