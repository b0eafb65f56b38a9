"""Seeing the whole of a `fit` from inside one callback.

Keras calls no hook when `fit` raises, and calls callbacks in list order. From `on_train_begin` the
guard finds the `CallbackList` and the `fit` frame on the stack (Keras 3 builds `train_function`
before `on_train_begin`), then wraps, on those instances only:

- the model's `train_function` / `test_function` and every `CallbackList` dispatch method, so an
  exception from the train step, the data, validation or any callback is seen before it leaves
  `fit` (and is then re-raised untouched);
- `CallbackList.on_epoch_begin/on_epoch_end/on_train_end`, to run the tracker's work after every
  other callback: what EarlyStopping, ModelCheckpoint or a scheduler did is then already done,
  wherever the tracker sits in the list;
- the hooks of other callbacks that can stop training, to learn which one set `stop_training`.

Everything is put back when the run ends. Nothing here imports Keras.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

# Raised by the data pipeline to end an epoch: control flow, not failure.
_CONTROL_FLOW = ("StopIteration", "OutOfRangeError", "GeneratorExit", "StopAsyncIteration")
_LIST_HOOKS = (
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_batch_begin",
    "on_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
)
_STOPPING_HOOKS = ("on_epoch_end", "on_train_batch_end", "on_batch_end")


class TerminatedBySignal(SystemExit):
    """SIGTERM, turned into an exception so the run can be closed before the process ends."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def find_fit(callback: Any) -> tuple[Any | None, FrameType | None]:
    """The CallbackList holding `callback` and the frame of the `fit` that called it."""
    cb_list, fit_frame = None, None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if (
            cb_list is None
            and callback in getattr(owner, "callbacks", ())
            and owner is not callback
        ):
            cb_list = owner
        if frame.f_code.co_name == "fit" and owner is getattr(callback, "model", None):
            fit_frame = frame
            break
        frame = frame.f_back
    return cb_list, fit_frame


class FitGuard:
    """Wraps one `fit` for one run; `undo()` restores every object it touched."""

    def __init__(
        self,
        on_error: Callable[[BaseException, str, tuple[Any, ...]], None],
        after: dict[str, Callable[..., None]],
        on_stop_training: Callable[[Any, tuple[Any, ...]], None],
    ) -> None:
        self._on_error = on_error
        self._after = after
        self._on_stop_training = on_stop_training
        self._patches: list[tuple[Any, str, bool, Any]] = []
        self._signals: dict[int, Any] = {}
        self.pending_signal: int | None = None
        self.busy: Callable[[], bool] = lambda: False
        self.fit_frame: FrameType | None = None
        self._main = threading.main_thread().ident

    # -- patching -------------------------------------------------------------------------------

    def _patch(self, obj: Any, name: str, wrapper: Callable[..., Any]) -> None:
        had = name in getattr(obj, "__dict__", {})
        old = obj.__dict__[name] if had else None
        setattr(obj, name, wrapper)
        self._patches.append((obj, name, had, old))

    def _guarded(
        self, fn: Callable[..., Any], after: Callable[..., None] | None = None
    ) -> Callable[..., Any]:
        name = getattr(fn, "__name__", "")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = fn(*args, **kwargs)
                if after is not None:
                    after(*args, **kwargs)
                return result
            except BaseException as e:
                if type(e).__name__ not in _CONTROL_FLOW:
                    self._on_error(e, name, args)
                raise

        return wrapper

    def install(self, model: Any, cb_list: Any, fit_frame: FrameType | None, own: Any) -> None:
        self.fit_frame = fit_frame
        for name in ("train_function", "test_function"):
            fn = getattr(model, name, None)
            if callable(fn):
                self._patch(model, name, self._guarded(fn))
        for name, after in self._after.items():
            self._patch(cb_list, name, self._guarded(getattr(cb_list, name), after))
        self._patch(
            cb_list,
            "on_test_begin",
            self._guarded(cb_list.on_test_begin, self._wrap_test_function(model)),
        )
        for name in _LIST_HOOKS:
            if name != "on_test_begin":
                self._patch(cb_list, name, self._guarded(getattr(cb_list, name)))
        for cb in cb_list.callbacks:
            if cb is not own:
                self._watch_stop(cb, model)

    def _wrap_test_function(self, model: Any) -> Callable[..., None]:
        def after(*_: Any, **__: Any) -> None:
            fn = model.__dict__.get("test_function")
            if callable(fn) and not hasattr(fn, "__wrapped__"):
                self._patch(model, "test_function", self._guarded(fn))

        return after

    def _watch_stop(self, cb: Any, model: Any) -> None:
        for name in _STOPPING_HOOKS:
            hook = getattr(cb, name, None)
            if hook is None or getattr(hook, "_is_default", False):
                continue

            def wrapper(*args: Any, _hook: Any = hook, **kwargs: Any) -> Any:
                before = bool(getattr(model, "stop_training", False))
                result = _hook(*args, **kwargs)
                if not before and getattr(model, "stop_training", False):
                    self._on_stop_training(cb, args)
                return result

            self._patch(cb, name, wrapper)

    def patch_method(self, obj: Any, name: str, wrapper_factory: Callable[[Any], Any]) -> None:
        self._patch(obj, name, wrapper_factory(getattr(obj, name)))

    def undo(self) -> None:
        for obj, name, had, old in reversed(self._patches):
            if had:
                setattr(obj, name, old)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(obj, name)
        self._patches.clear()
        self.fit_frame = None
        if threading.get_ident() == self._main:
            self.restore_signals()

    # -- liveness and signals -------------------------------------------------------------------

    def fit_alive(self) -> bool:
        """True while the `fit` frame is still on the main thread's stack."""
        target = self.fit_frame
        if target is None:
            return True
        frame = sys._current_frames().get(self._main) if self._main is not None else None
        while frame is not None:
            if frame is target:
                return True
            frame = frame.f_back
        return False

    def install_signals(self) -> None:
        if threading.get_ident() != self._main:
            return
        for signum, default in (
            (signal.SIGINT, signal.default_int_handler),
            (signal.SIGTERM, signal.SIG_DFL),
        ):
            current = signal.getsignal(signum)
            if current is default:  # a handler of the user's own stays in charge
                self._signals[signum] = current
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.busy():
            self.pending_signal = signum  # raised once the write under way has finished
            return
        raise_for_signal(signum)

    def raise_pending_signal(self) -> None:
        signum, self.pending_signal = self.pending_signal, None
        if signum is not None:
            raise_for_signal(signum)

    def restore_signals(self) -> None:
        for signum, handler in self._signals.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, handler)
        self._signals.clear()


def raise_for_signal(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise TerminatedBySignal(signum)


def die_by_signal(signum: int) -> None:
    """End the process as the signal would have, now that the run is recorded."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
