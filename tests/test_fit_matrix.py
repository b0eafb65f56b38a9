"""How people call `fit`, each a real fit with a `TrackingCallback` added, held against Keras.

Every test checks the record against what Keras itself reports: `History` (every key of every
epoch), the callbacks' own attributes and the files on disk. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
import signal
import threading

import pytest

from tracker import checkpoint_files

from .conftest import IN_CI
from .keras_helpers import backend, data, fit, model, steps_per_execution_above_1, tensorflow_only

keras = pytest.importorskip("keras") if not IN_CI else __import__("keras")
import numpy as np  # noqa: E402 - after Keras, which needs it: keras-free runs skip this module

tf = __import__("tensorflow") if backend() == "tensorflow" else None
from tracker import TrackingCallback, restore_weights  # noqa: E402

pytestmark = pytest.mark.keras


def _cb(store, tmp_path, **kwargs):
    return TrackingCallback(store=store, artifacts_dir=tmp_path / "artifacts", **kwargs)


def recorded_epochs(store, run_id) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for p in store.metric_history(run_id):
        out.setdefault(p.epoch, {})[p.key] = p.value
    return out


def assert_record_is_history(store, run_id, history, status="finished"):
    """Every key History holds for every epoch is in the run with the same value; no epoch
    more or less; the summaries (what `best` reads) agree."""
    run = store.get_run(run_id)
    assert run.status == status
    epochs = recorded_epochs(store, run_id)
    assert sorted(epochs) == list(history.epoch)
    assert run.epochs_done == len(history.epoch)
    for i, epoch in enumerate(history.epoch):
        for key, values in history.history.items():
            if len(values) != len(history.epoch):
                continue  # validation_freq: History lists only the epochs that validated
            got, want = epochs[epoch].get(key), float(values[i])
            assert got is not None, f"{key} missing at epoch {epoch}"
            assert (math.isnan(got) and math.isnan(want)) or got == want, (key, epoch)
    summaries = store.summaries(run_id)
    for key in history.history:
        series = [epochs[e][key] for e in history.epoch if key in epochs[e]]
        finite = [v for v in series if math.isfinite(v)]
        if finite:
            assert summaries[key].min_value == min(finite)
            assert summaries[key].max_value == max(finite)
    return run


# -- values as sweeps hand them over ------------------------------------------------------------


def test_numpy_values_in_fit_arguments_and_configs(store, tmp_path):
    x, y = data()
    es = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=np.int64(3), baseline=np.float32(5.0)
    )
    cb = _cb(store, tmp_path, params={"units": np.int64(4), "lr": np.float32(0.05)})
    history = model().fit(
        x,
        y,
        # Keras's torch backend takes only a Python int batch size.
        batch_size=np.int64(16) if backend() != "torch" else 16,
        epochs=np.int64(2),
        validation_split=np.float64(0.25),
        verbose=0,
        callbacks=[cb, es],
    )
    run = assert_record_is_history(store, cb.run_id, history)
    assert run.params == {"units": 4, "lr": 0.05}
    assert type(run.params["units"]) is int
    assert run.fit_params["batch_size"] == 16 and run.fit_params["validation"] is True
    assert run.fit_params["early_stopping"]["patience"] == es.patience
    assert run.fit_params["early_stopping"]["baseline"] == float(str(es.baseline))
    assert run.epochs_planned == history.params["epochs"]


# -- threads ---------------------------------------------------------------------------------------


def test_fit_in_a_worker_thread(store, tmp_path):
    cb = _cb(store, tmp_path, heartbeat_interval=0.2)
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("h", fit(model(), [cb], epochs=3)))
    worker.start()
    worker.join()
    assert_record_is_history(store, cb.run_id, out["h"])
    run = store.get_run(cb.run_id)
    assert run.stop_reason == "completed"
    # Signal handlers are the main thread's: a worker's fit leaves them as they were.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


# -- what other callbacks write into the logs ---------------------------------------------------


class F1(keras.callbacks.Callback):
    """Keras's documented way to add a metric: write it into `logs` in `on_epoch_end`."""

    def on_epoch_end(self, epoch, logs=None):
        logs["val_f1"] = 0.5 + 0.1 * epoch + 0.01 * float(logs["val_loss"])


@pytest.mark.parametrize("first", [True, False], ids=["tracker-first", "tracker-last"])
def test_keys_other_callbacks_add_are_recorded(store, tmp_path, first):
    cb = _cb(store, tmp_path)
    others = [
        keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=10.0),
        F1(),
    ]
    history = fit(model(), [cb, *others] if first else [*others, cb], epochs=3)
    assert {"learning_rate", "val_f1"} <= set(history.history)
    assert_record_is_history(store, cb.run_id, history)
    (best,) = store.best_runs("val_f1", mode="max")
    assert best.value == max(history.history["val_f1"])


@tensorflow_only("a train_step written with tf.GradientTape, as the TensorFlow guide writes it")
def test_custom_train_step_nested_logs(store, tmp_path):
    """The guide "Customizing what happens in fit": `train_step` returns every metric's result,
    which Keras 3 nests under `compile_metrics` and flattens for History."""

    class CustomModel(keras.Model):
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    m = CustomModel(inputs, keras.layers.Dense(1)(inputs))
    m.compile(optimizer="adam", loss="mse", metrics=["mae"])
    cb = _cb(store, tmp_path)
    history = fit(m, [cb], epochs=2, validation_split=0.0)
    assert "mae" in history.history
    assert_record_is_history(store, cb.run_id, history)


# -- validation and the best-weights monitor ------------------------------------------------------


def test_validation_freq_keeps_best_weights_by_val_loss(store, tmp_path):
    cb = _cb(store, tmp_path)
    history = fit(model(), [cb], epochs=4, validation_freq=2)
    assert len(history.history["val_loss"]) == 2  # epochs 1 and 3
    run = store.get_run(cb.run_id)
    val = {p.epoch: p.value for p in store.metric_history(run.id, ["val_loss"])}
    assert list(val.values()) == history.history["val_loss"]
    own = store.checkpoints(run.id)
    assert own and {c.monitor for c in own} == {"val_loss"}
    restored = restore_weights(model(), run.id, store=store)
    assert restored.epoch == min(val, key=val.get)


@pytest.mark.parametrize(
    "validation",
    ["arrays", "split", pytest.param("dataset", marks=tensorflow_only("tf.data"))],
)
def test_validation_forms(store, tmp_path, validation):
    x, y = data()
    kwargs = {}
    if validation == "arrays":
        kwargs["validation_data"] = (x[:24], y[:24])
    elif validation == "split":
        kwargs["validation_split"] = 0.25
    else:
        kwargs["validation_data"] = tf.data.Dataset.from_tensor_slices((x[:24], y[:24])).batch(8)
    cb = _cb(store, tmp_path)
    history = model().fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb], **kwargs)
    run = assert_record_is_history(store, cb.run_id, history)
    assert run.fit_params["validation"] is True
    assert {c.monitor for c in store.checkpoints(run.id)} == {"val_loss"}


@tensorflow_only("tf.data")
def test_tf_data_with_steps_per_epoch_and_class_weight(store, tmp_path):
    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16)
    cb = _cb(store, tmp_path, log_every_n_batches=1)
    history = model().fit(
        ds, epochs=2, steps_per_epoch=3, class_weight={0: 1.0, 1: 2.0}, verbose=0, callbacks=[cb]
    )
    run = assert_record_is_history(store, cb.run_id, history)
    assert run.fit_params["steps_per_epoch"] == 3
    steps = {p.step for p in store.metric_history(run.id, ["loss"], batches=True)}
    assert steps == set(range(3))


def test_multi_output_model(store, tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    a = keras.layers.Dense(1, name="a")(hidden)
    b = keras.layers.Dense(1, activation="sigmoid", name="b")(hidden)
    m = keras.Model(inputs, {"a": a, "b": b})
    m.compile(
        optimizer="sgd",
        loss={"a": "mse", "b": "binary_crossentropy"},
        metrics={"a": ["mae"], "b": ["accuracy"]},
    )
    x, y = data()
    cb = _cb(store, tmp_path)
    history = m.fit(
        x,
        {"a": x[:, :1], "b": y},
        epochs=2,
        batch_size=16,
        validation_split=0.25,
        verbose=0,
        callbacks=[cb],
    )
    assert len(history.history) > 4
    assert_record_is_history(store, cb.run_id, history)


# -- batches -----------------------------------------------------------------------------------


class Reported(keras.callbacks.Callback):
    """The batch indices and logs Keras reports, as a user's callback sees them."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append((self.epoch, batch, dict(logs)))


@steps_per_execution_above_1()
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_batch_logging_with_steps_per_execution(store, tmp_path, n):
    m = model()
    m.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss="binary_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=4,
    )
    seen = Reported()
    cb = _cb(store, tmp_path, log_every_n_batches=n)
    x, y = data(n=192)
    m.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[seen, cb])
    reported = [(e, b) for e, b, _ in seen.batches]
    assert reported and all(b % 4 == 3 for _, b in reported)  # Keras reports every 4th batch
    points = store.metric_history(cb.run_id, ["loss"], batches=True)
    kept = [(p.epoch, p.step) for p in points]
    assert kept and set(kept) <= set(reported)
    # A report is kept each time a multiple of n was passed since the epoch's previous report.
    expected = []
    for epoch in (0, 1):
        last = -1
        for e, b in reported:
            if e == epoch:
                if b // n > last // n:
                    expected.append((e, b))
                last = b
    assert kept == expected
    logs = {(e, b): lg for e, b, lg in seen.batches}
    assert [p.value for p in points] == [logs[k]["loss"] for k in kept]


# -- stopping, resuming, restoring ----------------------------------------------------------------


class StopAtEpochBegin(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.stop_training = True


def test_stop_set_in_on_epoch_begin_names_the_callback(store, tmp_path):
    cb = _cb(store, tmp_path)
    history = fit(model(), [StopAtEpochBegin(), cb], epochs=5)
    run = assert_record_is_history(store, cb.run_id, history)
    assert run.stop_reason == "stopped_by_callback"
    assert run.stop_details["callback"] == "StopAtEpochBegin"


class FailAtEpochBegin(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("broken at the start of epoch 2")


def test_exception_in_on_epoch_begin_records_that_epoch(store, tmp_path):
    cb = _cb(store, tmp_path)
    with pytest.raises(RuntimeError):
        fit(model(), [cb, FailAtEpochBegin()], epochs=5)
    run = store.get_run(cb.run_id)
    assert run.status == "failed" and run.stop_details["epoch"] == 2
    assert run.stop_details["error"]["type"] == "RuntimeError"
    assert run.epochs_done == 2


@pytest.mark.parametrize(
    "order",
    [
        ("es", "plateau", "nan", "tracker"),
        ("tracker", "nan", "plateau", "es"),
        ("plateau", "tracker", "es", "nan"),
    ],
    ids=lambda o: "-".join(o),
)
def test_built_in_callbacks_in_any_order(store, tmp_path, order):
    cb = _cb(store, tmp_path)
    es = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=0.05)
    made = {
        "es": es,
        "plateau": keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=1.0),
        "nan": keras.callbacks.TerminateOnNaN(),
        "tracker": cb,
    }
    history = fit(model(), [made[k] for k in order], epochs=8)
    run = assert_record_is_history(store, cb.run_id, history)
    lr = [p.value for p in store.metric_history(run.id, ["lr"])]
    # The LR in effect during an epoch is what ReduceLROnPlateau had set before it began.
    assert lr[1:] == pytest.approx(history.history["learning_rate"][:-1])
    if es.stopped_epoch:
        assert run.stop_reason == "early_stopping"
        assert run.stop_details["early_stopping"]["stopped_epoch"] == es.stopped_epoch
        assert run.stop_details["early_stopping"]["best_epoch"] == es.best_epoch
    else:
        assert run.stop_reason == "completed"


def test_two_fits_with_one_callback(store, tmp_path):
    cb = _cb(store, tmp_path)
    m = model()
    first = fit(m, [cb], epochs=2)
    first_id = cb.run_id
    second = fit(m, [cb], epochs=3)
    assert cb.run_id != first_id
    assert_record_is_history(store, first_id, first)
    assert_record_is_history(store, cb.run_id, second)


def test_resume_continues_the_best_and_keeps_restore_valid(store, tmp_path):
    m = model()
    first = _cb(store, tmp_path)
    h1 = fit(m, [first], epochs=3)
    best_epoch = int(np.argmin(h1.history["val_loss"]))
    # The resumed fit goes badly: its epochs are worse than the recorded best.
    m.optimizer.learning_rate.assign(25.0)
    again = _cb(store, tmp_path, resume=first.run_id)
    h2 = fit(m, [again], epochs=5, initial_epoch=3)
    assert again.run_id == first.run_id
    assert min(h2.history["val_loss"]) > min(h1.history["val_loss"])
    restored = restore_weights(model(), first.run_id, store=store)
    assert restored.epoch == best_epoch
    for ck in store.checkpoints(first.run_id):
        if ck.source == checkpoint_files.OWN_SOURCE and ck.id == max(
            c.id for c in store.checkpoints(first.run_id) if c.source == checkpoint_files.OWN_SOURCE
        ):
            assert checkpoint_files.state(ck) == "ok"  # the file matches its latest record


def test_resume_over_recorded_epochs_replaces_them(store, tmp_path):
    m = model()
    first = _cb(store, tmp_path)
    h1 = fit(m, [first], epochs=4)
    again = _cb(store, tmp_path, resume=first.run_id)
    h2 = fit(m, [again], epochs=4, initial_epoch=2)
    run = store.get_run(first.run_id)
    assert run.epochs_done == run.epochs_planned == 4
    epochs = recorded_epochs(store, run.id)
    assert sorted(epochs) == [0, 1, 2, 3]
    timeline = h1.history["val_loss"][:2] + h2.history["val_loss"]
    assert [epochs[e]["val_loss"] for e in range(4)] == timeline
    (best,) = store.best_runs("val_loss")
    assert best.value == min(timeline) and best.epoch == int(np.argmin(timeline))
    assert store.summaries(run.id)["val_loss"].last_value == timeline[-1]


class FailAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_backup_and_restore_records_where_training_resumed(store, tmp_path):
    backup = str(tmp_path / "backup")
    m = model()
    with pytest.raises(RuntimeError):
        fit(m, [keras.callbacks.BackupAndRestore(backup), FailAt(1)], epochs=4)
    cb = _cb(store, tmp_path)
    history = fit(m, [keras.callbacks.BackupAndRestore(backup), cb], epochs=4)
    run = assert_record_is_history(store, cb.run_id, history)
    assert run.fit_params["initial_epoch"] == history.epoch[0] > 0


# -- two trackers ------------------------------------------------------------------------------


def test_two_trackers_in_one_fit_compose_and_unwrap(db_url, tmp_path):
    from tracker import open_store

    ck = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "m-{epoch}.weights.h5"), save_weights_only=True
    )
    stores = [open_store(db_url), open_store(f"sqlite:///{tmp_path}/second.db")]
    try:
        a, b = (_cb(s, tmp_path / str(i)) for i, s in enumerate(stores))
        m = model()
        before = set(vars(ck))
        history = fit(m, [a, ck, b], epochs=2)
        for cb, s in ((a, stores[0]), (b, stores[1])):
            assert_record_is_history(s, cb.run_id, history)
            assert len(s.checkpoints(cb.run_id)) >= 2
        assert not hasattr(m.train_function, "__wrapped__")
        hooks = {"_save_model", *(k for k in dir(ck) if k.startswith("on_"))}
        assert not hooks & (set(vars(ck)) - before)  # no wrapper of ours is left on it
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        for s in stores:
            s.close()


# -- exceptions in Keras's own loop ----------------------------------------------------------


def test_exception_keras_raises_between_callbacks_is_recorded_at_once(store, tmp_path):
    """Mismatched validation arrays: Keras builds their iterator at the end of epoch 0, in
    `fit` itself, outside any callback or step."""
    x, y = data()
    cb = _cb(store, tmp_path)
    with pytest.raises(ValueError) as raised:
        model().fit(x, y, epochs=3, verbose=0, validation_data=(x[:10], y[:12]), callbacks=[cb])
    run = store.get_run(cb.run_id)  # no waiting: recorded before fit has left
    assert (run.status, run.stop_reason) == ("failed", "error")
    assert run.stop_details["error"] == {
        "type": type(raised.value).__name__,
        "message": str(raised.value),
    }
    assert run.stop_details["epoch"] == 0 and run.epochs_done == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- models as the guides build them ----------------------------------------------------------


class TwoOptimizers(keras.Model):
    """The shape of the guide's GAN: `compile` takes two optimizers of its own, `train_step`
    steps each on its half, the compile-time default optimizer is never used."""

    def __init__(self):
        super().__init__()
        self.a = keras.layers.Dense(1)
        self.b = keras.layers.Dense(1)

    def compile(self, a_optimizer, b_optimizer):
        super().compile()
        self.a_optimizer, self.b_optimizer = a_optimizer, b_optimizer

    def call(self, x):
        return self.a(x) + self.b(x)

    def train_step(self, data):
        x, y = data
        losses = {}
        for name, layer, opt in (("a", self.a, self.a_optimizer), ("b", self.b, self.b_optimizer)):
            with tf.GradientTape() as tape:
                loss = keras.ops.mean((self(x) - y[:, None]) ** 2)
            grads = tape.gradient(loss, layer.trainable_weights)
            opt.apply(grads, layer.trainable_weights)
            losses[f"{name}_loss"] = loss
        return losses


@tensorflow_only("a train_step written with tf.GradientTape, as the TensorFlow guide writes it")
def test_a_model_with_optimizers_of_its_own(store, tmp_path, capfd):
    keras.utils.set_random_seed(0)
    m = TwoOptimizers()
    m.compile(keras.optimizers.Adam(3e-4), keras.optimizers.SGD(0.01))
    cb = _cb(store, tmp_path)
    history = fit(m, [cb], epochs=2, validation_split=0.0)
    run = assert_record_is_history(store, cb.run_id, history)
    lrs = recorded_epochs(store, run.id)
    for epoch in history.epoch:
        assert lrs[epoch]["lr/a_optimizer"] == float(m.a_optimizer.learning_rate)
        assert lrs[epoch]["lr/b_optimizer"] == float(m.b_optimizer.learning_rate)
        assert "lr" not in lrs[epoch]  # compile's default optimizer never stepped
    assert run.model["optimizers"]["a_optimizer"]["class"] == "Adam"
    assert run.model["optimizers"]["b_optimizer"]["class"] == "SGD"
    # No `loss` to keep best weights by: said once, and never raised into training, even where
    # warnings are errors (this suite's filter).
    assert "best weights monitor 'loss' is not in the logs" in capfd.readouterr().err


def test_a_model_built_by_its_first_step(store, tmp_path):
    m = keras.Sequential()
    m.add(keras.layers.Dense(1))  # no input shape: built by fit's first step
    m.compile(optimizer="rmsprop", loss="mse")
    cb = _cb(store, tmp_path)
    history = fit(m, [cb], epochs=2)
    run = assert_record_is_history(store, cb.run_id, history)
    assert run.model["trainable_params"] == m.count_params() > 0
    (layer,) = run.model["layers"]
    assert layer["params"] == m.layers[0].count_params()
    assert layer["output_shape"] == list(m.layers[0].output.shape)
