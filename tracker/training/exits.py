"""How a process's end reaches the run of a `fit` that is still open.

Two things outlive a single wrapped call and belong to the process, not to one `fit`:
- the exception hooks (`sys.excepthook`, `threading.excepthook`) and `atexit`, through which a
  script or thread that dies of an exception Keras raised in its own loop still gets that
  exception into the run, chained to the hooks that were there before;
- SIGINT and SIGTERM, which Python delivers to the main thread only: claimed there while a `fit`
  runs (and only over Python's defaults), turned into exceptions the run can be closed with, and
  handed back when the last `fit` ends. Where they cannot be handed back (the run ended on
  another thread), the handler left in place acts exactly as the one it replaced.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol


class Watched(Protocol):
    """What this module needs of a `FitGuard`."""

    thread: int
    active: bool
    pending_signal: int | None
    raised_signal: int | None
    busy: Callable[[], bool]

    def unseen_exit(self, exc: BaseException | None) -> None: ...


class TerminatedBySignal(SystemExit):
    """SIGTERM, turned into an exception so the run can be closed before the process ends."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


# -- process exit and uncaught exceptions ------------------------------------------------------

_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()
_HOOKS: dict[str, Any] = {}


def watch(guard: Watched) -> None:
    _WATCHED.add(guard)
    if _HOOKS:
        return
    _HOOKS["sys"] = sys.excepthook
    _HOOKS["threading"] = threading.excepthook
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    atexit.register(_at_exit)


def unwatch(guard: Watched) -> None:
    _WATCHED.discard(guard)


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    main = threading.main_thread().ident
    for guard in [g for g in _WATCHED if g.thread == main]:
        guard.unseen_exit(exc)
    _HOOKS["sys"](kind, exc, tb)


def _thread_excepthook(args: Any) -> None:
    ident = args.thread.ident if args.thread is not None else None
    for guard in [g for g in _WATCHED if g.thread == ident]:
        guard.unseen_exit(args.exc_value)
    _HOOKS["threading"](args)


def _at_exit() -> None:
    for guard in list(_WATCHED):
        guard.unseen_exit(None)


# -- signals --------------------------------------------------------------------------------------

_SIGNAL_DEFAULTS: dict[int, Any] = {
    signal.SIGINT: signal.default_int_handler,
    signal.SIGTERM: signal.SIG_DFL,
}
_CLAIMED: dict[int, Any] = {}  # signum -> the handler that was in place before ours
_SIGNAL_GUARDS: list[Watched] = []


def claim_signals(guard: Watched) -> None:
    for signum, default in _SIGNAL_DEFAULTS.items():
        if signum not in _CLAIMED:
            current = signal.getsignal(signum)
            if current is not default:
                continue  # a handler of the user's own stays in charge
            _CLAIMED[signum] = current
            signal.signal(signum, _on_signal)
    _SIGNAL_GUARDS.append(guard)


def release_signals(guard: Watched) -> None:
    """Give the signals back once no guard needs them (where Python allows it: main thread).
    Elsewhere `_on_signal` stays installed but acts exactly as the handler it replaced."""
    if guard in _SIGNAL_GUARDS:
        _SIGNAL_GUARDS.remove(guard)
    if _SIGNAL_GUARDS or threading.get_ident() != threading.main_thread().ident:
        return
    for signum, handler in list(_CLAIMED.items()):
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, handler)
        del _CLAIMED[signum]


def _on_signal(signum: int, frame: Any) -> None:
    guards = [g for g in _SIGNAL_GUARDS if g.active]
    if not guards:
        _previous_handler(signum, frame)
        return
    if any(g.busy() for g in guards):
        for g in guards:
            g.pending_signal = signum  # raised once the write under way has finished
        return
    for g in guards:
        g.raised_signal = signum
    raise_for_signal(signum)


def _previous_handler(signum: int, frame: Any) -> None:
    handler = _CLAIMED.get(signum, _SIGNAL_DEFAULTS.get(signum))
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        die_by_signal(signum)


def raise_for_signal(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise TerminatedBySignal(signum)


def die_by_signal(signum: int) -> None:
    """End the process as the signal would have, now that the run is recorded."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
