"""One training run, from the start of a `fit` to its outcome, without Keras.

The Keras callback (`callback.py`) reads what only Keras objects know (the model's facts, the
learning rate, which callback stopped training) and hands it here; everything else a run is made
of lives in this module: creating or resuming the run, buffering batches, turning log values into
numbers, the epoch write, the best-weights keeper, and the one place a run ends. Every method can
be driven by plain Python objects, so the whole lifecycle is tested without TensorFlow.

The fit's last epoch (its last planned one, or the one a callback stopped training on) is not
handed to the writer at its end but kept, and written with the run's end in one transaction
(`Store.finish_run_after_epoch`), so that the end of `fit` waits for one round trip to a distant
database instead of two; if the end has not come `HOLD_LAST_EPOCH_S` later (other callbacks'
`on_train_end` run first), or another epoch begins, the kept epoch is handed over alone.

A run ends exactly once, under a lock: by `finish` (fit returned, or raised where a wrapper saw
it), or by `vanished` (fit left by a path no wrapper saw). The latter is provisional: a later,
better account of the same exit (the exception itself, from the process's exception hook)
replaces it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from tracker.clock import utcnow
from tracker.records import MetricPoint, RunRecord
from tracker.store.run_store import Store
from tracker.training.checkpoint_recorder import CheckpointKeeper
from tracker.training.exits import TerminatedBySignal
from tracker.training.notices import warn
from tracker.training.recorder import RunRecorder
from tracker.values import flat_logs, scalar

INTERRUPTS = (KeyboardInterrupt, TerminatedBySignal)
# How long the fit's last epoch waits for the run's end, to be written with it, before it is
# handed over alone: the other callbacks' `on_train_end` run first, and however long they take,
# a `kill -9` meanwhile must lose no more than the epoch being written.
HOLD_LAST_EPOCH_S = 0.5


def choose_monitor(
    explicit: str | None, early_stopping: str | None, validation: bool | None
) -> str | None:
    """The metric the best weights are kept by, decided before the first epoch from what the
    run will report: ours, else EarlyStopping's, else `val_loss` when there is validation (even
    if `validation_freq` skips some epochs), else `loss`. None: decide from the first logs."""
    if explicit or early_stopping:
        return explicit or early_stopping
    if validation is None:
        return None
    return "val_loss" if validation else "loss"


class RunSession:
    """The run of one `fit`. Writes go through `recorder`, which never raises."""

    def __init__(
        self,
        recorder: RunRecorder,
        run_id: str,
        *,
        heartbeat_interval: float,
        log_every_n_batches: int | None = None,
        keeper: CheckpointKeeper | None = None,
        model: Any = None,
    ) -> None:
        self.recorder = recorder
        self.run_id = run_id
        self.heartbeat_interval = heartbeat_interval
        self.log_every_n_batches = log_every_n_batches
        self.keeper = keeper
        self.model = model  # what the keeper takes weights from: `get_weights`/`save_weights`
        self.active = True
        self.epoch: int | None = None
        self.stopper: tuple[Any, int | None, int | None] | None = None
        self._lock = threading.RLock()
        self._provisional = False
        self._fit_params: dict[str, Any] = {}
        self._resumed_last: int | None = None  # last epoch of the resumed run, until rewound
        self._first_epoch = True
        self._epoch_started = 0.0
        self.epoch_lrs: dict[str, float] = {}  # by metric key: `lr`, `lr/<optimizer>`
        self._shared_logs: tuple[int, Mapping[str, Any]] | None = None
        self._logged_epoch: int | None = None
        # Kept batches as Keras gave them, (epoch, batch, time.time(), logs): turned into metric
        # points only when they are written, so each batch costs one append.
        self._batches: list[tuple[int, int, float, Mapping[str, Any]]] = []
        # The fit's last epoch, kept to be written with the run's end: (epoch, values, batch
        # points, when it ended).
        self._held: tuple[int, dict[str, float], list[MetricPoint], datetime] | None = None
        self._epochs_planned: int | None = None
        self._last_batch = -1
        self._warned_values = False

    # -- start ----------------------------------------------------------------------------------

    def start(self, create: dict[str, Any], resume: str | None = None) -> None:
        """Create the run, or reopen `resume` (a new run when that fails)."""
        self._fit_params = dict(create.get("fit_params") or {})
        self._epochs_planned = create.get("epochs_planned")
        run = self._resume(resume, create) if resume else None
        if run is None:
            # Handed over like an epoch's writes: applied before the first epoch's are.
            self.recorder.submit(Store.create_run, **{**create, "run_id": self.run_id})

    def _resume(self, ref: str, create: dict[str, Any]) -> RunRecord | None:
        run = self.recorder.call(
            Store.resume_run,
            ref,
            epochs_planned=create.get("epochs_planned"),
            heartbeat_interval=self.heartbeat_interval,
        )
        if run is None:
            warn(
                f"tracker could not resume run {ref!r}; recording a new run",
                stacklevel=4,
            )
            self.recorder.flush()
            return None
        self.run_id = run.id
        self._resumed_last = run.last_epoch
        self.recorder.remember_run(
            **{**create, "run_id": run.id, "name": run.name, "experiment": run.experiment}
        )
        if self.keeper is not None:
            self.keeper.run_id = run.id
        return run

    # -- epochs and batches ---------------------------------------------------------------------

    def epoch_begin(self, epoch: int, lrs: Mapping[str, float]) -> None:
        self._release_held()  # an epoch after the one taken for the last: training went on
        if self._first_epoch:
            self._first_epoch = False
            self._on_first_epoch(epoch)
        self.epoch = epoch
        self._epoch_started = time.perf_counter()
        self.epoch_lrs = dict(lrs)
        self._last_batch = -1

    def _on_first_epoch(self, epoch: int) -> None:
        if self._fit_params.get("initial_epoch", epoch) != epoch:
            # BackupAndRestore (or `model._initial_epoch`) moved the start after fit was called.
            self._fit_params["initial_epoch"] = epoch
            self.recorder.submit(Store.update_run, self.run_id, fit_params=self._fit_params)
        if self._resumed_last is not None and epoch <= self._resumed_last:
            # Re-running recorded epochs: the new ones replace them (README, "resume").
            self.recorder.call(Store.discard_epochs, self.run_id, epoch)
        if self._resumed_last is not None and self.keeper is not None:
            self.keeper.continue_from(self.recorder.call(Store.summaries, self.run_id) or {})

    def update_facts(self, **facts: Any) -> None:
        """Facts about the run learned after its start (a model built by its first step)."""
        self.recorder.submit(Store.update_run, self.run_id, **facts)

    def share_logs(self, epoch: int, logs: Mapping[str, Any] | None) -> None:
        """The dict `CallbackList` hands every callback for this epoch: read once all of them
        have run, it holds what they added (`learning_rate`, a custom `val_f1`), as `History`."""
        if logs is not None:
            self._shared_logs = (epoch, logs)

    def batch_end(self, batch: int, logs: Mapping[str, Any] | None) -> None:
        n = self.log_every_n_batches
        if not (n and self.active and logs and self.epoch is not None):
            return
        # Keras reports only the last batch of each `steps_per_execution` group: keep a report
        # when a multiple of n was reached since the previous one.
        if batch // n > self._last_batch // n:
            # A copy: another callback may still change the dict Keras hands to all of them.
            self._batches.append((self.epoch, batch, time.time(), dict(logs)))
        self._last_batch = batch

    def epoch_end(self, epoch: int, logs: Mapping[str, Any] | None) -> None:
        with self._lock:
            if not self.active:
                return
            if self._shared_logs is not None and self._shared_logs[0] == epoch:
                logs = self._shared_logs[1]
            self._shared_logs = None
            values = self._floats(flat_logs(logs or {}))
            for key, lr in self.epoch_lrs.items():
                values.setdefault(key, lr)
            if self.epoch == epoch and self._epoch_started:
                values["epoch_time_s"] = time.perf_counter() - self._epoch_started
            self._release_held()
            if self._logged_epoch is not None:
                # Backpressure: the previous epoch's writes are applied before this one's are
                # handed to the writer thread, so that at most one epoch is ever in flight
                # (recorder.py); a heartbeat handed over since is not waited for. The first
                # epoch's go with the run's creation, which the first epoch's end does not wait
                # for: a process's first write through a distant link opens the store.
                self.recorder.wait(beats=False)
            if self._is_last(epoch):
                # Written with the run's end, in one transaction (`finish`): the end of `fit`
                # waits for one round trip to the database instead of two. Until then it is
                # the epoch being written, as a handed-over epoch is.
                self._held = (epoch, values, self._batch_points(), utcnow())
                timer = threading.Timer(HOLD_LAST_EPOCH_S, self._release_held)
                timer.daemon = True
                timer.start()
            else:
                self.recorder.submit(
                    Store.log_epoch,
                    self.run_id,
                    epoch,
                    values,
                    batches=self._batch_points(),
                    heartbeat_interval=self.heartbeat_interval,
                )
            self._logged_epoch = epoch
            if self.keeper is not None:
                self.keeper.after_epoch(self.model, epoch, values)

    def _is_last(self, epoch: int) -> bool:
        """Whether `fit` ends after `epoch`: its last planned epoch, or a callback stopped it."""
        planned = self._epochs_planned
        return self.stopper is not None or (isinstance(planned, int) and epoch + 1 >= planned)

    def _release_held(self) -> None:
        """Hand the kept epoch to the writer after all (another epoch began, or the run's end
        is late)."""
        with self._lock:  # handed over before the run's end can be: in order
            held, self._held = self._held, None
            if held is not None:
                args, kwargs = self._epoch_args(held)
                self.recorder.submit(Store.log_epoch, *args, **kwargs)

    def _epoch_args(
        self, held: tuple[int, dict[str, float], list[MetricPoint], datetime]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """`Store.log_epoch`'s arguments for a kept epoch (`finish_run_after_epoch` takes them
        too, with the run's end)."""
        epoch, values, batches, at = held
        kwargs = {"batches": batches, "at": at, "heartbeat_interval": self.heartbeat_interval}
        return (self.run_id, epoch, values), kwargs

    def _batch_points(self) -> list[MetricPoint]:
        """The batches kept since the last write, as metric points; the buffer is emptied."""
        kept, self._batches = self._batches, []
        points: list[MetricPoint] = []
        add, point, stamped, utc = points.append, MetricPoint, datetime.fromtimestamp, timezone.utc
        for epoch, batch, stamp, logs in kept:
            when = stamped(stamp, utc)
            for key, value in flat_logs(logs).items():
                if type(value) is not float:  # Keras hands over floats; a caller may not
                    value = self._float(key, value)
                    if value is None:
                        continue
                add(point(key, epoch, batch, value, when))
        return points

    def _floats(self, logs: Mapping[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in logs.items():
            number = self._float(key, value)
            if number is not None:
                out[str(key)] = number
        return out

    def _float(self, key: Any, value: Any) -> float | None:
        """`value` as a float; None, with one warning per run, for what is not a scalar."""
        number = scalar(value)
        if number is None and not self._warned_values:
            self._warned_values = True
            warn(
                f"tracker skips non-scalar log {key!r} (value {value!r:.80})",
                stacklevel=5,
            )
        return number

    # -- how the run ends -----------------------------------------------------------------------

    def stopped_by(self, cb: Any, epoch: int | None, batch: int | None) -> None:
        """`cb` set `stop_training` (the first one to do so is the one recorded)."""
        if self.stopper is None:
            self.stopper = (cb, epoch, batch)

    def failed(self, e: BaseException, where: str = "", args: tuple[Any, ...] = ()) -> None:
        """`fit` is leaving with `e`, raised in `where` (a hook or step that a wrapper saw)."""
        with self._lock:
            if not self.active:
                return
            if where == "on_epoch_end" and args and args[0] != self._logged_epoch:
                # Another callback failed in this epoch's end: the epoch itself had ended.
                self.epoch_end(*args[:2])
            epoch = args[0] if where == "on_epoch_begin" and args else self.epoch
            self.finish(*outcome_of(e, epoch))

    def vanished(self, e: BaseException | None, signum: int | None) -> None:
        """`fit` left by a path no wrapper saw; `e` is its exception when it could be seen."""
        with self._lock:
            if not (self.active or self._provisional):
                return
            if e is None and signum is not None:
                e = KeyboardInterrupt() if signum == signal.SIGINT else TerminatedBySignal(signum)
            if e is not None:
                self.active, self._provisional = True, False
                self.finish(*outcome_of(e, self.epoch))
            elif self.active:
                details = {
                    "epoch": self.epoch,
                    "error": {"type": "unknown", "message": "fit ended without on_train_end"},
                }
                self.finish("failed", "error", details)
                self._provisional = True

    def finish(self, status: str, reason: str, details: dict[str, Any]) -> None:
        with self._lock:
            if not self.active:
                return
            self.active = False
            if self.keeper is not None:
                self.keeper.active = False
                self.keeper.flush(self.model)
            recorder = self.recorder
            recorder.stop_heartbeat()
            held, self._held = self._held, None
            if self._batches:
                if held is not None:  # batches after it: not the last epoch after all
                    self._held = held
                    self._release_held()
                    held = None
                recorder.call(Store.log_batch_metrics, self.run_id, self._batch_points())
            end: dict[str, Any] = {"status": status, "stop_reason": reason, "stop_details": details}
            if held is not None:
                args, kwargs = self._epoch_args(held)
                recorder.call(Store.finish_run_after_epoch, *args, **kwargs | end)
            else:
                recorder.call(Store.finish_run, self.run_id, **end)
            if recorder.pending:
                warn(
                    f"tracker: {recorder.pending} writes of run {self.run_id} could not reach "
                    "the database",
                    stacklevel=3,
                )


def outcome_of(e: BaseException, epoch: int | None) -> tuple[str, str, dict[str, Any]]:
    """(status, stop reason, details) of a `fit` that raised `e`."""
    details: dict[str, Any] = {"epoch": epoch}
    if isinstance(e, INTERRUPTS):
        signum = getattr(e, "signum", None)
        details["signal"] = "SIGTERM" if signum else "SIGINT/KeyboardInterrupt"
        return "interrupted", "interrupted", details
    details["error"] = {"type": type(e).__name__, "message": str(e)[:2000]}
    return "failed", "error", details
