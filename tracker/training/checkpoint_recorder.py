"""Checkpoints written during a run: the callback's own best-weights copy, and every file that
ModelCheckpoint writes, each recorded with its size and sha256 as written.

Duck-typed like `keras_objects` (no Keras import): a model only needs `save_weights`, a
ModelCheckpoint its `_save_model`, `_get_file_path`, `monitor` and `save_*` attributes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tracker.artifacts import ArtifactStore, best_key, checkpoint_key, shown
from tracker.checkpoint_files import OWN_SOURCE, file_digest
from tracker.modes import infer_mode, is_improvement
from tracker.records import SummaryRecord
from tracker.store.run_store import Store
from tracker.training import keras_objects
from tracker.training.notices import warn
from tracker.training.recorder import RunRecorder
from tracker.uploads import Uploader
from tracker.values import scalar

SAVE_INTERVAL_S = 60.0


class CheckpointKeeper:
    """Keeps and records the checkpoints of one run."""

    def __init__(
        self,
        recorder: RunRecorder,
        run_id: str,
        best_path: Path,
        *,
        monitor: str | None,
        mode: str,
        min_delta: float,
        keep_best: bool,
        artifacts: ArtifactStore | None = None,
        upload_checkpoints: bool = False,
    ) -> None:
        self._recorder = recorder
        self._artifacts = artifacts
        self._upload_checkpoints = upload_checkpoints
        self._uploader: Uploader | None = None
        self.run_id = run_id
        self.best_path = best_path
        self._monitor = monitor
        self._mode = mode
        self._min_delta = min_delta
        self._keep_best = keep_best
        self._best: float | None = None
        self._best_mode: str | None = None
        self._resolved = False
        self._warned_missing = False
        self._watched_best: dict[int, float] = {}
        self._pending: tuple[int, float, list] | None = None
        self._last_save = -math.inf
        self.active = True

    # -- the callback's own best weights --------------------------------------------------------

    def after_epoch(self, model: Any, epoch: int, values: dict[str, float]) -> None:
        """Keep the weights of a new best epoch: in memory at once (as EarlyStopping's
        `restore_best_weights` does), on disk at most every `SAVE_INTERVAL_S` and when the run
        ends, so tiny fast epochs do not pay for a file write each. Never raises: a model that
        cannot give its weights turns the best-weights copy off with a warning."""
        if not self._keep_best or not self._resolve(values):
            return
        try:
            self._keep(model, epoch, values)
        except Exception as e:  # noqa: BLE001 - training must go on
            self._keep_best = False
            warn(
                f"tracker stops keeping best weights: {type(e).__name__}: {e}",
                stacklevel=4,
            )

    def continue_from(self, summaries: dict[str, SummaryRecord]) -> None:
        """A resumed run: only an epoch better than its recorded best replaces the best file."""
        if self._monitor is None or self._monitor not in summaries or not self._resolve({}):
            return
        best, _ = summaries[self._monitor].best(self._best_mode or "min")
        if best is not None and (
            self._best is None or is_improvement(best, self._best, self._best_mode or "min")
        ):
            self._best = best

    def _keep(self, model: Any, epoch: int, values: dict[str, float]) -> None:
        key = self._monitor
        if key not in values:
            self._warn_missing(key, values)
            return
        current = values[key]
        if not is_improvement(current, self._best, self._best_mode or "min", self._min_delta):
            return
        self._best = current
        due = time.monotonic() - self._last_save >= SAVE_INTERVAL_S
        if due:
            self._save(model, epoch, current, None)  # the model holds these weights right now
        else:
            self._pending = (epoch, current, model.get_weights())

    def _warn_missing(self, key: str | None, values: dict[str, float]) -> None:
        """Once per run; not for an epoch that simply ran no validation (`validation_freq`)."""
        skipped_validation = str(key).startswith("val_") and not any(
            k.startswith("val_") for k in values
        )
        if self._warned_missing or skipped_validation:
            return
        self._warned_missing = True
        warn(
            f"tracker: best weights monitor {key!r} is not in the logs; available: "
            f"{', '.join(sorted(values))}. Pass TrackingCallback(monitor=...) to keep the best "
            "weights by one of them",
            stacklevel=5,
        )

    def flush(self, model: Any) -> None:
        """Write the best weights kept in memory and finish the uploads to the artifact store
        (called when the run ends, however it ends)."""
        if self._pending is not None:
            epoch, value, weights = self._pending
            try:
                self._save(model, epoch, value, weights)
            except Exception as e:  # noqa: BLE001 - the run must still be closed
                warn(f"tracker could not write best weights: {e}", stacklevel=4)
        self.finish_uploads()

    def finish_uploads(self) -> None:
        """Wait for the background uploads; a run that ends with some not done says so."""
        uploader = self._uploader
        if uploader is None:
            return
        try:
            uploader.wait()
        except KeyboardInterrupt:
            self._warn_unfinished(uploader.pending, "interrupted")
            raise
        if uploader.failed:
            self._warn_unfinished(len(uploader.failed), uploader.failed[0])

    def _warn_unfinished(self, count: int, why: str) -> None:
        root = shown(self._artifacts.root) if self._artifacts else "?"
        warn(
            f"tracker: {count} checkpoint upload(s) of run {self.run_id} to {root} did not "
            f"finish ({why}); `tracker sync` finishes them from the files on this machine",
            stacklevel=5,
        )

    def _save(self, model: Any, epoch: int, value: float, weights: list | None) -> None:
        self._pending = None
        self._last_save = time.monotonic()
        path = self.best_path
        tmp = path.with_name(".saving.weights.h5")  # never a half-written best file
        now = model.get_weights() if weights is not None else None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if weights is not None:
                model.set_weights(weights)
            model.save_weights(tmp, overwrite=True)
            os.replace(tmp, path)
        except OSError as e:
            warn(f"tracker could not save best weights to {path}: {e}", stacklevel=4)
            return
        finally:
            if now is not None:
                model.set_weights(now)
        self.record(path, "weights", OWN_SOURCE, epoch, None, self._monitor, value, True)

    def _resolve(self, values: dict[str, float]) -> bool:
        """The direction of the monitor, decided once. A monitor not chosen before the run
        (hooks called by hand, without `fit`) is taken from the first epoch's logs."""
        if self._resolved:
            return self._best_mode is not None
        self._resolved = True
        if self._monitor is None:
            self._monitor = "val_loss" if "val_loss" in values else "loss"
        mode = self._mode if self._mode != "auto" else infer_mode(self._monitor)
        if mode is None:
            warn(
                f"tracker cannot tell whether {self._monitor!r} is better high or low; pass "
                "mode='min' or mode='max' to keep best weights",
                stacklevel=5,
            )
        self._best_mode = mode
        return mode is not None

    # -- ModelCheckpoint ------------------------------------------------------------------------

    def watcher(self, cb: Any) -> Callable[[Any], Any]:
        """A wrapper factory for `cb._save_model` that records each file it really wrote."""

        def factory(save_model: Any) -> Any:
            def wrapper(epoch: int, batch: int | None, logs: dict[str, Any] | None) -> Any:
                try:
                    path = Path(cb._get_file_path(epoch, batch, logs or {})).resolve()
                    before = _stat(path)
                except Exception:  # noqa: BLE001 - Keras reports its own formatting errors
                    return save_model(epoch, batch, logs)
                result = save_model(epoch, batch, logs)
                after = _stat(path)
                if after is not None and after != before and self.active:
                    self._saved(cb, path, epoch, batch, logs or {})
                return result

            return wrapper

        return factory

    def _saved(
        self, cb: Any, path: Path, epoch: int, batch: int | None, logs: dict[str, Any]
    ) -> None:
        value = scalar(logs.get(cb.monitor))
        if cb.save_best_only:
            is_best = value is not None
        else:
            prev = self._watched_best.get(id(cb))
            is_best = value is not None and is_improvement(
                value, prev, keras_objects.monitor_mode(cb)
            )
            if is_best:
                self._watched_best[id(cb)] = value  # type: ignore[assignment]
        kind = "weights" if cb.save_weights_only else "model"
        monitor = cb.monitor if value is not None else None
        self.record(path, kind, type(cb).__name__, epoch, batch, monitor, value, is_best)

    def record(
        self,
        path: Path,
        kind: str,
        source: str,
        epoch: int | None,
        batch: int | None,
        monitor: str | None,
        value: float | None,
        is_best: bool,
    ) -> None:
        try:
            size, sha = file_digest(path)
        except OSError:
            return
        key, in_place = self._store_key(path, source, sha)
        store = self._artifacts
        self._recorder.submit(  # with the epoch's writes: applied in order, off training
            Store.add_checkpoint,
            self.run_id,
            path=str(path),
            kind=kind,
            source=source,
            size=size,
            sha256=sha,
            epoch=epoch,
            batch=batch,
            monitor=monitor,
            value=value,
            is_best=is_best,
            artifact_root=store.root if store is not None and key else None,
            artifact_key=key,
            uploaded=in_place,
        )
        if key and store is not None and not in_place:
            self._upload(store, path, key, size, sha)

    def _store_key(self, path: Path, source: str, sha: str) -> tuple[str | None, bool]:
        """The key of the file's copy in the artifact store (None: it gets none), and whether
        the file already is that copy (the best weights written straight into a local store)."""
        store = self._artifacts
        if store is None:
            return None, False
        if source == OWN_SOURCE:
            key = best_key(self.run_id)
            return key, store.local is not None and store.local / key == path
        if self._upload_checkpoints:
            return checkpoint_key(self.run_id, sha, str(path)), False
        return None, False

    def _upload(self, store: ArtifactStore, path: Path, key: str, size: int, sha: str) -> None:
        if self._uploader is None:
            recorder, run_id = self._recorder, self.run_id

            def confirmed(key: str, sha: str) -> None:
                recorder.call(Store.mark_uploaded, run_id, key, sha)

            self._uploader = Uploader(store, confirmed)
        self._uploader.submit(path, key, size, sha)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
