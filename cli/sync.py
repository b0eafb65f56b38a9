"""`tracker sync`: push runs that the callback spooled while the database was away."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from tracker.cli.options import pass_store

if TYPE_CHECKING:
    from tracker.store import Store


@click.command()
@click.argument("spool", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--prune", is_flag=True, help="Delete each run from the spool once it is synced.")
@pass_store
def sync(store: Store, spool: Path | None, prune: bool) -> None:
    """Push the runs kept in a spool file into the database.

    The callback writes to a local spool file (an ordinary tracker SQLite database, named in
    its warning) when the database cannot be reached. Syncing is idempotent: running it twice,
    or again after an interrupted sync, adds only what is missing. SPOOL defaults to
    $TRACKER_SPOOL, else ~/.cache/tracker/spool.db. Read a spool directly with
    `tracker --db sqlite:///SPOOL runs list`. Then the checkpoint uploads to the artifact store
    that a run left unfinished (its process was killed) are finished from the files still
    intact on this machine.

    \b
    Examples:
      tracker sync
      tracker --db postgresql://tracker@dbhost/tracker sync ~/.cache/tracker/spool.db --prune
    """
    from tracker.sync import default_spool_path
    from tracker.sync import sync as run_sync

    path = spool or default_spool_path()
    if spool is None and not path.is_file():
        click.echo(f"no spool file at {path}: no spooled runs to push")
    else:
        result = run_sync(path, store, prune=prune)
        click.echo(
            f"synced {path} into {store.masked_url}: {result.runs_created} new runs, "
            f"{result.runs_updated} runs completed, {result.points} metric points, "
            f"{result.checkpoints} checkpoints added"
        )

    # Uploads to the artifact store that a run left unfinished (killed, or the store was away).
    from tracker.artifacts import finish_uploads

    uploads = finish_uploads(store)
    if uploads.uploaded or uploads.problems:
        click.echo(f"finished {uploads.uploaded} pending checkpoint upload(s)")
    for problem in uploads.problems:
        click.echo(f"upload not finished: {problem}", err=True)
