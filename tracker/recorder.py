"""Writes one run to the store on behalf of the callback, and never lets a store failure stop
training.

Every write goes through `call`: when the database cannot be reached or written, the first failure
is reported once as a warning, the write is kept in memory, and kept writes are replayed in order
before the next one, so a database that comes back receives the whole run. The heartbeat thread
lives here too; it also watches that `fit` is still running, because Keras calls no hook when
`fit` dies of an exception it did not route through the callbacks.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from tracker.config import mask_url
from tracker.errors import DatabaseUnavailable
from tracker.store import Store, open_store


def _transient(e: Exception) -> bool:
    """Failures a later retry can cure: the database is away, locked or full."""
    return isinstance(e, (DatabaseUnavailable, OperationalError, InterfaceError, OSError))


class RunRecorder:
    def __init__(self, url: str | None, store: Store | None = None) -> None:
        self._url = url
        self._store = store
        self._owns_store = store is None
        self._pending: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._lock = threading.RLock()
        self._warned = False
        self.busy = False  # a write is under way on the main thread (see the signal guard)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _open(self) -> Store:
        if self._store is None:
            self._store = open_store(self._url)
        return self._store

    def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """Run `Store.<op>(*args, **kwargs)`; on failure keep it for later and return None."""
        with self._lock:
            self.busy = True
            try:
                self._pending.append((op, args, kwargs))
                return self._drain()
            finally:
                self.busy = False

    def _drain(self) -> Any:
        result = None
        while self._pending:
            op, args, kwargs = self._pending[0]
            try:
                result = getattr(self._open(), op)(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - training must go on whatever the store does
                self._warn(e)
                if _transient(e):
                    return None
                result = None  # retrying cannot help (a bug, bad data): drop this write only
            self._pending.pop(0)
        return result

    def _warn(self, e: Exception) -> None:
        if self._warned:
            return
        self._warned = True
        where = mask_url(self._url or (self._store.url if self._store else "the run store"))
        warnings.warn(
            f"tracker could not write to {where} ({type(e).__name__}: {e}); training goes on and "
            "the run is kept in memory until the database answers again",
            RuntimeWarning,
            stacklevel=3,
        )

    def flush(self) -> bool:
        """Retry kept writes now; True when nothing is left."""
        with self._lock:
            self._drain()
            return not self._pending

    # -- heartbeat ------------------------------------------------------------------------------

    def start_heartbeat(
        self,
        run_id: str,
        interval: float,
        alive: Callable[[], bool] | None = None,
        on_dead: Callable[[], None] | None = None,
    ) -> None:
        """Beat every `interval` seconds; when `alive()` turns False, call `on_dead()` and stop."""
        self.stop_heartbeat()
        self._stop = threading.Event()
        poll = min(interval, 0.5) if alive is not None else interval

        def loop(stop: threading.Event) -> None:
            waited = 0.0
            while not stop.wait(poll):
                waited += poll
                if alive is not None and not alive():
                    if on_dead is not None and not stop.is_set():
                        on_dead()
                    return
                if waited >= interval:
                    waited = 0.0
                    self.call("heartbeat", run_id, interval)

        self._thread = threading.Thread(
            target=loop, args=(self._stop,), name="tracker-heartbeat", daemon=True
        )
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def close(self) -> None:
        self.stop_heartbeat()
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None
