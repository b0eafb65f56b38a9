"""TrackingCallback on real `model.fit` runs of a tiny model, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import warnings

import pytest

from tracker import checkpoint_files

from .conftest import IN_CI
from .git_repo import commit, git, make_repo
from .keras_helpers import data, fit, model, tensorflow_only

keras = pytest.importorskip("keras") if not IN_CI else __import__("keras")
import numpy as np  # noqa: E402 - after Keras, which needs it: keras-free runs skip this module

from tracker import TrackingCallback, restore_weights  # noqa: E402

pytestmark = pytest.mark.keras


def _cb(store, tmp_path, **kwargs):
    return TrackingCallback(store=store, artifacts_dir=tmp_path / "artifacts", **kwargs)


def _series(store, run_id, key):
    return [p.value for p in store.metric_history(run_id, [key])]


def test_completed_run_records_params_model_epochs_and_lr(store, tmp_path):
    cb = _cb(
        store, tmp_path, experiment="exp", run_name="r1", params={"units": 4}, tags={"who": "me"}
    )
    fit(model(), [cb], epochs=3)
    run = store.get_run(cb.run_id)
    assert (run.status, run.stop_reason, run.name, run.experiment) == (
        "finished",
        "completed",
        "r1",
        "exp",
    )
    assert run.params == {"units": 4} and run.tags == {"who": "me"}
    assert run.epochs_done == 3 and run.epochs_planned == 3 and run.last_epoch == 2
    assert run.fit_params["batch_size"] == 16 and run.fit_params["validation"] is True
    assert run.fit_params["initial_epoch"] == 0 and run.fit_params["steps"] == 5
    assert run.model["class"] == "Sequential"
    assert run.model["trainable_params"] == 4 * 4 + 4 + 4 + 1
    assert run.model["optimizer"]["class"] == "SGD"
    assert run.model["architecture"]["class_name"] == "Sequential"
    first = run.model["layers"][0]
    assert (first["class"], first["output_shape"], first["params"]) == ("Dense", [None, 4], 20)
    assert run.environment["keras"] == keras.__version__ and run.environment["python"]
    keys = set(store.metric_keys(run.id))
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s"} <= keys
    assert [p.epoch for p in store.metric_history(run.id, ["loss"])] == [0, 1, 2]
    assert _series(store, run.id, "lr") == pytest.approx([0.05] * 3)
    history = cb.model.history.history
    assert _series(store, run.id, "val_loss") == pytest.approx(history["val_loss"])


def test_initial_epoch_numbering_follows_keras(store, tmp_path):
    cb = _cb(store, tmp_path)
    fit(model(), [cb], epochs=4, initial_epoch=2)
    assert [p.epoch for p in store.metric_history(cb.run_id, ["loss"])] == [2, 3]


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_details(store, tmp_path, restore):
    es = keras.callbacks.EarlyStopping(
        monitor="loss", patience=1, min_delta=10.0, restore_best_weights=restore
    )
    cb = _cb(store, tmp_path)
    fit(model(), [cb, es], epochs=10)
    run = store.get_run(cb.run_id)
    assert run.status == "finished" and run.stop_reason == "early_stopping"
    details = run.stop_details["early_stopping"]
    assert details["monitor"] == "loss" and details["patience"] == 1
    assert details["stopped_epoch"] == 1 and details["best_epoch"] == 0
    assert details["restored_epoch"] == (0 if restore else None)
    assert run.epochs_done == 2 and run.stop_details["epoch"] == 1


class Boom(keras.callbacks.Callback):
    def __init__(self, exc, at_epoch=1):
        super().__init__()
        self.exc, self.at_epoch = exc, at_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise self.exc


def test_exception_from_callback_marks_run_failed_at_once(store, tmp_path):
    cb = _cb(store, tmp_path)
    m = model()
    with pytest.raises(ValueError, match="kaput"):
        fit(m, [Boom(ValueError("kaput"))] + [cb], epochs=5)
    run = store.get_run(cb.run_id)  # the caller caught it and carries on: already recorded
    assert run.status == "failed" and run.stop_reason == "error"
    assert run.stop_details["error"] == {"type": "ValueError", "message": "kaput"}
    assert run.epochs_done == 2  # the failing epoch's logs were written before Boom raised
    assert "train_function" not in m.__dict__ or not hasattr(m.train_function, "__wrapped__")
    fit(m, [cb], epochs=1)  # the same model and callback train again normally
    assert store.get_run(cb.run_id).stop_reason == "completed"


def test_keyboard_interrupt_marks_run_interrupted(store, tmp_path):
    cb = _cb(store, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        fit(model(), [cb, Boom(KeyboardInterrupt(), at_epoch=0)], epochs=5)
    run = store.get_run(cb.run_id)
    assert run.status == "interrupted" and run.stop_reason == "interrupted"


def _bad_generator():
    x, y = data()
    for i in range(3):
        yield x[i * 16 : (i + 1) * 16], y[i * 16 : (i + 1) * 16]
    raise RuntimeError("bad shard")


class BadShards(keras.utils.PyDataset):
    def __len__(self):
        return 5

    def __getitem__(self, index):
        if index == 3:
            raise RuntimeError("bad shard")
        x, y = data()
        return x[index * 16 : (index + 1) * 16], y[index * 16 : (index + 1) * 16]


@pytest.mark.parametrize("source", ["generator", "PyDataset"])
def test_exception_from_data_marks_run_failed_at_once(store, tmp_path, source):
    """The input pipeline raises: the run is failed with the exception `fit` raised, before
    `fit` has left (the torch trainer draws batches in `fit` itself, outside the train step)."""
    cb = _cb(store, tmp_path)
    batches = _bad_generator() if source == "generator" else BadShards()
    with pytest.raises(Exception, match="bad shard") as raised:
        model().fit(batches, epochs=2, steps_per_epoch=5, verbose=0, callbacks=[cb])
    run = store.get_run(cb.run_id)  # the caller caught it: no waiting for the heartbeat
    assert (run.status, run.stop_reason) == ("failed", "error")
    assert run.stop_details["error"] == {
        "type": type(raised.value).__name__,
        "message": str(raised.value)[:2000],
    }
    assert run.stop_details["epoch"] == 0 and run.epochs_done == 0


def test_terminate_on_nan_records_epoch_and_batch(store, tmp_path):
    x, y = data()
    y[40:] = np.nan  # batch 2 of the first epoch produces a NaN loss
    m = model()
    m.compile(optimizer="sgd", loss="mse")  # torch's binary crossentropy refuses NaN targets
    cb = _cb(store, tmp_path)
    m.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN(), cb],
    )
    run = store.get_run(cb.run_id)
    assert run.status == "finished" and run.stop_reason == "terminate_on_nan"
    assert run.stop_details["terminate_on_nan"] == {"epoch": 0, "batch": 2}
    assert math.isnan(_series(store, run.id, "loss")[0])


class StopAfterOne(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_custom_callback_stop_names_its_class(store, tmp_path):
    cb = _cb(store, tmp_path)
    fit(model(), [cb, StopAfterOne()], epochs=5)
    run = store.get_run(cb.run_id)
    assert run.stop_reason == "stopped_by_callback" and run.status == "finished"
    assert run.stop_details["callback"] == "StopAfterOne" and run.epochs_done == 1


@pytest.mark.parametrize(
    "make_cb, expected",
    [
        (
            lambda: keras.callbacks.LearningRateScheduler(lambda e: 0.1 / (e + 1)),
            [0.1, 0.05, 0.1 / 3],
        ),
        (
            lambda: keras.callbacks.ReduceLROnPlateau(
                monitor="loss", factor=0.5, patience=0, min_delta=10.0
            ),
            [0.05, 0.05, 0.025],
        ),  # epoch 0 sets the plateau baseline
    ],
    ids=["scheduler", "plateau"],
)
def test_lr_under_callbacks(store, tmp_path, make_cb, expected):
    cb = _cb(store, tmp_path)
    fit(model(), [cb, make_cb()], epochs=3)
    assert _series(store, cb.run_id, "lr") == pytest.approx(expected, rel=1e-5)


def test_lr_from_schedule_object(store, tmp_path):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=5, decay_rate=0.5)
    cb = _cb(store, tmp_path)
    fit(model(lr=schedule), [cb], epochs=3)  # 5 steps an epoch: halves every epoch
    assert _series(store, cb.run_id, "lr") == pytest.approx([0.1, 0.05, 0.025], rel=1e-5)
    opt = store.get_run(cb.run_id).model["optimizer"]["config"]
    assert opt["learning_rate"]["class_name"] == "ExponentialDecay"


def test_placement_in_callback_list_does_not_change_the_record(store, tmp_path):
    def record(first):
        cb = _cb(store, tmp_path)
        others = [
            keras.callbacks.LearningRateScheduler(lambda e: 0.1 / (e + 1)),
            keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0),
            keras.callbacks.ModelCheckpoint(str(tmp_path / f"{first}-{{epoch}}.keras")),
        ]
        fit(model(), [cb, *others] if first else [*others, cb], epochs=5)
        run = store.get_run(cb.run_id)
        cks = [(c.epoch, c.source) for c in store.checkpoints(run.id)]
        return (
            run.stop_reason,
            run.epochs_done,
            _series(store, run.id, "lr"),
            _series(store, run.id, "loss"),
            cks,
        )

    assert record(True) == record(False)


def test_model_checkpoint_epoch_paths(store, tmp_path):
    mc = keras.callbacks.ModelCheckpoint(str(tmp_path / "ck" / "m-{epoch:02d}.keras"))
    cb = _cb(store, tmp_path, save_best_weights=False)
    fit(model(), [mc, cb], epochs=3)
    cks = store.checkpoints(cb.run_id)
    assert [(c.epoch, c.kind, c.source) for c in cks] == [
        (e, "model", "ModelCheckpoint") for e in range(3)
    ]
    assert [c.path for c in cks] == [
        str(tmp_path / "ck" / f"m-{e + 1:02d}.keras") for e in range(3)
    ]
    assert all(checkpoint_files.state(c) == "ok" for c in cks)
    assert [c.monitor for c in cks] == ["val_loss"] * 3
    assert cks[0].value == pytest.approx(_series(store, cb.run_id, "val_loss")[0])


def test_fixed_path_save_best_only_keeps_one_valid_reference(store, tmp_path):
    path = tmp_path / "best.weights.h5"
    mc = keras.callbacks.ModelCheckpoint(
        str(path), monitor="loss", save_best_only=True, save_weights_only=True
    )
    cb = _cb(store, tmp_path, save_best_weights=False)
    fit(model(), [cb, mc], epochs=4)
    cks = store.checkpoints(cb.run_id)
    assert len(cks) >= 2 and all(c.is_best and c.kind == "weights" for c in cks)
    assert [checkpoint_files.state(c) for c in cks] == ["modified"] * (len(cks) - 1) + ["ok"]


def test_integer_save_freq(store, tmp_path):
    mc = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "b-{epoch}-{batch}.weights.h5"), save_weights_only=True, save_freq=2
    )
    cb = _cb(store, tmp_path, save_best_weights=False)
    fit(model(), [mc, cb], epochs=2)  # 5 batches an epoch
    cks = store.checkpoints(cb.run_id)
    assert len(cks) == 5 and all(c.batch is not None for c in cks)
    assert {c.epoch for c in cks} == {0, 1}


def test_own_best_weights_and_restore(store, tmp_path):
    cb = _cb(store, tmp_path)
    m = model()
    best_preds = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            best_preds[epoch] = self.model.predict(data()[0], verbose=0)

    fit(m, [cb, Snapshot()], epochs=4)
    val = _series(store, cb.run_id, "val_loss")
    best_epoch = int(np.argmin(val))
    own = [c for c in store.checkpoints(cb.run_id) if c.source == "TrackingCallback"]
    assert own[-1].epoch == best_epoch and own[-1].monitor == "val_loss"
    fresh = model(seed=1)
    ck = restore_weights(fresh, cb.run_id, store=store)
    assert ck.epoch == best_epoch
    np.testing.assert_allclose(
        fresh.predict(data()[0], verbose=0), best_preds[best_epoch], rtol=1e-6
    )


def test_restore_refuses_a_modified_file(store, tmp_path):
    cb = _cb(store, tmp_path)
    fit(model(), [cb], epochs=2)
    ck = store.checkpoints(cb.run_id)[-1]
    with open(ck.path, "ab") as f:
        f.write(b"tampered")
    from tracker.errors import CheckpointError

    with pytest.raises(CheckpointError, match="changed"):
        restore_weights(model(), cb.run_id, store=store)


def test_reuse_across_fits_makes_new_runs(store, tmp_path):
    cb = _cb(store, tmp_path)
    m = model()
    fit(m, [cb], epochs=1)
    first = cb.run_id
    fit(m, [cb], epochs=2)
    assert cb.run_id != first
    assert store.get_run(first).epochs_done == 1 and store.get_run(cb.run_id).epochs_done == 2


def test_batch_logging_buffers_points(store, tmp_path):
    cb = _cb(store, tmp_path, log_every_n_batches=2)
    fit(model(), [cb], epochs=2)
    points = store.metric_history(cb.run_id, ["loss"], batches=True)
    assert [(p.epoch, p.step) for p in points] == [(e, b) for e in (0, 1) for b in (0, 2, 4)]
    # Each batch keeps the time it ended: in order, after the start, before its epoch's end.
    run = store.get_run(cb.run_id)
    ends = {p.epoch: p.time for p in store.metric_history(cb.run_id, ["loss"])}
    times = [p.time for p in points]
    assert times == sorted(times) and times[0] >= run.started_at
    assert all(p.time <= ends[p.epoch] for p in points)
    assert len(set(times)) == len(times)


def test_callbacks_given_a_url_share_one_store_across_fits(tmp_path):
    from tracker import open_store

    url = f"sqlite:///{tmp_path}/shared.db"
    m = model()
    first = TrackingCallback(db=url, artifacts_dir=tmp_path / "a")
    fit(m, [first], epochs=2)
    second = TrackingCallback(db=url, artifacts_dir=tmp_path / "a", log_every_n_batches=1)
    fit(m, [second], epochs=1)
    # the one store both recorders wrote to: the recorder offers no public handle on it (its
    # write path is being reworked for issue 12; a public `RunRecorder.store` would replace this)
    assert second._recorder._target() is first._recorder._target()
    with open_store(url) as s:
        assert [s.get_run(cb.run_id).epochs_done for cb in (first, second)] == [2, 1]
        assert s.get_run(second.run_id).status == "finished"
        steps = [p.step for p in s.metric_history(second.run_id, ["loss"], batches=True)]
        assert steps == [0, 1, 2, 3, 4]


def _as_on_jax_and_torch(monkeypatch):
    """Keras dispatches batch hooks on a thread pool only on a thread-safe backend (JAX, torch);
    the suite runs TensorFlow, and Keras offers no public switch, so its own flag is set (the
    one private name these tests use)."""
    import keras.src.backend

    monkeypatch.setattr(keras.src.backend, "IS_THREAD_SAFE", True)


def _batch_hooks_on_main_thread(callbacks) -> set[bool]:
    """Whether the batch hooks of a `fit` with `callbacks` ran on the main thread (True) or on
    Keras's thread pool (False), as a callback that allows either sees it."""
    import threading

    class Probe(keras.callbacks.Callback):
        async_safe = True

        def __init__(self):
            super().__init__()
            self.on_main = set()

        def on_train_batch_end(self, batch, logs=None):
            self.on_main.add(threading.current_thread() is threading.main_thread())

    probe = Probe()
    fit(model(), [probe, *callbacks], epochs=1, validation_split=0.0)
    return probe.on_main


def test_async_dispatch_stays_on(store, tmp_path, monkeypatch):
    """Keras dispatches batch hooks on a thread pool on thread-safe backends (JAX, torch) unless
    a callback overrides them without `async_safe`; the tracker must not turn that off."""
    _as_on_jax_and_torch(monkeypatch)
    assert _batch_hooks_on_main_thread([_cb(store, tmp_path)]) == {False}

    class Blocking(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    assert _batch_hooks_on_main_thread([Blocking()]) == {True}  # the probe sees the difference


def test_batches_are_recorded_in_order_under_async_dispatch(store, tmp_path, monkeypatch):
    """JAX and torch hand batch hooks to a thread pool, where a slow callback lets a later
    batch's hooks run first: every batch is still recorded, in order, with its own logs."""
    import threading
    import time

    _as_on_jax_and_torch(monkeypatch)

    class SlowOnEvenBatches(keras.callbacks.Callback):
        async_safe = True

        def __init__(self):
            super().__init__()
            self.seen = {}
            self.on_main = set()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if batch % 2 == 0:
                time.sleep(0.02)
            self.seen[(self.epoch, batch)] = float(logs["loss"])
            self.on_main.add(threading.current_thread() is threading.main_thread())

    slow = SlowOnEvenBatches()
    cb = _cb(store, tmp_path, log_every_n_batches=1)
    fit(model(), [slow, cb], epochs=2, validation_split=0.0)
    assert slow.on_main == {False}  # the hooks did run on Keras's thread pool
    points = store.metric_history(cb.run_id, ["loss"], batches=True)
    assert [(p.epoch, p.step) for p in points] == sorted(slow.seen)
    assert {(p.epoch, p.step): p.value for p in points} == slow.seen
    times = [p.time for p in points]
    assert times == sorted(times)


def test_git_runs_off_the_training_thread_and_the_run_has_its_commit(store, tmp_path, monkeypatch):
    """The run's git state is learned by the writer thread as it writes the run's creation:
    no `git` process is started from the thread that trains."""
    import subprocess
    import threading

    repo = make_repo(tmp_path / "repo")
    commit(repo, "train.py", "print('fit')\n")
    head = git(repo, "rev-parse", "HEAD")
    monkeypatch.chdir(repo)
    started_on = []
    run = subprocess.run

    def recorded(cmd, *a, **k):
        if cmd and cmd[0] == "git":
            started_on.append(threading.current_thread())
        return run(cmd, *a, **k)

    monkeypatch.setattr(subprocess, "run", recorded)
    cb = _cb(store, tmp_path)
    fit(model(), [cb], epochs=2)
    assert started_on and threading.current_thread() not in started_on
    environment = store.get_run(cb.run_id).environment
    assert environment["git_commit"] == head and environment["cwd"] == str(repo)


def test_unreachable_database_spools_the_run_and_sync_pushes_it(tmp_path):
    """The database cannot be opened at all: training goes on, the whole run lands in the spool
    (named once in a warning), and `tracker sync` moves it into the database later."""
    from tracker import open_store
    from tracker.store.spool import sync

    missing = tmp_path / "not-yet"
    url = f"sqlite:///{missing}/x.db"
    spool = tmp_path / "spool.db"
    cb = TrackingCallback(db=url, artifacts_dir=tmp_path / "a", spool_path=spool)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")  # Keras's own deprecation notices are not ours to judge
        history = fit(model(), [cb], epochs=3)
    assert len(history.history["loss"]) == 3
    ours = [str(w.message) for w in record if str(w.message).startswith("tracker")]
    assert len(ours) == 1 and "spool file" in ours[0] and str(spool) in ours[0]
    with open_store(f"sqlite:///{spool}") as s:
        run = s.get_run(cb.run_id)
        assert (run.status, run.epochs_done) == ("finished", 3)
        assert len(s.checkpoints(run.id)) >= 1
    missing.mkdir()
    with open_store(url) as target:
        first = sync(spool, target)
        again = sync(spool, target)
        run = target.get_run(cb.run_id)
        assert (run.status, run.stop_reason, run.epochs_done) == ("finished", "completed", 3)
        assert _series(target, run.id, "loss") == pytest.approx(history.history["loss"])
    assert first.runs_created == 1 and first.points > 0
    assert again.points == 0 and again.checkpoints == 0


def test_only_the_chief_writes(store, tmp_path, monkeypatch):
    """TF_CONFIG names this process a non-chief worker and no strategy (or backend
    distribution) says otherwise: its fits are not recorded, and it says so, once."""
    from tracker.training import callback

    # "once" is once a process: a test before this one may have been told already, and no
    # public call forgets it, so the flag is reset here
    monkeypatch.setattr(callback, "_said_not_recorded", False)
    monkeypatch.setenv(
        "TF_CONFIG",
        '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}',
    )
    cb = _cb(store, tmp_path)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")  # the backend's own notices are not ours to judge
        fit(model(), [cb], epochs=1)
        fit(model(), [cb], epochs=1)
    said = [str(w.message) for w in record if str(w.message).startswith("tracker")]
    assert len(said) == 1 and "does not record fits in this process" in said[0]
    assert "TF_CONFIG names it worker 1" in said[0]
    assert cb.run_id is None and store.list_runs() == []


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Received: mode='best'"):
        TrackingCallback(mode="best")
    with pytest.raises(ValueError, match="log_every_n_batches"):
        TrackingCallback(log_every_n_batches=0)


def test_resume_appends_to_the_same_run(store, tmp_path):
    m = model()
    first = _cb(store, tmp_path)
    fit(m, [first], epochs=2)
    again = _cb(store, tmp_path, resume=first.run_id[:8])
    fit(m, [again], epochs=4, initial_epoch=2)
    assert again.run_id == first.run_id
    run = store.get_run(first.run_id)
    assert (run.status, run.stop_reason, run.epochs_done) == ("finished", "completed", 4)
    assert [p.epoch for p in store.metric_history(run.id, ["loss"])] == [0, 1, 2, 3]
    fit(m, [again], epochs=1)  # resume applies to one fit: the next one is a new run
    assert again.run_id != first.run_id


@tensorflow_only("Keras's TensorBoard callback writes through tf.summary")
def test_tensorboard_and_csv_logger_are_recorded_as_references(store, tmp_path):
    tb = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "tb"))
    csv_log = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    cb = _cb(store, tmp_path)
    fit(model(), [tb, csv_log, cb], epochs=1)
    refs = store.get_run(cb.run_id).references
    assert {"kind": "tensorboard", "path": str(tmp_path / "tb")} in refs
    assert {"kind": "csv_logger", "path": str(tmp_path / "log.csv")} in refs
    assert (tmp_path / "log.csv").is_file()


def test_best_weights_kept_in_memory_are_written_when_fit_fails(store, tmp_path):
    """Between saves the best weights live in memory; a failing fit still writes them."""
    cb = _cb(store, tmp_path, monitor="loss")
    with pytest.raises(ValueError):
        fit(model(), [cb, Boom(ValueError("late"), at_epoch=3)], epochs=6)
    losses = _series(store, cb.run_id, "loss")
    own = store.checkpoints(cb.run_id)
    assert own[0].epoch == 0  # the first best is written at once
    assert own[-1].epoch == int(np.argmin(losses)) and checkpoint_files.state(own[-1]) == "ok"
    assert len(own) <= 2  # not one file write per improvement


def test_layer_list_follows_the_model_between_fits(store, tmp_path):
    m = model()
    fit(m, [first := _cb(store, tmp_path)], epochs=1)
    m.layers[0].trainable = False
    m.compile(optimizer=keras.optimizers.SGD(0.05), loss="binary_crossentropy")
    fit(m, [second := _cb(store, tmp_path)], epochs=1)
    before = store.get_run(first.run_id).model
    after = store.get_run(second.run_id).model
    assert [layer["trainable"] for layer in before["layers"]][0] is True
    assert [layer["trainable"] for layer in after["layers"]][0] is False
    assert after["non_trainable_params"] == 20 and before["non_trainable_params"] == 0


def test_environment_names_the_backend_and_its_versions(store, tmp_path):
    """The backend Keras trained on, and the versions of Keras and of each backend library as
    imported in this process (null where it is not installed)."""
    import importlib
    import importlib.util

    cb = _cb(store, tmp_path)
    fit(model(), [cb], epochs=1)
    env = store.get_run(cb.run_id).environment
    assert env["backend"] == keras.backend.backend()
    assert env["keras"] == keras.__version__
    for name in ("tensorflow", "jax", "torch"):
        installed = importlib.util.find_spec(name) is not None
        want = importlib.import_module(name).__version__ if installed else None
        assert env[name] == want, name
    assert env[keras.backend.backend()] is not None
    (listed,) = store.list_runs(environment={"backend": keras.backend.backend()})
    assert listed.run.id == cb.run_id
