"""`tracker sync`: push runs that the callback spooled while the database was away."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tracker.cli.options import App, pass_app

if TYPE_CHECKING:
    from tracker.store.run_store import Store
    from tracker.store.transfer import ImportResult
    from tracker.uploads import UploadReport


@click.command()
@click.argument("spool", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--prune", is_flag=True, help="Delete each run from the spool once it is synced.")
@click.option(
    "--all",
    "to_all",
    is_flag=True,
    help="Push every run to the database it was meant for, not only to --db's.",
)
@pass_app
def sync(app: App, spool: Path | None, prune: bool, to_all: bool) -> None:
    """Push the runs kept in a spool file into the database they were meant for.

    The callback writes to a local spool file (an ordinary tracker SQLite database, named in
    its warning) when the database cannot be reached, and notes for each run which database
    it was meant for. `tracker sync` pushes the runs meant for the database it is given (and
    those spooled by an older tracker, which noted none), then names the other databases
    waiting for runs, with the command for each. `--all` pushes every run to its own
    database: reached with --db, $TRACKER_DB_URL, or its URL (stored without password) with
    the password from libpq's usual sources (PGPASSWORD, ~/.pgpass, PGSERVICE and its
    service file); it names those it could not reach and exits 1.

    Syncing is idempotent: running it twice, or again after an interrupted sync, adds only
    what is missing. SPOOL defaults to $TRACKER_SPOOL, else ~/.cache/tracker/spool.db. Read a
    spool directly with `tracker --db sqlite:///SPOOL runs list`.

    It then finishes the checkpoint uploads to the artifact store that runs of each database
    it pushed into left unfinished (their process was killed), from the files still intact on
    this machine.

    \b
    Examples:
      tracker sync
      tracker --db postgresql://tracker@dbhost/tracker sync ~/.cache/tracker/spool.db --prune
      tracker sync --all --prune
    """
    from tracker.store import spool as spool_mod  # `spool` is the argument

    path = spool or spool_mod.default_spool_path()
    if to_all:
        from tracker.uploads import finish_uploads

        uploads: list[UploadReport] = []
        done = spool_mod.sync_all(
            path, app.url, prune=prune, then=lambda db: uploads.append(finish_uploads(db))
        )
        for (url, result), finished in zip(done.pushed, uploads, strict=True):
            click.echo(_synced(path, url, result))
            _say_uploads(finished)
        for group, reason in done.unreached:
            click.echo(
                f"could not reach {group.url} ({reason}): {len(group.run_ids)} runs stay in "
                f"the spool; push them with: {group.command(path)}",
                err=True,
            )
        if done.unreached:
            raise SystemExit(1)
        return
    store = app.store()
    if spool is None and not path.is_file():
        click.echo(f"no spool file at {path}: no spooled runs to push")
        _finish_uploads(store)
        return
    click.echo(_synced(path, store.masked_url, spool_mod.sync(path, store, prune=prune)))
    for group in spool_mod.elsewhere(path, store):
        click.echo(
            f"{len(group.run_ids)} runs in the spool are meant for {group.url}; push them "
            f"with: {group.command(path)}"
        )
    _finish_uploads(store)


def _finish_uploads(store: Store) -> None:
    """The checkpoint uploads to the artifact store that a run left unfinished (its process was
    killed, or the store was away), finished from the files still intact on this machine."""
    from tracker.uploads import finish_uploads

    _say_uploads(finish_uploads(store))


def _say_uploads(uploads: UploadReport) -> None:
    if uploads.uploaded or uploads.problems:
        click.echo(f"finished {uploads.uploaded} pending checkpoint upload(s)")
    for problem in uploads.problems:
        click.echo(f"upload not finished: {problem}", err=True)


def _synced(path: Path, url: str, result: ImportResult) -> str:
    return (
        f"synced {path} into {url}: {result.runs_created} new runs, "
        f"{result.runs_updated} runs completed, {result.points} metric points, "
        f"{result.checkpoints} checkpoints added"
    )
