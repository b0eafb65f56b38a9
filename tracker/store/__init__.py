"""The run store: the schema (`tables`, typed rows in `models`), the engine and its migrations
(`db`, `revisions`, `migrate`), the statements (`queries`, `listing` and `series_reads` read;
`writes` and `run_writes` write), the transactions they run in (`transactions`), the `Store` that
is their public surface (`run_store`), and moving whole runs between stores (`transfer`, and
`spool` for the callback's local spool file).

Nothing here imports training, the CLI or the web UI. `Store` and `open_store` are loaded on first
use, so importing `tracker.store.tables` (as migrations do) does not open the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracker.store.run_store import Store, open_store

__all__ = ["Store", "open_store"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tracker.store import run_store

        return getattr(run_store, name)
    raise AttributeError(f"module 'tracker.store' has no attribute {name!r}")
