"""Writes one run to the store on behalf of the callback, and never lets a store failure stop
training or lose the run.

Every write is applied by `_drain`, in the order it was made. When the database cannot be reached
or written (server down, read-only or full disk, a lock held too long), the write is retried a few
times with backoff; if the database is still away, the recorder switches to a local spool file (an
ordinary tracker SQLite database, named once in a warning) and writes the rest of the run there,
replaying the run's creation first. `tracker sync` later moves spooled runs into the database,
idempotently.

Off the training thread: a database on another machine costs every write a few network round
trips, which training must not pay at each epoch. So the run's creation (with the facts learned
before its first epoch ends), the writes of each epoch (its metrics, its batches, its checkpoints)
and the heartbeat are handed to one writer thread per recorder (`submit`), which applies them in
order, with the same retries and spool as above; a failure there is a warning, never an exception
in training. The rule that bounds what can be lost: **at most one epoch's writes are in flight.**
When an epoch ends, the training thread first waits for what it handed over before (the previous
epoch's writes, with the run's creation for the first epoch's) to be applied (`wait`:
backpressure), then hands over this epoch's and goes on; the first epoch's end waits for nothing,
so that opening the store (a process's first connection: through a distant link, several round
trips) overlaps the first two epochs. What `on_train_begin` hands over is `held` until the hook's
own work is done: the writer thread's first work in a process (imports, connecting) would
otherwise take the interpreter from the rest of the hook. A `kill -9` loses at most the epoch
being written (until the second epoch's end, with the run's creation, if the process dies before
it was applied).
The fit's last epoch is kept by the session instead, and written with the run's end in one
transaction, unless that end is late (`RunSession`). What a caller must see applied
before it goes on (a resumed run, facts it reads back, the run's end) is written with `call`,
which first waits for everything handed over before it: `finish` therefore returns with the
whole run in the store (or the spool), and so do the paths that end a run on an exception, a
signal or `atexit`. A forked child neither sees nor repeats the writes its parent had in flight.

On PostgreSQL each of these writes is one transaction that costs one round trip to the server
(an epoch's, one statement: `tracker.store.writes.epoch_done`; the others pipelined:
`tracker.store.writes.PipelinedCursor`), and the recorder's engine does not ping a connection
before each use: a write that fails on a dead connection is retried like any other.

The heartbeat thread lives here too; it also watches that `fit` is still running, because Keras
calls no hook when `fit` dies of an exception it did not route through the callbacks.

The store a recorder opens from a URL is kept for the process (`shared_store`): the next `fit`
(Keras Tuner, sweeps, a notebook) reuses its engine instead of connecting and checking the schema
again. A forked child never uses its parent's engine, a SQLite file replaced or deleted since is
opened afresh, and a store that failed a write is dropped so the next `fit` starts clean.
"""

from __future__ import annotations

import atexit
import os
import shlex
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from tracker.config import mask_url, sqlite_path
from tracker.errors import DatabaseUnavailable
from tracker.store.run_store import Store, open_store
from tracker.training.notices import warn

RETRY_DELAYS_S = (0.1, 0.4, 1.2)
RETRY_BUDGET_S = 2.0  # past this the database counts as away and the spool takes over
CALLBACK_BUSY_TIMEOUT_S = 5.0
# How often the heartbeat thread looks whether `fit` is still running (a fit left by a path no
# wrapper saw: its run is closed within this, its exception taken if still at hand). Each look
# takes the interpreter lock from training for a moment, and every wait for the lock slows a
# training step: rarely, then. An exception handled for less long is still had from the process's
# exception hooks when it ends the script or thread (exits.py).
ALIVE_POLL_S = 0.5
# An idle writer thread ends after this long (a sweep of many fits keeps no idle threads); the
# next write starts a new one.
WRITER_IDLE_S = 2.0

P = ParamSpec("P")
R = TypeVar("R")
# A write kept until it reaches a store: `Store.<method>`, its arguments. Methods, not their
# names, so that renaming a `Store` method fails type checking rather than a training run.
Op = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


_SHARED_MAX = 8  # stores kept open at once; the least recently used is closed past this


class _SharedStores:
    """The stores the callbacks of this process opened, by URL and busy timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # key -> (store, identity of the SQLite file when opened); oldest use first
        self._stores: dict[tuple[str, float], tuple[Store, tuple[int, int] | None]] = {}
        self._inherited: list[Store] = []  # a parent's engines: kept, never used or closed

    def get(self, url: str, busy_timeout: float) -> Store:
        key = (url, busy_timeout)
        file = sqlite_path(url)
        if file is not None and not file.is_absolute():
            # A relative path follows the working directory: no sharing.
            return open_store(url, busy_timeout=busy_timeout)
        with self._lock:
            self._after_fork()
            entry = self._stores.pop(key, None)
            if entry is not None:
                store, ident = entry
                if file is None or _identity(file) == ident:
                    self._stores[key] = entry  # most recently used last
                    return store
                store.close()  # the file was deleted or replaced since: open the new one
            # No ping before each write: it would cost every write one more round trip to a
            # distant server, and a write that fails on a dead connection is retried anyway.
            store = open_store(url, busy_timeout=busy_timeout, pre_ping=False)  # raises
            self._stores[key] = (store, _identity(file) if file is not None else None)
            while len(self._stores) > _SHARED_MAX:
                oldest = next(iter(self._stores))
                self._stores.pop(oldest)[0].close()  # a recorder still on it just reconnects
            return store

    def discard(self, store: Store) -> None:
        """Stop sharing `store` (it failed): the next `get` opens a new one."""
        with self._lock:
            for key, (kept, _) in list(self._stores.items()):
                if kept is store:
                    del self._stores[key]

    def shared(self, store: Store) -> bool:
        with self._lock:
            return any(kept is store for kept, _ in self._stores.values())

    def close_all(self) -> None:
        with self._lock:
            if os.getpid() != self._pid:
                return  # a forked child exiting: the parent's connections are not ours
            stores = [store for store, _ in self._stores.values()]
            self._stores.clear()
        for store in stores:
            store.close()

    def _after_fork(self) -> None:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            # Their connections are the parent's (and a PostgreSQL socket is shared with it):
            # neither used nor closed here, only kept from the garbage collector.
            self._inherited += [store for store, _ in self._stores.values()]
            self._stores.clear()


def _identity(file: Path) -> tuple[int, int] | None:
    try:
        st = file.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


_SHARED = _SharedStores()
atexit.register(_SHARED.close_all)


def shared_store(url: str, busy_timeout: float = CALLBACK_BUSY_TIMEOUT_S) -> Store:
    """The process's open store for `url`, opened on first use."""
    return _SHARED.get(url, busy_timeout)


def _transient(e: Exception) -> bool:
    """Failures a later retry can cure: the database is away, locked or full."""
    return isinstance(e, (DatabaseUnavailable, OperationalError, InterfaceError, OSError))


class RunRecorder:
    def __init__(
        self,
        url: str | None,
        store: Store | None = None,
        *,
        spool_path: Path | None = None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS_S,
    ) -> None:
        self._url = url
        self._store = store
        self._shared = store is None  # opened through `shared_store`, which owns it
        self._spool_path = spool_path
        self._spool: Store | None = None
        self._retry_delays = retry_delays
        self._pending: list[Op] = []  # writes not applied yet, in order (kept after a failure)
        self._create_op: Op | None = None
        self._warned = False
        self.busy = False  # the training thread is writing or waiting (the signal guard waits)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._locks()
        _LIVE.add(self)

    def _locks(self) -> None:
        """New locks and no writer thread: at creation, and in a forked child, where the
        parent's locks may be held by threads that do not exist there."""
        self._lock = threading.RLock()  # held while writes are applied, by one thread at a time
        self._handoff = threading.Condition()  # guards what follows
        self._inbox: deque[Op] = deque()  # handed to the writer thread, not taken yet
        self._writing = False
        self._current: Callable[..., Any] | None = None  # the write being applied
        self._writer: threading.Thread | None = None
        self._held = False  # hand-overs wait in the inbox for `held` to end

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._inbox)

    @property
    def spooled_to(self) -> Path | None:
        return self._spool_path if self._spool is not None else None

    def _target(self) -> Store:
        if self._spool is not None:
            return self._spool
        if self._store is None:
            assert self._url is not None
            self._store = shared_store(self._url, CALLBACK_BUSY_TIMEOUT_S)
        return self._store

    def call(
        self, op: Callable[Concatenate[Store, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R | None:
        """Run `op(store, *args, **kwargs)` now, after every write handed over before it, or
        keep it for later; never raises.

        `op` is a `Store` method (`Store.log_epoch`); None is returned when it was kept."""
        self.busy = True
        try:
            self._wait_idle()
            with self._lock:
                return self._apply((op, args, kwargs))
        finally:
            self.busy = False

    def submit(
        self, op: Callable[Concatenate[Store, P], Any], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Hand `op(store, *args, **kwargs)` to the writer thread and return at once.

        Callers bound what is in flight by calling `wait` first (the session does, once an
        epoch)."""
        with self._handoff:
            self._inbox.append((op, args, kwargs))
            if self._held:
                return
        self._start_writing()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Writes handed over inside wait until it ends to be written. The writer thread's
        first work in a process (opening the store: imports, connecting) holds the interpreter
        lock for long stretches; begun at the end of the hook that hands the run's creation over,
        it does not slow the rest of that hook."""
        self._held = True
        try:
            yield
        finally:
            self._held = False
            self._start_writing()

    def _start_writing(self) -> None:
        """Wake the writer thread for what is in the inbox, or start one."""
        with self._handoff:
            if not self._inbox:
                return
            if self._writer is not None:
                self._handoff.notify_all()
                return
            try:
                self._writer = threading.Thread(
                    target=self._write_loop, name="tracker-writer", daemon=True
                )
                self._writer.start()
                return
            except RuntimeError:  # no new thread at interpreter shutdown: write it here
                self._writer = None
                entries = list(self._inbox)
                self._inbox.clear()
        with self._lock:
            for entry in entries:
                self._apply(entry)

    def wait(self, *, beats: bool = True) -> None:
        """Return once every write handed over has been applied (or kept, when the database
        and the spool are both away); without `beats`, heartbeats handed over after the last
        other write are not waited for (an epoch's end need not wait for a beat)."""
        self.busy = True
        try:
            self._wait_idle(beats)
        finally:
            self.busy = False

    def _wait_idle(self, beats: bool = True) -> None:
        if threading.current_thread() is self._writer:
            return
        self._start_writing()  # what `held` keeps is waited for too
        with self._handoff:
            while self._unapplied(beats):
                self._handoff.wait()

    def _unapplied(self, beats: bool) -> bool:
        if beats:
            return bool(self._inbox or self._writing)
        return any(op is not Store.heartbeat for op, _, _ in self._inbox) or (
            self._writing and self._current is not Store.heartbeat
        )

    def _write_loop(self) -> None:
        while True:
            with self._handoff:
                if not self._inbox:
                    self._handoff.wait(WRITER_IDLE_S)
                if not self._inbox:
                    self._writer = None  # a later `submit` starts a new thread
                    return
                entry = self._inbox.popleft()
                self._writing, self._current = True, entry[0]
            try:
                with self._lock:
                    self._apply(entry)
            except BaseException as e:  # noqa: BLE001 - nothing here may reach training
                self._warn(f"tracker's writer failed ({type(e).__name__}: {e})")
            finally:
                with self._handoff:
                    self._writing = False
                    self._handoff.notify_all()

    def _apply(self, entry: Op) -> Any:
        if entry[0] is Store.create_run:
            self._create_op = entry
        self._pending.append(entry)
        return self._drain(retry=True)

    def remember_run(self, **create_kwargs: Any) -> None:
        """What the spool needs to recreate a run that was not created by this recorder."""
        self._create_op = (Store.create_run, (), create_kwargs)

    def _drain(self, *, retry: bool) -> Any:
        result = None
        attempt = 0
        first_failure: float | None = None
        while self._pending:
            op, args, kwargs = self._pending[0]
            try:
                result = op(self._target(), *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - training must go on whatever the store does
                if self._shared and self._store is not None and self._spool is None:
                    _SHARED.discard(self._store)  # the next `fit` opens the database afresh
                if not _transient(e):
                    name = getattr(op, "__name__", op)
                    self._warn(f"tracker dropped one write ({name}: {type(e).__name__}: {e})")
                    self._pending.pop(0)
                    continue
                first_failure = first_failure or time.monotonic()
                waited = time.monotonic() - first_failure
                if retry and attempt < len(self._retry_delays) and waited < RETRY_BUDGET_S:
                    time.sleep(self._retry_delays[attempt])
                    attempt += 1
                    continue
                if self._spool is None and self._spool_path is not None and self._start_spool(e):
                    attempt = 0
                    continue
                self._warn(
                    f"tracker could not write to {self._where()} ({type(e).__name__}: "
                    f"{e}); training goes on and the run is kept in memory"
                )
                return None
            self._pending.pop(0)
        return result

    def _start_spool(self, cause: Exception) -> bool:
        assert self._spool_path is not None
        try:
            self._spool_path.parent.mkdir(parents=True, exist_ok=True)
            self._spool = open_store(f"sqlite:///{self._spool_path}")
        except Exception:  # noqa: BLE001 - then memory is all that is left
            return False
        if self._create_op is not None:
            if self._pending[0] is not self._create_op:
                self._pending.insert(0, self._create_op)  # the spool must know the run itself
            # ... and where it was going: the database's identity if it was reached (its store
            # read it on opening), and its URL, which the spool keeps without the password.
            run_id = self._create_op[2].get("run_id")
            url = self._url or (self._store.url if self._store is not None else None)
            if run_id is not None and url is not None:
                identity = self._store.identity if self._store is not None else None
                where = {"url": url, "database_id": identity}
                self._pending.insert(1, (Store.set_destination, (run_id,), where))
        warn(
            f"tracker could not write to {self._where(main=True)} ({type(cause).__name__}: "
            f"{cause}); the run goes on in the spool file {self._spool_path}. Push it later "
            f"with: tracker sync --all {shlex.quote(str(self._spool_path))}",
            stacklevel=4,
        )
        self._warned = True
        return True

    def _where(self, main: bool = False) -> str:
        if self._spool is not None and not main:
            return f"spool {self._spool_path}"
        return mask_url(self._url or (self._store.url if self._store else "the run store"))

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warn(message, stacklevel=4)

    def flush(self) -> bool:
        """Retry kept writes now; True when nothing is left."""
        self.wait()
        with self._lock:
            self._drain(retry=False)
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
        poll = min(interval, ALIVE_POLL_S) if alive is not None else interval

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
                    if not self._inbox:  # else a write is waiting, and it beats too
                        self.submit(Store.heartbeat, run_id, interval)

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
        self.wait()
        if self._shared and self._store is not None:
            if not _SHARED.shared(self._store):
                self._store.close()  # dropped from sharing when it failed: nobody else uses it
            self._store = None
        if self._spool is not None:
            self._spool.close()
            self._spool = None


_LIVE: weakref.WeakSet[RunRecorder] = weakref.WeakSet()


# Recorders whose write lock the forking thread holds across a fork (see `_before_fork`).
_HELD_OVER_FORK: list[RunRecorder] = []
FORK_WAIT_S = 5.0  # how long a fork waits for a write in progress before going ahead anyway


def _before_fork() -> None:
    """Fork between two writes, never during one: a SQLite connection caught inside a
    transaction leaves the child's SQLite believing a lock is held in its process that no one
    there will ever release, so the child's own writes would fail with "database is locked"."""
    for recorder in list(_LIVE):
        if recorder._lock.acquire(timeout=FORK_WAIT_S):
            _HELD_OVER_FORK.append(recorder)


def _after_fork_in_parent() -> None:
    while _HELD_OVER_FORK:
        _HELD_OVER_FORK.pop()._lock.release()


def _after_fork_in_child() -> None:
    _HELD_OVER_FORK.clear()  # the child makes new locks below
    for recorder in list(_LIVE):
        recorder._locks()
        recorder._pending.clear()  # the parent's writes, in flight or kept: the parent's
        if recorder._shared:
            recorder._store = None  # its connections are the parent's: `shared_store` again


def _wait_all() -> None:
    """At a normal exit: the writes handed over land before the stores are closed."""
    for recorder in list(_LIVE):
        recorder.wait()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
atexit.register(_wait_all)  # after `_SHARED.close_all` was registered, so it runs before it
