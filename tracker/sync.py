"""`tracker sync`: push runs kept in a local spool file into the real database.

The spool is an ordinary tracker SQLite database (the CLI reads it with `--db sqlite:///...`),
written by the callback when the real database could not be reached.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tracker.errors import TrackerError
from tracker.store import Store, open_store
from tracker.transfer import ImportResult

SPOOL_ENV_VAR = "TRACKER_SPOOL"


def default_spool_path() -> Path:
    """`TRACKER_SPOOL`, else `$XDG_CACHE_HOME/tracker/spool.db` (`~/.cache/tracker/spool.db`)."""
    if env := os.environ.get(SPOOL_ENV_VAR):
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tracker" / "spool.db"


def sync(
    spool: str | os.PathLike[str],
    target: Store,
    *,
    prune: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ImportResult:
    """Import every run of the spool into `target`, one transaction per run.

    Running it again, or after an interrupted sync, adds only what is missing. With `prune`, a
    run is deleted from the spool once it is safely in `target`.
    """
    path = Path(spool).expanduser().resolve()
    if not path.is_file():
        raise TrackerError(f"no spool file at {path}")
    if target.url == f"sqlite:///{path}":
        raise TrackerError("the spool and the target database are the same file")
    total = ImportResult()
    with open_store(f"sqlite:///{path}") as source:
        for run_id in source.run_ids():
            result = target.import_runs([source.export_run(run_id)])
            total.runs_created += result.runs_created
            total.runs_updated += result.runs_updated
            total.points += result.points
            total.checkpoints += result.checkpoints
            if prune:
                source.delete_runs([run_id])
            if progress is not None:
                progress(run_id)
    return total
