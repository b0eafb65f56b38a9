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
- the hooks of other callbacks that can stop training, to learn which one set `stop_training`;
- `fit`'s epoch iterator, where the torch trainer draws batches in `fit` itself (outside the
  train function), so an exception from the input pipeline is seen on every backend.

`CallbackList.on_train_batch_end` runs the tracker's batch work in the training thread, after the
others: on JAX and torch Keras dispatches batch hooks to a thread pool, out of order.

Wrappers are layered strictly: each attribute keeps a stack of the layers put on it, and a guard
that ends unwraps only once the layers above its own are gone (last wrapped, first restored), so
two trackers in one `fit`, or a tracker and another library that wraps, compose. A guard that has
ended while still under another's layer turns into a pass-through.

Keras's own loop also raises between two wrapped calls (building the validation iterator at the
end of the first epoch that validates): the guard traces the `fit` frame alone through that gap.
Should a `fit` still leave unseen, the heartbeat notices (`fit_alive`), and its exception is taken
from what the fit's thread is handling, or from the process's exception hooks (`exits.py`) when it
ends the script or thread. Nothing here imports Keras.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

from tracker.training import exits

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
# Where another callback may set `model.stop_training`.
_STOPPING_HOOKS = (
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_batch_begin",
    "on_batch_end",
    "on_test_end",
)


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


# -- layered patches ------------------------------------------------------------------------------


@dataclass
class _Layer:
    obj: Any
    name: str
    wrapper: Any
    had: bool  # the attribute was in the instance's own __dict__ before
    old: Any
    ended: bool = False


_LAYERS: dict[tuple[int, str], list[_Layer]] = {}
_LAYERS_LOCK = threading.Lock()


def _push(obj: Any, name: str, wrapper: Any) -> _Layer:
    with _LAYERS_LOCK:
        had = name in getattr(obj, "__dict__", {})
        layer = _Layer(obj, name, wrapper, had, obj.__dict__[name] if had else None)
        setattr(obj, name, wrapper)
        _LAYERS.setdefault((id(obj), name), []).append(layer)
        return layer


def _pop(layer: _Layer) -> None:
    """End `layer`; restore the attribute for every ended layer now on top of its stack."""
    with _LAYERS_LOCK:
        layer.ended = True
        key = (id(layer.obj), layer.name)
        stack = _LAYERS.get(key, [])
        while stack and stack[-1].ended:
            top = stack[-1]
            if top.obj.__dict__.get(top.name) is not top.wrapper:
                break  # wrapped again by someone outside this registry: stay a pass-through
            if top.had:
                setattr(top.obj, top.name, top.old)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(top.obj, top.name)
            stack.pop()
        if not stack:
            _LAYERS.pop(key, None)


# -- the guard ------------------------------------------------------------------------------------


class FitGuard:
    """Wraps one `fit` for one run; `undo()` takes its layers off again."""

    def __init__(
        self,
        on_error: Callable[[BaseException, str, tuple[Any, ...]], None],
        after: dict[str, Callable[..., None]],
        on_stop_training: Callable[[Any, str, tuple[Any, ...]], None],
        on_unseen: Callable[[BaseException | None, int | None], None],
    ) -> None:
        self._on_error = on_error
        self._after = after
        self._on_stop_training = on_stop_training
        self._on_unseen = on_unseen
        self._layers: list[_Layer] = []
        self.active = True
        self.pending_signal: int | None = None
        self.raised_signal: int | None = None  # the signal our handler turned into an exception
        self.busy: Callable[[], bool] = lambda: False
        self.fit_frame: FrameType | None = None
        self._caller: tuple[FrameType, int] | None = None
        self.thread = threading.get_ident()
        self._window = False
        self._leaving: BaseException | None = None

    # -- patching -------------------------------------------------------------------------------

    def _patch(self, obj: Any, name: str, wrapper: Callable[..., Any]) -> None:
        self._layers.append(_push(obj, name, wrapper))

    def _guarded(
        self, fn: Callable[..., Any], after: Callable[..., None] | None = None
    ) -> Callable[..., Any]:
        name = getattr(fn, "__name__", "")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return fn(*args, **kwargs)
            if self._window:
                self.close_window()
            try:
                result = fn(*args, **kwargs)
                if after is not None and self.active:
                    after(*args, **kwargs)
                return result
            except BaseException as e:
                if self.active and type(e).__name__ not in _CONTROL_FLOW:
                    self._on_error(e, name, args)
                raise

        return wrapper

    def install(self, model: Any, cb_list: Any, fit_frame: FrameType | None, own: Any) -> None:
        self.fit_frame = fit_frame
        self._caller = _caller_of(fit_frame)
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
            if name != "on_test_begin" and name not in self._after:
                self._patch(cb_list, name, self._guarded(getattr(cb_list, name)))
        for cb in cb_list.callbacks:
            if cb is not own and not _is_tracker(cb):
                self._watch_stop(cb, model)
        fit_locals = fit_frame.f_locals if fit_frame is not None else {}
        epochs = fit_locals.get("epoch_iterator")
        if epochs is not None:
            self._watch_data(epochs, model, fit_locals.get("validation_data") is not None)
        exits.watch(self)

    # -- the gaps between wrapped calls ---------------------------------------------------------

    def _watch_data(self, epochs: Any, model: Any, validating: bool) -> None:
        """Watch `fit`'s epoch iterator, where batches are drawn. On TensorFlow and JAX the
        train function draws them (already wrapped); the torch trainer draws each batch in
        `fit` itself (`for ... in epoch_iterator`), so an exception from a generator or a
        `PyDataset` is seen here. Once an epoch's batches are done and validation is still to
        build its iterator (Keras does it in `fit` itself, on the first epoch that validates),
        the `fit` frame is watched until `evaluate` starts: only then, as tracing slows the
        eager code that runs meanwhile."""
        guard = self

        def batches_done() -> None:
            if validating and getattr(model, "_eval_epoch_iterator", None) is None:
                guard.open_window()

        steps = getattr(epochs, "_enumerate_iterator", None)
        if callable(steps):

            @functools.wraps(steps)
            def drawn_steps(*args: Any, **kwargs: Any) -> Any:
                with guard._reporting():
                    yield from steps(*args, **kwargs)
                batches_done()

            self._patch(epochs, "_enumerate_iterator", drawn_steps)

        catch = getattr(epochs, "catch_stop_iteration", None)
        if callable(catch):

            @contextlib.contextmanager
            def caught(around_epoch: bool, *args: Any, **kwargs: Any) -> Any:
                with guard._reporting(), catch(*args, **kwargs) as value:
                    yield value
                # TF and JAX hold it around an epoch's batches, torch around each batch's
                # draw: there the epoch is done when the data ran out.
                if around_epoch or getattr(epochs, "_current_iterator", False) is None:
                    batches_done()

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return caught(sys._getframe(1) is guard.fit_frame, *args, **kwargs)

            self._patch(epochs, "catch_stop_iteration", wrapper)

    @contextlib.contextmanager
    def _reporting(self) -> Any:
        """Report an exception from drawing batches (not the end of the data) as it leaves."""
        try:
            yield
        except BaseException as e:
            if self.active and type(e).__name__ not in _CONTROL_FLOW:
                self._on_error(e, "data", ())
            raise

    def open_window(self) -> None:
        """Trace the `fit` frame itself until the next wrapped call. Keras's own code runs
        there (building the validation iterator at the end of the first epoch that validates)
        and can raise where no wrapper sees it. Only the fit frame reports events; other
        frames are not traced, and a tracer of someone else's (a debugger, coverage) is left
        alone."""
        frame = self.fit_frame
        if (
            self._window
            or frame is None
            or not self.active
            or threading.get_ident() != self.thread
            or sys.gettrace() is not None
        ):
            return
        frame.f_trace_lines = False
        frame.f_trace = self._trace_fit
        self._window = True
        sys.settrace(_untraced)

    def close_window(self) -> None:
        if not self._window or threading.get_ident() != self.thread:
            return
        self._window = False
        if sys.gettrace() is _untraced:
            sys.settrace(None)
        if self.fit_frame is not None:
            self.fit_frame.f_trace = None

    def _trace_fit(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "exception":
            self._leaving = arg[1]
        elif event == "return":
            e, self._leaving = self._leaving, None
            self.close_window()
            failed = e is not None and type(e).__name__ not in _CONTROL_FLOW
            if failed and arg is None and self.active:
                self._on_error(e, "fit", ())  # type: ignore[arg-type]
        return self._trace_fit

    def _wrap_test_function(self, model: Any) -> Callable[..., None]:
        """`evaluate` builds `test_function` on first use: guard it once it exists."""

        def after(*_: Any, **__: Any) -> None:
            fn = model.__dict__.get("test_function")
            if callable(fn) and not any(
                layer.obj is model and layer.wrapper is fn for layer in self._layers
            ):
                self._patch(model, "test_function", self._guarded(fn))

        return after

    def _watch_stop(self, cb: Any, model: Any) -> None:
        for name in _STOPPING_HOOKS:
            hook = getattr(cb, name, None)
            if hook is None or getattr(hook, "_is_default", False):
                continue

            def wrapper(*args: Any, _hook: Any = hook, _name: str = name, **kwargs: Any) -> Any:
                before = bool(getattr(model, "stop_training", False))
                result = _hook(*args, **kwargs)
                if self.active and not before and getattr(model, "stop_training", False):
                    self._on_stop_training(cb, _name, args)
                return result

            self._patch(cb, name, wrapper)

    def patch_method(self, obj: Any, name: str, wrapper_factory: Callable[[Any], Any]) -> None:
        self._patch(obj, name, wrapper_factory(getattr(obj, name)))

    def undo(self) -> None:
        """Take this guard's layers off (or leave them as pass-throughs under others').

        The exit watch stays until `stop_watching`: a `fit` that vanished may still have its
        exception reported by the process's exception hooks."""
        self.close_window()
        self.active = False
        for layer in reversed(self._layers):
            _pop(layer)
        self._layers.clear()
        self.fit_frame = None  # a finished frame holds the fit's data: let it go
        exits.release_signals(self)

    def stop_watching(self) -> None:
        exits.unwatch(self)

    # -- liveness -------------------------------------------------------------------------------

    def fit_alive(self) -> bool:
        """True while the `fit` frame is still on the stack of the thread that runs it."""
        target = self.fit_frame
        if target is None:
            return True
        frame = sys._current_frames().get(self.thread)
        while frame is not None:
            if frame is target:
                return True
            frame = frame.f_back
        return False

    def came_from_fit(self, exc: BaseException | None) -> bool:
        """True when `exc` passed through the line that called this `fit`."""
        if exc is None or self._caller is None:
            return False
        frame, line = self._caller
        tb: TracebackType | None = exc.__traceback__
        while tb is not None:
            if tb.tb_frame is frame and tb.tb_lineno == line:
                return True
            tb = tb.tb_next
        return False

    def vanished_with(self) -> BaseException | None:
        """The exception that took `fit` away, if the fit's thread is still handling it."""
        candidates: list[Any] = [
            sys._current_exceptions().get(self.thread),
            getattr(sys, "last_exc", None),
            getattr(sys, "last_value", None),
        ]
        if self._caller is not None:
            candidates += list(self._caller[0].f_locals.values())
        for exc in candidates:
            if isinstance(exc, tuple):  # Python < 3.12 gives (type, value, traceback)
                exc = exc[1]
            if isinstance(exc, BaseException) and self.came_from_fit(exc):
                return exc
        return None

    def unseen_exit(self, exc: BaseException | None) -> None:
        """The process or the fit's thread ends with `exc` (or at exit) while this fit is open."""
        if self.fit_frame is None or not self.fit_alive():
            self._on_unseen(exc if self.came_from_fit(exc) else None, self.raised_signal)

    # -- signals --------------------------------------------------------------------------------

    def install_signals(self) -> None:
        """Route SIGINT/SIGTERM through the guard: only from the main thread, where Python
        delivers signals, and only where the user has not installed a handler of their own."""
        if threading.get_ident() == threading.main_thread().ident:
            exits.claim_signals(self)

    def raise_pending_signal(self) -> None:
        signum, self.pending_signal = self.pending_signal, None
        if signum is not None:
            self.raised_signal = signum
            exits.raise_for_signal(signum)


def _untraced(frame: FrameType, event: str, arg: Any) -> None:
    """The thread's tracer while the fit frame is watched: no other frame is traced."""
    return None


def _caller_of(fit_frame: FrameType | None) -> tuple[FrameType, int] | None:
    """The first frame outside Keras above `fit`, and the line it called `fit` from."""
    if fit_frame is None:
        return None
    path = fit_frame.f_code.co_filename
    marker = os.sep + "keras" + os.sep
    root = path[: path.rfind(marker) + len(marker)] if marker in path else path
    frame = fit_frame.f_back
    while frame is not None and frame.f_code.co_filename.startswith(root):
        frame = frame.f_back
    return (frame, frame.f_lineno) if frame is not None else None


def _is_tracker(cb: Any) -> bool:
    return any(c.__name__ == "TrackingCallback" for c in type(cb).__mro__)
