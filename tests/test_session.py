"""The Keras-free machinery on plain Python objects: the run session, the fit guard's layered
wrappers, the best-weights keeper, and what is read from a `fit` call. No TensorFlow needed."""

from __future__ import annotations

import math
import signal
import time
import uuid
import warnings

import pytest

from tracker.training.checkpoint_recorder import CheckpointKeeper
from tracker.training.fitguard import FitGuard
from tracker.training.keras_objects import fit_params, has_validation
from tracker.training.recorder import RunRecorder
from tracker.training.session import RunSession, choose_monitor


class WeightsModel:
    """What the keeper needs of a model: weights it can give, take and write."""

    stop_training = False

    def __init__(self):
        self.weights = [0.0]

    def get_weights(self):
        return list(self.weights)

    def set_weights(self, weights):
        self.weights = list(weights)

    def save_weights(self, path, overwrite=True):
        with open(path, "w") as f:
            f.write(repr(self.weights))


def _session(store, tmp_path, *, n=None, monitor="val_loss", mode="auto", min_delta=0.0):
    recorder = RunRecorder(None, store)
    model = WeightsModel()
    session = RunSession(
        recorder, uuid.uuid4().hex, heartbeat_interval=30.0, log_every_n_batches=n, model=model
    )
    return session, recorder, model, (monitor, mode, min_delta)


def _keeper(session, recorder, tmp_path, monitor, mode="auto", min_delta=0.0):
    session.keeper = CheckpointKeeper(
        recorder,
        session.run_id,
        tmp_path / session.run_id / "best.weights.h5",
        monitor=monitor,
        mode=mode,
        min_delta=min_delta,
        keep_best=True,
    )
    return session.keeper


def _epochs(store, run_id):
    out: dict[int, dict[str, float]] = {}
    for p in store.metric_history(run_id):
        out.setdefault(p.epoch, {})[p.key] = p.value
    return out


# -- the session ----------------------------------------------------------------------------------


def test_a_whole_run_on_plain_objects(store, tmp_path):
    session, recorder, model, _ = _session(store, tmp_path, n=2)
    session.start({"experiment": "plain", "fit_params": {"initial_epoch": 0}, "epochs_planned": 2})
    _keeper(session, recorder, tmp_path, "val_loss")
    logs_seen = []
    for epoch, val in enumerate([0.5, 0.7]):
        session.epoch_begin(epoch, {"lr": 0.1})
        for batch in range(4):
            session.batch_end(batch, {"loss": 1.0 + batch})
        logs = {"loss": 0.9, "compile_metrics": {"mae": 0.3}, "val_loss": val}
        session.share_logs(epoch, logs)
        logs["val_f1"] = 0.25 * (epoch + 1)  # a callback after ours adds a key
        logs_seen.append(dict(logs))
        session.epoch_end(epoch, None)
    session.finish("finished", "completed", {"epoch": 1})
    run = store.get_run(session.run_id)
    assert (run.status, run.epochs_done) == ("finished", 2)
    epochs = _epochs(store, run.id)
    for epoch, logs in enumerate(logs_seen):
        assert epochs[epoch]["val_f1"] == logs["val_f1"] and epochs[epoch]["mae"] == 0.3
        assert epochs[epoch]["lr"] == 0.1 and "compile_metrics" not in epochs[epoch]
    steps = [p.step for p in store.metric_history(run.id, ["loss"], batches=True)]
    assert steps == [0, 2, 0, 2]
    (ck,) = store.checkpoints(run.id)
    assert (ck.epoch, ck.monitor, ck.value) == (0, "val_loss", 0.5)


def test_batches_reported_per_execution_group(store, tmp_path):
    session, *_ = _session(store, tmp_path, n=4)
    session.start({"experiment": "spe"})
    session.epoch_begin(0, {})
    reported = [3, 7, 11, 15]  # steps_per_execution=4: Keras reports each group's last batch
    for batch in reported:
        session.batch_end(batch, {"loss": float(batch)})
    session.epoch_end(0, {"loss": 1.0})
    session.finish("finished", "completed", {})
    points = store.metric_history(session.run_id, ["loss"], batches=True)
    assert [p.step for p in points] == reported


@pytest.mark.parametrize(
    "error, status, kind",
    [
        (KeyboardInterrupt(), "interrupted", None),
        (ValueError("bad"), "failed", "ValueError"),
    ],
)
def test_failed_records_the_exception(store, tmp_path, error, status, kind):
    session, *_ = _session(store, tmp_path)
    session.start({"experiment": "fail"})
    session.epoch_begin(0, {})
    session.epoch_end(0, {"loss": 1.0})
    session.failed(error, "on_epoch_begin", (1, {}))  # raised in epoch 1's begin
    run = store.get_run(session.run_id)
    assert run.status == status and run.stop_details["epoch"] == 1
    if kind:
        assert run.stop_details["error"] == {"type": kind, "message": str(error)}


def test_a_vanished_fit_is_provisional_until_its_exception_is_known(store, tmp_path):
    session, *_ = _session(store, tmp_path)
    session.start({"experiment": "vanish"})
    session.vanished(None, None)
    assert store.get_run(session.run_id).stop_details["error"]["type"] == "unknown"
    session.vanished(OSError("disk gone"), None)
    run = store.get_run(session.run_id)
    assert run.status == "failed" and run.stop_details["error"]["type"] == "OSError"
    session.vanished(ValueError("later"), None)  # settled: nothing replaces it now
    assert store.get_run(session.run_id).stop_details["error"]["type"] == "OSError"


def test_a_vanished_fit_after_our_signal_is_an_interruption(store, tmp_path):
    session, *_ = _session(store, tmp_path)
    session.start({"experiment": "sig"})
    session.vanished(None, signal.SIGINT)
    run = store.get_run(session.run_id)
    assert (run.status, run.stop_details["signal"]) == ("interrupted", "SIGINT/KeyboardInterrupt")


def test_resume_rewinds_and_continues_the_best(store, tmp_path):
    first, recorder, _, _ = _session(store, tmp_path)
    first.start({"experiment": "resume"})
    _keeper(first, recorder, tmp_path, "val_loss")
    for epoch, val in enumerate([0.9, 0.4, 0.6, 0.8]):
        first.epoch_begin(epoch, {})
        first.epoch_end(epoch, {"val_loss": val})
    first.finish("finished", "completed", {})

    again, recorder2, _, _ = _session(store, tmp_path)
    again.start({"experiment": "resume", "fit_params": {"initial_epoch": 2}}, first.run_id)
    assert again.run_id == first.run_id
    keeper = _keeper(again, recorder2, tmp_path, "val_loss")
    for epoch, val in [(2, 0.5), (3, 0.3)]:
        again.epoch_begin(epoch, {})
        again.epoch_end(epoch, {"val_loss": val})
    again.finish("finished", "completed", {})
    timeline = [0.9, 0.4, 0.5, 0.3]
    assert [_epochs(store, first.run_id)[e]["val_loss"] for e in range(4)] == timeline
    run = store.get_run(first.run_id)
    assert run.epochs_done == 4
    saved = [c.epoch for c in store.checkpoints(first.run_id)]
    # epoch 2 (0.5) did not beat the recorded best 0.4; epoch 3 (0.3) did
    assert saved[-1] == 3 and 2 not in saved[saved.index(1) + 1 :]
    assert keeper.best_path.exists()


def test_start_moved_by_backup_and_restore_is_recorded(store, tmp_path):
    session, recorder, *_ = _session(store, tmp_path)
    session.start({"experiment": "bar", "fit_params": {"initial_epoch": 0, "batch_size": 8}})
    session.epoch_begin(2, {})
    recorder.wait()  # handed to the writer thread with the run's creation
    assert store.get_run(session.run_id).fit_params == {"initial_epoch": 2, "batch_size": 8}


def test_choose_monitor():
    assert choose_monitor("acc", "val_loss", True) == "acc"
    assert choose_monitor(None, "val_auc", False) == "val_auc"
    assert choose_monitor(None, None, True) == "val_loss"
    assert choose_monitor(None, None, False) == "loss"
    assert choose_monitor(None, None, None) is None


# -- the keeper -----------------------------------------------------------------------------------


def test_keeper_does_not_warn_for_epochs_without_validation(store, tmp_path):
    session, recorder, model, _ = _session(store, tmp_path)
    session.start({"experiment": "freq"})
    keeper = _keeper(session, recorder, tmp_path, "val_loss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keeper.after_epoch(model, 0, {"loss": 1.0})  # validation_freq=2: none this epoch
        keeper.after_epoch(model, 1, {"loss": 0.9, "val_loss": 0.8})
    with pytest.warns(RuntimeWarning, match="'val_loss' is not in the logs"):
        keeper.after_epoch(model, 2, {"loss": 0.9, "val_acc": 0.8})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per run
        keeper.after_epoch(model, 3, {"loss": 0.9, "val_acc": 0.8})
    recorder.wait()  # its checkpoint records land before the store goes


def test_keeper_min_delta(store, tmp_path):
    session, recorder, model, _ = _session(store, tmp_path)
    session.start({"experiment": "delta"})
    keeper = _keeper(session, recorder, tmp_path, "loss", min_delta=0.05)
    for epoch, loss in enumerate([1.0, 0.97, 0.96, 0.9]):
        model.weights = [float(epoch)]
        keeper.after_epoch(model, epoch, {"loss": loss})
    keeper.flush(model)
    recorder.wait()  # checkpoint records are applied by the writer thread
    cks = store.checkpoints(session.run_id)
    assert cks[-1].epoch == 3 and cks[-1].value == 0.9
    assert keeper.best_path.read_text() == repr([3.0])


# -- the guard on plain objects -------------------------------------------------------------------


class Model:
    stop_training = False

    def __init__(self):
        self.train_function = lambda *a: "trained"


class Hooks:
    def __init__(self, callbacks):
        self.callbacks = callbacks

    def on_epoch_begin(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        pass

    def _noop(self, *a, **k):
        pass

    on_train_batch_begin = on_train_batch_end = on_batch_begin = on_batch_end = _noop
    on_test_begin = on_test_end = on_test_batch_begin = on_test_batch_end = _noop


class Stopper:
    def __init__(self, model):
        self.model = model

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 3:
            raise RuntimeError("callback broke")


def _guard(events):
    return FitGuard(
        on_error=lambda e, where, args: events.append(("error", type(e).__name__, where, args[:1])),
        after={"on_epoch_end": lambda epoch, logs=None: events.append(("after", epoch))},
        on_stop_training=lambda cb, hook, args: events.append(("stop", type(cb).__name__, hook)),
        on_unseen=lambda e, signum: events.append(("unseen", e, signum)),
    )


def _originals(model, hooks, stopper):
    return (
        model.__dict__["train_function"],
        set(vars(hooks)),
        set(vars(stopper)),
    )


@pytest.mark.parametrize("order", ["nested", "crossed"])
def test_two_guards_compose_and_restore_everything(order):
    model = Model()
    stopper = Stopper(model)
    hooks = Hooks([stopper])
    before = _originals(model, hooks, stopper)
    events: list = []
    a, b = _guard(events), _guard(events)
    a.install(model, hooks, None, own=None)
    b.install(model, hooks, None, own=None)
    hooks.on_epoch_begin(1)
    hooks.on_epoch_end(0)
    assert model.train_function() == "trained"
    assert ("stop", "Stopper", "on_epoch_begin") in events
    assert events.count(("after", 0)) == 2  # each guard's work, after the callbacks
    first, second = (a, b) if order == "crossed" else (b, a)
    first.undo()
    hooks.on_epoch_end(5)
    assert events.count(("after", 5)) == 1  # the undone guard is a pass-through
    second.undo()
    assert _originals(model, hooks, stopper) == before


def test_a_layer_someone_else_put_on_top_is_kept():
    model = Model()
    hooks = Hooks([])
    events: list = []
    guard = _guard(events)
    guard.install(model, hooks, None, own=None)
    ours = model.train_function
    model.train_function = lambda *a: ("theirs", ours(*a))  # another library wraps after us
    guard.undo()
    assert model.train_function() == ("theirs", "trained")  # theirs stays, ours passes through
    assert not events


def test_errors_are_reported_with_where_they_happened():
    model = Model()
    stopper = Stopper(model)
    hooks = Hooks([stopper])
    events: list = []
    guard = _guard(events)
    guard.install(model, hooks, None, own=None)
    with pytest.raises(RuntimeError):
        hooks.on_epoch_end(3)
    assert ("error", "RuntimeError", "on_epoch_end", (3,)) in events
    guard.undo()


# -- what is read from the fit call ---------------------------------------------------------------


def test_fit_params_with_numpy_arguments():
    np = pytest.importorskip("numpy")
    locals_ = {
        "batch_size": np.int64(16),
        "validation_split": np.float64(0.25),
        "validation_data": None,
        "initial_epoch": np.int64(0),
        "shuffle": np.bool_(True),
    }
    got = fit_params({"epochs": np.int64(3), "steps": 5}, locals_, [])
    assert got == {
        "epochs": 3,
        "steps": 5,
        "batch_size": 16,
        "validation_split": 0.25,
        "initial_epoch": 0,
        "shuffle": True,
        "validation": True,
    }
    assert all(type(v) in (int, float, bool) for v in got.values())
    assert has_validation({"validation_split": np.float64(0.0), "validation_data": None}) is False
    assert has_validation({}) is None
    assert math.isclose(got["validation_split"], 0.25)


# -- the fit's last epoch is written with the run's end -------------------------------------------


def _run_epochs(session, epochs):
    for epoch in epochs:
        session.epoch_begin(epoch, {})
        session.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    session.recorder.wait()


def _losses(store, run_id):
    return [(p.epoch, p.value) for p in store.metric_history(run_id, ["loss"])]


def test_the_last_epoch_is_written_with_the_runs_end(store, tmp_path):
    session, *_ = _session(store, tmp_path)
    session.start({"experiment": "last", "epochs_planned": 3})
    _run_epochs(session, range(3))
    assert [e for e, _ in _losses(store, session.run_id)] == [0, 1]  # the third is kept
    session.finish("finished", "completed", {"epoch": 2})
    run = store.get_run(session.run_id)
    assert (run.status, run.epochs_done, run.last_epoch) == ("finished", 3, 2)
    assert _losses(store, session.run_id) == [(e, 1.0 / (e + 1)) for e in range(3)]


def test_an_epoch_a_callback_stopped_on_is_the_last(store, tmp_path):
    session, *_ = _session(store, tmp_path)
    session.start({"experiment": "last", "epochs_planned": 10})
    _run_epochs(session, range(2))
    session.stopped_by(object(), 2, None)
    _run_epochs(session, [2])
    assert [e for e, _ in _losses(store, session.run_id)] == [0, 1]
    session.finish("finished", "early_stopping", {"epoch": 2})
    assert store.get_run(session.run_id).epochs_done == 3


def test_a_kept_epoch_is_written_when_training_goes_on_or_the_end_is_late(
    store, tmp_path, monkeypatch
):
    import tracker.training.session as session_module

    session, *_ = _session(store, tmp_path)
    session.start({"experiment": "last", "epochs_planned": 2})
    _run_epochs(session, range(2))
    _run_epochs(session, [2, 3])  # a callback moved the end: epoch 1 was not the last
    assert [e for e, _ in _losses(store, session.run_id)] == [0, 1, 2]
    # The run's end is late (other callbacks' on_train_end): the kept epoch is written alone.
    monkeypatch.setattr(session_module, "HOLD_LAST_EPOCH_S", 0.05)
    _run_epochs(session, [4])
    for _ in range(100):
        if len(_losses(store, session.run_id)) == 5:
            break
        time.sleep(0.05)
    assert _losses(store, session.run_id) == [(e, 1.0 / (e + 1)) for e in range(5)]
    assert store.get_run(session.run_id).status == "running"
    session.finish("finished", "completed", {"epoch": 4})
    run = store.get_run(session.run_id)
    assert (run.status, run.epochs_done) == ("finished", 5)


def test_the_first_epochs_end_does_not_wait_for_the_runs_creation(tmp_path):
    """Opening the store (a process's first connection) overlaps the first two epochs; the
    second epoch's end waits for the creation and the first epoch, so that at most one epoch is
    in flight, as at every later epoch."""
    import sqlite3
    import threading

    from tracker import open_store

    db = tmp_path / "tracker.db"
    url = f"sqlite:///{db}"
    open_store(url).close()
    recorder = RunRecorder(url, spool_path=tmp_path / "spool.db")
    session = RunSession(recorder, uuid.uuid4().hex, heartbeat_interval=30.0)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the creation's write waits for this lock
    try:
        session.start({"experiment": "overlap", "epochs_planned": 5})
        session.epoch_begin(0, {})
        session.epoch_end(0, {"loss": 1.0})
        assert recorder.pending == 2  # returned: the creation and epoch 0 not written yet
        session.epoch_begin(1, {})
        second = threading.Thread(target=session.epoch_end, args=(1, {"loss": 0.5}))
        second.start()
        second.join(0.5)
        assert second.is_alive()  # waits for the creation and epoch 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    second.join(10)
    assert not second.is_alive()
    recorder.wait()
    with open_store(url) as s:
        assert _losses(s, session.run_id) == [(0, 1.0), (1, 0.5)]
    recorder.close()
