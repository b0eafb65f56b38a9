"""`tracker sync`: push runs kept in a local spool file into the databases they were meant for.

The spool is an ordinary tracker SQLite database (the CLI reads it with `--db sqlite:///...`),
written by the callback when the real database could not be reached. It notes, for each run, the
database the run was meant for (`Store.set_destination`): that database's identity when the
recorder had reached it at least once, and its URL without the password. A run spooled by an
older tracker has no such note and goes wherever sync is pointed, as it always did.

Each run is imported in one transaction and, with `prune`, deleted from the spool only once that
transaction has committed: a sync that is killed half-way and run again adds only what is missing.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from tracker.config import ENV_VAR, mask_url, password_free, same_database
from tracker.errors import TrackerError
from tracker.records import RunDestination
from tracker.store.run_store import Store, open_store
from tracker.store.transfer import ImportResult

SPOOL_ENV_VAR = "TRACKER_SPOOL"


def default_spool_path() -> Path:
    """`TRACKER_SPOOL`, else `$XDG_CACHE_HOME/tracker/spool.db` (`~/.cache/tracker/spool.db`)."""
    if env := os.environ.get(SPOOL_ENV_VAR):
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tracker" / "spool.db"


@dataclass(frozen=True)
class Elsewhere:
    """Runs of a spool meant for another database than the one sync was given."""

    url: str  # without password
    database_id: str | None  # None: that database was never reached; its URL is all we know
    run_ids: list[str]

    def command(self, spool: Path) -> str:
        """The command that pushes these runs (credentials from libpq's usual sources)."""
        return f"tracker --db {shlex.quote(self.url)} sync {shlex.quote(str(spool))}"


@dataclass
class AllResult:
    """What `sync_all` did: per database reached, its masked URL and what was imported; the
    runs whose database could not be reached, each group with the reason."""

    pushed: list[tuple[str, ImportResult]] = field(default_factory=list)
    unreached: list[tuple[Elsewhere, str]] = field(default_factory=list)


def sync(
    spool: str | os.PathLike[str],
    target: Store,
    *,
    prune: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ImportResult:
    """Import the spool's runs meant for `target` (and those with no destination noted) into
    `target`, one transaction per run; the others stay in the spool (`elsewhere` names them).

    Running it again, or after an interrupted sync, adds only what is missing. With `prune`, a
    run is deleted from the spool once it is safely in `target`.
    """
    with _open_spool(spool, target.url) as source:
        mine = [r for r, d in source.destinations().items() if _meant_for(d, target)]
        return _push(source, target, mine, prune, progress)


def elsewhere(spool: str | os.PathLike[str], target: Store) -> list[Elsewhere]:
    """The spool's runs meant for other databases than `target`, one group per database."""
    with _open_spool(spool, target.url) as source:
        return _groups(
            {r: d for r, d in source.destinations().items() if not _meant_for(d, target)}
        )


def sync_all(
    spool: str | os.PathLike[str],
    url: str,
    *,
    prune: bool = False,
    credentials: Iterable[str] | None = None,
    then: Callable[[Store], None] | None = None,
) -> AllResult:
    """Push every run of the spool to its own database: the runs meant for the database at
    `url` (and those with no destination noted) there, every other group to the database it
    names. A database that cannot be reached, `url`'s included, stops only its own runs.

    A database is reached through `url`, then each URL of `credentials` (by default
    `TRACKER_DB_URL`) that reaches it, then its stored URL, whose missing password libpq finds
    where it usually does (`PGPASSWORD`, `~/.pgpass`, a service file). A database known by
    identity must show that identity; one known only by URL is whatever that URL reaches.
    `then` is called with each database runs were pushed into, while it is still open.
    """
    if credentials is None:
        credentials = [env] if (env := os.environ.get(ENV_VAR)) else []
    out = AllResult()
    with _open_spool(spool, url) as source, ExitStack() as stack:
        dests = source.destinations()
        opened = _Opener(stack, source.url)
        target = opened.open(url)
        if isinstance(target, Store):
            mine = [r for r, d in dests.items() if _meant_for(d, target)]
            out.pushed.append((target.masked_url, _push(source, target, mine, prune)))
            if then is not None:
                then(target)
        else:
            mine = [r for r, d in dests.items() if d is None]
            if mine:
                out.unreached.append((Elsewhere(password_free(url), None, mine), target))
        taken = set(mine)
        others = _groups({r: d for r, d in dests.items() if r not in taken})
        for group in others:
            reached, reason = opened.find(group, [*credentials, group.url])
            if reached is None:
                out.unreached.append((group, reason))
                continue
            out.pushed.append((reached.masked_url, _push(source, reached, group.run_ids, prune)))
            if then is not None:
                then(reached)
    return out


def _open_spool(spool: str | os.PathLike[str], target_url: str) -> Store:
    path = Path(spool).expanduser().resolve()
    if not path.is_file():
        raise TrackerError(f"no spool file at {path}")
    if same_database(target_url, f"sqlite:///{path}"):
        raise TrackerError("the spool and the target database are the same file")
    return open_store(f"sqlite:///{path}")  # a spool of an older schema is upgraded here


def _meant_for(dest: RunDestination | None, target: Store) -> bool:
    if dest is None:
        return True  # spooled by a tracker that noted no destination: today's behaviour
    if dest.database_id is not None:
        return dest.database_id == target.identity
    return same_database(dest.url, target.url)


def _groups(dests: dict[str, RunDestination | None]) -> list[Elsewhere]:
    """Runs grouped by database: by identity where it is known, else by URL (its spellings
    taken as one)."""
    groups: list[Elsewhere] = []
    for run_id, dest in dests.items():
        assert dest is not None  # runs without a destination are always meant for the target
        for g in groups:
            if _same_group(g, dest):
                g.run_ids.append(run_id)
                break
        else:
            groups.append(Elsewhere(dest.url, dest.database_id, [run_id]))
    return groups


def _same_group(group: Elsewhere, dest: RunDestination) -> bool:
    if group.database_id is not None or dest.database_id is not None:
        return group.database_id == dest.database_id
    return same_database(group.url, dest.url)


def _push(
    source: Store,
    target: Store,
    run_ids: list[str],
    prune: bool,
    progress: Callable[[str], None] | None = None,
) -> ImportResult:
    total = ImportResult()
    for run_id in run_ids:
        result = target.import_runs([source.export_run(run_id)])  # committed on return
        total.runs_created += result.runs_created
        total.runs_updated += result.runs_updated
        total.points += result.points
        total.checkpoints += result.checkpoints
        if prune:
            source.delete_runs([run_id])
        if progress is not None:
            progress(run_id)
    return total


class _Opener:
    """Stores opened by `sync_all`, each URL tried once, closed with `stack`."""

    def __init__(self, stack: ExitStack, spool_url: str) -> None:
        self._stack = stack
        self._spool_url = spool_url
        self._tried: dict[str, Store | str] = {}

    def find(self, group: Elsewhere, urls: list[str]) -> tuple[Store | None, str]:
        """The first of `urls` that reaches `group`'s database, or None and why not."""
        reason = "no URL to try"
        for url in urls:
            if group.database_id is None and not same_database(url, group.url):
                continue  # known by URL only: only that URL (with any password) will do
            got = self.open(url)
            if isinstance(got, str):
                reason = got
            elif group.database_id is None or got.identity == group.database_id:
                return got, ""
            elif same_database(url, group.url):
                reason = (
                    f"it now holds another tracker database (identity {got.identity}, the runs "
                    f"were meant for {group.database_id})"
                )
        return None, reason

    def open(self, url: str) -> Store | str:
        """The store at `url`, or why it could not be opened."""
        if url not in self._tried:
            self._tried[url] = self._connect(url)
        return self._tried[url]

    def _connect(self, url: str) -> Store | str:
        if same_database(url, self._spool_url):
            return "it is the spool file itself"
        try:
            return self._stack.enter_context(open_store(url))
        except (TrackerError, SQLAlchemyError, OSError) as e:
            lines = str(getattr(e, "orig", None) or e).strip().splitlines() or [type(e).__name__]
            return mask_url(lines[0])
