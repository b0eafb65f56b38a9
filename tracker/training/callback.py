"""`TrackingCallback`: one Keras callback that records a whole training run.

A thin adapter: it reads what only Keras objects know (the `fit` call, the model, the learning rate,
the other callbacks) and hands it to the Keras-free `RunSession`, which owns the run. How a
failure of the database is survived lives in `recorder.py`; how exceptions, signals and the order
of other callbacks are handled lives in `fitguard.py`. No hook lets a failure of the tracker's own
reach training: it is reported as a warning and the run is closed as well as it can be.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import keras

from tracker.artifacts import ArtifactStore, local_folder, store_location
from tracker.clock import DEFAULT_HEARTBEAT_S, utcnow
from tracker.config import resolve_url
from tracker.modes import check_mode
from tracker.store.db import load_dialect
from tracker.store.run_store import Store
from tracker.store.spool import default_spool_path
from tracker.training import keras_objects
from tracker.training.checkpoint_recorder import CheckpointKeeper
from tracker.training.environment import collect_environment
from tracker.training.exits import TerminatedBySignal, die_by_signal
from tracker.training.fitguard import FitGuard, find_fit
from tracker.training.notices import warn
from tracker.training.recorder import RunRecorder
from tracker.training.session import RunSession, choose_monitor
from tracker.values import scalar


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
        artifacts_dir: local folder for that file. Defaults to `TRACKER_ARTIFACTS_DIR`, else
            `<db file stem>-artifacts/` beside a SQLite database, else `./tracker-artifacts`.
        artifacts: the artifact store the run's files are copied to, so any machine can
            restore them: a folder (local or shared, such as NFS) or an fsspec URL
            (`s3://bucket/prefix`, `gs://...`; credentials from the protocol's own sources).
            Defaults to `TRACKER_ARTIFACTS`, else the `artifacts_dir` folder itself.
        upload_checkpoints: also copy every file ModelCheckpoint writes to the artifact store
            (in the background; the files stay where they were written). Defaults to `False`.
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
        artifacts: str | os.PathLike[str] | None = None,
        upload_checkpoints: bool = False,
        log_every_n_batches: int | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_S,
        spool_path: str | os.PathLike[str] | None = None,
        resume: str | None = None,
        store: Store | None = None,
    ) -> None:
        super().__init__()
        check_mode(mode, ValueError)
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
        self.artifacts = artifacts
        self.upload_checkpoints = bool(upload_checkpoints)
        self.log_every_n_batches = log_every_n_batches
        self.heartbeat_interval = float(heartbeat_interval)
        self.spool_path = spool_path
        self.resume = resume
        self._store = store
        if store is None:
            # The database driver's SQLAlchemy module is imported now, with the rest of the
            # library, rather than by the first `fit`.
            load_dialect(resolve_url(db))
        # Under the guard the batch hook does nothing of its own (the guard records batches in
        # the training thread), so Keras may keep dispatching the others' asynchronously.
        self.async_safe = True
        self.run_id: str | None = None
        self._recorder: RunRecorder | None = None
        self._session: RunSession | None = None
        self._guard: FitGuard | None = None
        self._others: list[Any] = []
        self._optimizers: dict[str, Any] = {}
        self._steps: dict[str, int] = {}
        self._built_at_start = True

    # -- run lifecycle --------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._end_previous()
        self.run_id = None
        reason = keras_objects.not_the_writer(self.model)
        if reason is not None:
            _not_recorded(reason)  # one run per fit, written by process 0
            return
        try:
            self._begin()
        except Exception as e:  # noqa: BLE001 - a tracker failure never stops training
            self._broken(e)

    def _begin(self) -> None:
        url = None if self._store is not None else resolve_url(self.db)
        spool = Path(self.spool_path) if self.spool_path else default_spool_path()
        recorder = self._recorder = RunRecorder(
            url, self._store, spool_path=spool.expanduser().resolve()
        )
        with recorder.held():  # the store opens once this hook's own work is done
            self._begin_recorded(recorder)

    def _begin_recorded(self, recorder: RunRecorder) -> None:
        cb_list, fit_frame = find_fit(self)
        fit_locals = dict(fit_frame.f_locals) if fit_frame is not None else {}
        others = self._others = [c for c in getattr(cb_list, "callbacks", []) if c is not self]
        self._optimizers = keras_objects.optimizers(self.model)
        self._steps = {}
        self._built_at_start = bool(getattr(self.model, "built", True))
        session = RunSession(
            recorder,
            uuid.uuid4().hex,
            heartbeat_interval=self.heartbeat_interval,
            log_every_n_batches=self.log_every_n_batches,
            model=self.model,
        )
        resume, self.resume = self.resume, None  # used by this fit only
        session.start(self._facts(fit_locals, others), resume)
        self._session, self.run_id = session, session.run_id
        refs = keras_objects.references(others)
        if refs:
            recorder.submit(Store.update_run, session.run_id, references=refs)
        es = keras_objects.early_stopping(others)
        store, folder = self._artifacts_store()
        session.keeper = CheckpointKeeper(
            recorder,
            session.run_id,
            folder / session.run_id / "best.weights.h5",
            monitor=choose_monitor(
                self.monitor,
                es.monitor if es is not None else None,
                keras_objects.has_validation(fit_locals),
            ),
            mode=self.mode,
            min_delta=self.min_delta,
            keep_best=self.save_best_weights,
            artifacts=store,
            upload_checkpoints=self.upload_checkpoints,
        )
        if cb_list is not None:
            self._install_guard(cb_list, fit_frame)
        recorder.start_heartbeat(
            session.run_id,
            self.heartbeat_interval,
            alive=self._guard.fit_alive if self._guard else None,
            on_dead=self._on_fit_vanished,
        )

    def _facts(self, fit_locals: dict[str, Any], others: list[Any]) -> dict[str, Any]:
        """What the run is created with: the fit's arguments, the model, the environment (the
        store turns numpy and tensor values into plain ones, for these and every later write)."""
        return dict(
            experiment=self.experiment,
            name=self.run_name,
            params=self.user_params,
            tags=self.tags,
            fit_params=keras_objects.fit_params(self.params, fit_locals, others),
            environment=collect_environment(),
            model=keras_objects.model_info(self.model),
            epochs_planned=scalar_int((self.params or {}).get("epochs")),
            heartbeat_interval=self.heartbeat_interval,
            started_at=utcnow(),
        )

    def _artifacts_store(self) -> tuple[ArtifactStore, Path]:
        """The artifact store, and the local folder of the best-weights file: the store itself
        when it is a folder and no `artifacts_dir` says otherwise."""
        url = self._store.url if self._store else resolve_url(self.db)
        store = ArtifactStore(store_location(self.artifacts, self.artifacts_dir, url))
        if store.local is not None and self.artifacts_dir is None:
            return store, store.local
        return store, local_folder(self.artifacts_dir, url)

    def _install_guard(self, cb_list: Any, fit_frame: Any) -> None:
        guard = FitGuard(
            on_error=self._on_error,
            after={
                "on_epoch_begin": self._after_epoch_begin,
                "on_epoch_end": self._after_epoch_end,
                "on_train_end": self._after_train_end,
                # In the training thread, in order: on JAX and torch Keras hands batch hooks to
                # a thread pool, where they may run out of order.
                "on_train_batch_end": self._after_batch_end,
            },
            on_stop_training=self._on_stop_training,
            on_unseen=self._on_unseen,
        )
        recorder = self._recorder
        guard.busy = lambda: bool(recorder and recorder.busy)
        self._guard = guard
        guard.install(self.model, cb_list, fit_frame, own=self)
        keeper = self._session.keeper if self._session else None
        for cb in keras_objects.find(self._others, "ModelCheckpoint"):
            if keeper is not None:
                guard.patch_method(cb, "_save_model", keeper.watcher(cb))
        guard.install_signals()

    # Without a CallbackList on the stack (hooks called by hand) the hooks do the work directly;
    # with one, the guard runs the same work after every other callback.
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._guard is None:
            self._after_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._session is not None:
            self._session.share_logs(epoch, logs)
        if self._guard is None:
            self._after_epoch_end(epoch, logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._guard is None:
            self._after_train_end(logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._guard is None:
            self._after_batch_end(batch, logs)

    def _after_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        session = self._session
        if session is not None and session.log_every_n_batches:
            session.batch_end(batch, logs)

    def _after_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._session is not None and self._session.active:
            try:
                if len(self._optimizers) > 1:
                    self._steps = keras_objects.steps_taken(self._optimizers)
                lrs = keras_objects.current_lrs(self._optimizers)
                self._session.epoch_begin(epoch, lrs)
            except Exception as e:  # noqa: BLE001
                self._broken(e)

    def _after_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._session is None or not self._session.active:
            return
        try:
            self._learn_from_the_steps()
            self._session.epoch_end(epoch, logs)
        except Exception as e:  # noqa: BLE001
            self._broken(e)
        if self._guard is not None:
            self._guard.raise_pending_signal()

    def _learn_from_the_steps(self) -> None:
        """What only the steps tell: which of several optimizers actually stepped this epoch (a
        GAN's compile-time default never does), and the weights of a model built by them."""
        session = self._session
        assert session is not None
        if self._steps:
            now = keras_objects.steps_taken(self._optimizers)
            idle = {k for k, n in now.items() if n == self._steps.get(k)}
            session.epoch_lrs = {k: v for k, v in session.epoch_lrs.items() if k not in idle}
        if not self._built_at_start:
            self._built_at_start = True
            session.update_facts(model=keras_objects.model_info(self.model))

    def _after_train_end(self, logs: dict[str, Any] | None = None) -> None:
        session = self._session
        if session is None or not session.active:
            return
        try:
            reason, details = keras_objects.stop_reason(
                self.model, session.stopper, self._others, session.epoch
            )
        except Exception as e:  # noqa: BLE001
            reason, details = "completed", {"epoch": session.epoch, "tracker_error": repr(e)}
        session.finish("finished", reason, details)
        self._release()

    # -- how the run ends -----------------------------------------------------------------------

    def _on_stop_training(self, cb: Any, hook: str, args: tuple[Any, ...]) -> None:
        if self._session is None:
            return
        epoch = args[0] if hook == "on_epoch_begin" and args else self._session.epoch
        batch = args[0] if "batch" in hook and args else None
        self._session.stopped_by(cb, epoch, batch)

    def _on_error(self, e: BaseException, where: str = "", args: tuple[Any, ...] = ()) -> None:
        if self._session is None:
            return
        self._session.failed(e, where, args)
        self._release()
        if isinstance(e, TerminatedBySignal):
            die_by_signal(e.signum)

    def _on_fit_vanished(self) -> None:
        """`fit` left without passing through a wrapped call: an exception in Keras's own loop."""
        guard = self._guard
        if guard is not None:
            self._on_unseen(guard.vanished_with(), guard.raised_signal)
        elif self._session is not None:
            self._session.vanished(None, None)

    def _on_unseen(self, e: BaseException | None, signum: int | None) -> None:
        session, guard = self._session, self._guard
        if session is None:
            return
        session.vanished(e, signum)
        if guard is not None:
            guard.undo()
            if e is not None or signum is not None:
                guard.stop_watching()

    def _release(self) -> None:
        if self._guard is not None:
            self._guard.undo()
            self._guard.stop_watching()

    def _broken(self, e: Exception) -> None:
        """The tracker itself failed: say so, close the run, and leave training alone."""
        warn(
            f"tracker stops recording this fit: {type(e).__name__}: {e}",
            stacklevel=3,
        )
        session = self._session
        if session is not None and session.active:
            details = {
                "epoch": session.epoch,
                "error": {"type": "TrackerError", "message": f"{type(e).__name__}: {e}"},
            }
            session.finish("failed", "error", details)
        self._release()
        self._session = None

    def _end_previous(self) -> None:
        """A callback reused after a `fit` that died unseen: close what is still open."""
        if self._session is not None and self._session.active:
            self._on_fit_vanished()
        self._release()
        self._guard = None
        self._session = None
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def __del__(self) -> None:
        rec = getattr(self, "_recorder", None)
        if rec is not None:
            rec.stop_heartbeat()


_said_not_recorded = False


def _not_recorded(reason: str) -> None:
    """Say once per process that its fits are left to the chief."""
    global _said_not_recorded
    if not _said_not_recorded:
        _said_not_recorded = True
        warn(
            f"tracker does not record fits in this process: {reason}; "
            "process 0 (the chief) records the run",
            stacklevel=4,
        )


def scalar_int(value: Any) -> int | None:
    number = scalar(value)
    return int(number) if number is not None else None
