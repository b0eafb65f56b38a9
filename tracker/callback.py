"""`TrackingCallback`: one Keras callback that records a whole training run.

The Keras-facing half. What to write and when lives here; how a failure of the database is survived
lives in `recorder.py`, and how exceptions, signals and the order of other callbacks are handled
lives in `fitguard.py`.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import keras

from tracker import introspect
from tracker.checkpointing import CheckpointKeeper
from tracker.config import default_artifacts_dir, resolve_url
from tracker.db import load_dialect
from tracker.environment import collect_environment
from tracker.fitguard import FitGuard, TerminatedBySignal, die_by_signal, find_fit
from tracker.modes import MODES
from tracker.recorder import RunRecorder
from tracker.records import MetricPoint, jsonable
from tracker.store import DEFAULT_HEARTBEAT_S, Store
from tracker.sync import default_spool_path
from tracker.writes import utcnow


class TrackingCallback(keras.callbacks.Callback):
    """Records a Keras training run in the tracker's run store.

    Add it to `model.fit(callbacks=[...])` anywhere in the list: it records fit and model
    parameters, every epoch's logs and learning rate, what EarlyStopping and ModelCheckpoint did,
    and why training stopped, including when `fit` raises or the process is signalled.

    Args:
        db: database URL. Defaults to `TRACKER_DB_URL`, then `sqlite:///tracker.db`.
        experiment: experiment name. Defaults to `"default"`.
        run_name: run name. Defaults to a generated readable name.
        params: the user's hyperparameters, stored with the run.
        tags: the user's labels, stored with the run.
        monitor: metric for the callback's own best-weights copy. Defaults to EarlyStopping's
            monitor when present, else `val_loss`, else `loss`.
        mode: `"auto"`, `"min"` or `"max"` for `monitor`, as in Keras. Defaults to `"auto"`.
        min_delta: smallest change of `monitor` that counts as an improvement.
        save_best_weights: keep the run's best weights as a `.weights.h5` checkpoint.
            Defaults to `True`.
        artifacts_dir: folder for that file. Defaults to `<db file stem>-artifacts/` beside a
            SQLite database, else `TRACKER_ARTIFACTS_DIR` or `./tracker-artifacts`.
        log_every_n_batches: also record every Nth batch's logs (running averages within the
            epoch, as Keras reports them). Defaults to `None` (off).
        heartbeat_interval: seconds between heartbeats; a run silent for two intervals is shown
            as `crashed`. Defaults to `30`.
        spool_path: SQLite file that receives the run while the database cannot be written
            (push it later with `tracker sync`). Defaults to `TRACKER_SPOOL`, else
            `~/.cache/tracker/spool.db`.
        resume: a run (id, id prefix, name or `"latest"`) to continue instead of starting a new
            one, e.g. with `fit(..., initial_epoch=N)` after an interruption. Used by the next
            `fit` only; later ones start new runs again.
        store: an open `tracker.Store` to write to instead of `db`.
    """

    def __init__(
        self,
        db: str | None = None,
        experiment: str = "default",
        run_name: str | None = None,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        monitor: str | None = None,
        mode: str = "auto",
        min_delta: float = 0.0,
        save_best_weights: bool = True,
        artifacts_dir: str | os.PathLike[str] | None = None,
        log_every_n_batches: int | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_S,
        spool_path: str | os.PathLike[str] | None = None,
        resume: str | None = None,
        store: Store | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
        if log_every_n_batches is not None and log_every_n_batches < 1:
            raise ValueError(
                f"log_every_n_batches must be a positive integer or None. "
                f"Received: log_every_n_batches={log_every_n_batches!r}"
            )
        if heartbeat_interval <= 0:
            raise ValueError(
                f"heartbeat_interval must be positive. Received: "
                f"heartbeat_interval={heartbeat_interval!r}"
            )
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"params must be a dict. Received: params={params!r}")
        if tags is not None and not isinstance(tags, dict):
            raise ValueError(f"tags must be a dict. Received: tags={tags!r}")
        self.db = db
        self.experiment = experiment
        self.run_name = run_name
        self.user_params = dict(params or {})
        self.tags = dict(tags or {})
        self.monitor = monitor
        self.mode = mode
        self.min_delta = abs(min_delta)
        self.save_best_weights = save_best_weights
        self.artifacts_dir = artifacts_dir
        self.log_every_n_batches = log_every_n_batches
        self.heartbeat_interval = float(heartbeat_interval)
        self.spool_path = spool_path
        self.resume = resume
        self._store = store
        if store is None:
            # The database driver's SQLAlchemy module is imported now, with the rest of the
            # library, rather than by the first `fit`.
            load_dialect(resolve_url(db))
        # Batch hooks only buffer numbers, so Keras may keep dispatching them asynchronously.
        self.async_safe = True
        self.run_id: str | None = None
        self._recorder: RunRecorder | None = None
        self._guard: FitGuard | None = None
        self._active = False

    # -- run lifecycle --------------------------------------------------------------------------

    def _reset(self) -> None:
        self.run_id = None
        self._active = False
        self._epoch: int | None = None
        self._epoch_started = 0.0
        self._epoch_lr: float | None = None
        self._logged_epoch: int | None = None
        # Kept batches as Keras gave them, (epoch, batch, time.time(), logs): turned into metric
        # points only when they are written, so each batch costs one append.
        self._batches: list[tuple[int, int, float, dict[str, Any]]] = []
        self._checkpoints: CheckpointKeeper | None = None
        self._stopper: tuple[Any, int | None, int | None] | None = None
        self._warned_values = False
        self._fit_frame_locals: dict[str, Any] = {}
        self._others: list[Any] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._end_previous()
        self._reset()
        if not introspect.is_chief():
            return  # under multi-worker tf.distribute only the chief records
        url = None if self._store is not None else resolve_url(self.db)
        spool = Path(self.spool_path) if self.spool_path else default_spool_path()
        self._recorder = RunRecorder(url, self._store, spool_path=spool.expanduser().resolve())
        self.run_id = uuid.uuid4().hex
        self._active = True
        cb_list, fit_frame = find_fit(self)
        if fit_frame is not None:
            self._fit_frame_locals = dict(fit_frame.f_locals)
        others = self._others = [c for c in getattr(cb_list, "callbacks", []) if c is not self]
        create = dict(
            run_id=self.run_id,
            experiment=self.experiment,
            name=self.run_name,
            params=self.user_params,
            tags=self.tags,
            fit_params=jsonable(introspect.fit_params(self.params, self._fit_frame_locals, others)),
            environment=jsonable(collect_environment()),
            model=jsonable(introspect.model_info(self.model)),
            epochs_planned=(self.params or {}).get("epochs"),
            heartbeat_interval=self.heartbeat_interval,
            started_at=utcnow(),
        )
        resumed = self._resume(create) if self.resume else None
        if resumed is None:
            self._recorder.call("create_run", **create)
        refs = introspect.references(others)
        if refs:
            self._recorder.call("update_run", self.run_id, references=refs)
        self._checkpoints = CheckpointKeeper(
            self._recorder,
            self.run_id,
            self._artifacts_base() / self.run_id / "best.weights.h5",
            monitor=self.monitor,
            mode=self.mode,
            min_delta=self.min_delta,
            keep_best=self.save_best_weights,
        )
        if cb_list is not None:
            self._install_guard(cb_list, fit_frame)
        self._recorder.start_heartbeat(
            self.run_id,
            self.heartbeat_interval,
            alive=self._guard.fit_alive if self._guard else None,
            on_dead=self._on_fit_vanished,
        )

    def _artifacts_base(self) -> Path:
        base = self.artifacts_dir
        if base is None:
            base = default_artifacts_dir(self._store.url if self._store else resolve_url(self.db))
        return Path(base).expanduser().resolve()

    def _resume(self, create: dict[str, Any]) -> Any:
        """Reopen the run named by `resume`; None (a new run is made) when that fails."""
        assert self._recorder is not None
        ref, self.resume = self.resume, None
        run = self._recorder.call(
            "resume_run",
            ref,
            epochs_planned=create["epochs_planned"],
            heartbeat_interval=self.heartbeat_interval,
        )
        if run is None:
            warnings.warn(
                f"tracker could not resume run {ref!r}; recording a new run",
                RuntimeWarning,
                stacklevel=3,
            )
            self._recorder.flush()
            return None
        self.run_id = run.id
        self._recorder.remember_run(
            **{**create, "run_id": run.id, "name": run.name, "experiment": run.experiment}
        )
        return run

    def _install_guard(self, cb_list: Any, fit_frame: Any) -> None:
        guard = FitGuard(
            on_error=self._on_error,
            after={
                "on_epoch_begin": self._after_epoch_begin,
                "on_epoch_end": self._after_epoch_end,
                "on_train_end": self._after_train_end,
            },
            on_stop_training=self._on_stop_training,
        )
        recorder = self._recorder
        guard.busy = lambda: bool(recorder and recorder.busy)
        guard.install(self.model, cb_list, fit_frame, own=self)
        for cb in introspect.find(self._others, "ModelCheckpoint"):
            if self._checkpoints is not None:
                guard.patch_method(cb, "_save_model", self._checkpoints.watcher(cb))
        guard.install_signals()
        self._guard = guard

    # Without a CallbackList on the stack (hooks called by hand) the hooks do the work directly;
    # with one, the guard runs the same work after every other callback.
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._active and self._guard is None:
            self._after_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._active and self._guard is None:
            self._after_epoch_end(epoch, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._active and self._guard is None:
            self._after_train_end(logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        n = self.log_every_n_batches
        if n and self._active and batch % n == 0 and logs and self._epoch is not None:
            # A copy: another callback may still change the dict Keras hands to all of them.
            self._batches.append((self._epoch, batch, time.time(), dict(logs)))

    def _batch_points(self) -> list[MetricPoint]:
        """The batches kept since the last write, as metric points; the buffer is emptied."""
        kept, self._batches = self._batches, []
        points: list[MetricPoint] = []
        add, point, stamped, utc = points.append, MetricPoint, datetime.fromtimestamp, timezone.utc
        for epoch, batch, stamp, logs in kept:
            when = stamped(stamp, utc)
            for key, value in logs.items():
                if type(value) is not float:  # Keras hands over floats; a caller may not
                    value = self._float(key, value)
                    if value is None:
                        continue
                add(point(str(key), epoch, batch, value, when))
        return points

    # -- epochs ---------------------------------------------------------------------------------

    def _after_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._epoch_started = time.perf_counter()
        self._epoch_lr = introspect.current_lr(self.model)

    def _after_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._active or self._recorder is None:
            return
        values = self._floats(logs or {})
        if self._epoch_lr is not None:
            values.setdefault("lr", self._epoch_lr)
        if self._epoch == epoch and self._epoch_started:
            values["epoch_time_s"] = time.perf_counter() - self._epoch_started
        self._recorder.call(
            "log_epoch",
            self.run_id,
            epoch,
            values,
            batches=self._batch_points(),
            heartbeat_interval=self.heartbeat_interval,
        )
        self._logged_epoch = epoch
        if self._checkpoints is not None:
            self._checkpoints.after_epoch(self.model, epoch, values, self._others)
        if self._guard is not None:
            self._guard.raise_pending_signal()

    def _floats(self, logs: dict[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in logs.items():
            number = self._float(key, value)
            if number is not None:
                out[str(key)] = number
        return out

    def _float(self, key: Any, value: Any) -> float | None:
        """`value` as a float; None, with one warning per run, for what is not a scalar."""
        try:
            return float(value)
        except (TypeError, ValueError):
            if not self._warned_values:
                self._warned_values = True
                warnings.warn(
                    f"tracker skips non-scalar log {key!r} (value {value!r:.80})",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return None

    # -- how the run ends -----------------------------------------------------------------------

    def _on_stop_training(self, cb: Any, args: tuple[Any, ...]) -> None:
        if self._stopper is None:
            batch = args[0] if args and introspect.is_a(cb, "TerminateOnNaN") else None
            self._stopper = (cb, self._epoch, batch)

    def _after_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self._active:
            return
        reason, details = introspect.stop_reason(
            self.model, self._stopper, self._others, self._epoch
        )
        self._finish("finished", reason, details)

    def _on_error(self, e: BaseException, where: str = "", args: tuple[Any, ...] = ()) -> None:
        if not self._active:
            return
        if where == "on_epoch_end" and args and args[0] != self._logged_epoch:
            # Another callback failed in this epoch's end: the epoch itself had ended.
            self._after_epoch_end(*args[:2])
        details: dict[str, Any] = {"epoch": self._epoch}
        if isinstance(e, (KeyboardInterrupt, TerminatedBySignal)):
            signum = getattr(e, "signum", None)
            details["signal"] = "SIGTERM" if signum else "SIGINT/KeyboardInterrupt"
            self._finish("interrupted", "interrupted", details)
            if isinstance(e, TerminatedBySignal):
                die_by_signal(e.signum)
            return
        details["error"] = {"type": type(e).__name__, "message": str(e)[:2000]}
        self._finish("failed", "error", details)

    def _on_fit_vanished(self) -> None:
        """`fit` left without passing through a wrapped call: an exception in Keras's own loop."""
        if not self._active:
            return
        pending = self._guard.pending_signal if self._guard else None
        details = {
            "epoch": self._epoch,
            "error": {"type": "unknown", "message": "fit ended without on_train_end"},
        }
        if pending is not None:
            self._finish("interrupted", "interrupted", {"epoch": self._epoch})
        else:
            self._finish("failed", "error", details)

    def _finish(self, status: str, reason: str, details: dict[str, Any]) -> None:
        if not self._active or self._recorder is None:
            return
        self._active = False
        if self._checkpoints is not None:
            self._checkpoints.active = False
            self._checkpoints.flush(self.model)
        recorder = self._recorder
        recorder.stop_heartbeat()
        if self._batches:
            recorder.call("log_batch_metrics", self.run_id, self._batch_points())
        recorder.call(
            "finish_run",
            self.run_id,
            status=status,
            stop_reason=reason,
            stop_details=jsonable(details),
        )
        if self._guard is not None:
            self._guard.undo()
        if recorder.pending:
            warnings.warn(
                f"tracker: {recorder.pending} writes of run {self.run_id} could not reach the "
                "database",
                RuntimeWarning,
                stacklevel=2,
            )

    def _end_previous(self) -> None:
        """A callback reused after a `fit` that died unseen: close what is still open."""
        if self._active:
            self._on_fit_vanished()
        if self._guard is not None:
            self._guard.undo()
            self._guard = None
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def __del__(self) -> None:
        rec = getattr(self, "_recorder", None)
        if rec is not None:
            rec.stop_heartbeat()
