"""`tracker db upgrade|current|downgrade`: the schema, on a bare engine.

These never open a `Store`: opening one migrates a SQLite file and refuses an old PostgreSQL
schema, which is exactly what these commands are for.
"""

from __future__ import annotations

import click

from tracker.cli.options import App, confirm, emit, format_option, pass_app
from tracker.present import views


@click.group()
def db() -> None:
    """Create, upgrade and inspect the database schema."""


@db.command()
@pass_app
def upgrade(app: App) -> None:
    """Upgrade the schema to the newest revision, creating the tables in an empty database.

    Needed for a PostgreSQL database after upgrading tracker (SQLite files upgrade themselves).

    \b
    Example:
      tracker --db postgresql://tracker@dbhost/tracker db upgrade
    """
    from tracker.store.revisions import check_schema, current_revision

    engine = app.engine()
    before = current_revision(engine)
    check_schema(engine, auto_upgrade=True)
    click.echo(views.upgraded(app.masked_url, before, current_revision(engine)))


@db.command()
@format_option
@pass_app
def current(app: App, fmt: str) -> None:
    """Show the schema revision of the database and whether it is the newest (head).

    JSON: {"url", "revision", "head", "is_head"} (revision is null for an empty database).

    \b
    Example:
      tracker db current --format json
    """
    from tracker.store.revisions import current_revision

    emit(views.db_status(app.masked_url, current_revision(app.engine())), fmt)


@db.command()
@click.argument("revision")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def downgrade(app: App, revision: str, yes: bool) -> None:
    """Downgrade the schema to REVISION (`base` removes every table). This deletes data.

    \b
    Example:
      tracker db downgrade base --yes
    """
    from tracker.store.revisions import current_revision

    engine = app.engine()
    before = current_revision(engine)
    confirm(f"Downgrade {app.masked_url} from {before} to {revision}, dropping data?", yes)
    from tracker.store.migrate import downgrade as run_downgrade

    run_downgrade(engine, revision)
    click.echo(views.downgraded(app.masked_url, before, current_revision(engine)))
