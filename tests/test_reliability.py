"""Never lose a run: the database going away mid-run, spooling, sync, hostile metric input."""

from __future__ import annotations

import math
import sqlite3
import uuid
import warnings

import pytest
from sqlalchemy import create_engine, text

from tracker import open_store
from tracker.store.spool import sync

from .conftest import IN_CI
from .keras_helpers import fit, model
from .latency import behind_proxy

keras = pytest.importorskip("keras") if not IN_CI else __import__("keras")
from tracker import TrackingCallback  # noqa: E402

pytestmark = pytest.mark.keras


class CutAt(keras.callbacks.Callback):
    """Takes the database away once `epoch` has ended."""

    def __init__(self, epoch, cut):
        super().__init__()
        self.epoch, self.cut = epoch, cut

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.cut()


def _train_through_outage(url, store, cut, tmp_path, epochs=5):
    spool = tmp_path / "spool.db"
    cb = TrackingCallback(store=store, artifacts_dir=tmp_path / "a", spool_path=spool)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        history = fit(model(), [CutAt(1, cut), cb], epochs=epochs)
    ours = [str(w.message) for w in record if str(w.message).startswith("tracker")]
    assert len(ours) == 1 and str(spool) in ours[0]
    return cb, history, spool, ours


def _assert_whole_run(target, cb, history, epochs=5):
    run = target.get_run(cb.run_id)
    assert (run.status, run.stop_reason, run.epochs_done) == ("finished", "completed", epochs)
    got = [p.value for p in target.metric_history(run.id, ["loss"])]
    assert got == pytest.approx(history.history["loss"])
    assert [p.epoch for p in target.metric_history(run.id, ["loss"])] == list(range(epochs))
    s = target.summaries(run.id)["loss"]
    assert s.count == epochs and s.min_value == pytest.approx(min(history.history["loss"]))


@pytest.mark.keras
def test_sqlite_lock_held_too_long_mid_run_spools_then_syncs(tmp_path):
    url = f"sqlite:///{tmp_path}/main.db"
    store = open_store(url, busy_timeout=0.2)
    holder = sqlite3.connect(tmp_path / "main.db", isolation_level=None)

    def cut():
        holder.execute("BEGIN EXCLUSIVE")  # another process keeps the write lock

    cb, history, spool, ours = _train_through_outage(url, store, cut, tmp_path)
    assert "spool file" in ours[0]
    holder.execute("ROLLBACK")
    holder.close()
    before = store.get_run(cb.run_id)
    assert before.epochs_done == 1  # epoch 0 reached the database before the lock
    first = sync(spool, store)
    second = sync(spool, store)
    _assert_whole_run(store, cb, history)
    assert second.points == 0 and second.checkpoints == 0 and first.points > 0
    store.close()


@pytest.mark.keras
def test_postgres_unreachable_mid_run_spools_then_syncs(pg_server, tmp_path):
    db = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{db}"'))
    url = pg_server.rsplit("/", 1)[0] + f"/{db}"
    store = open_store(url)

    def cut():
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false'))
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :d AND pid <> pg_backend_pid()"
                ),
                {"d": db},
            )

    try:
        cb, history, spool, ours = _train_through_outage(url, store, cut, tmp_path)
        assert "spool file" in ours[0]
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true'))
        sync(spool, store)
        sync(spool, store)
        _assert_whole_run(store, cb, history)
    finally:
        store.close()
        with admin.connect() as c:
            c.execute(text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true'))
            c.execute(text(f'DROP DATABASE "{db}" WITH (FORCE)'))
        admin.dispose()


class FakeModel:
    """Enough of a model for the callback's hooks called by hand (no fit, no TensorFlow work)."""

    stop_training = False
    optimizer = None

    def save_weights(self, path, overwrite=True):
        with open(path, "wb") as f:
            f.write(b"weights")

    def get_weights(self):
        return []

    def set_weights(self, weights):
        pass


def test_hostile_log_values_are_stored_or_skipped_never_raised(store, tmp_path):
    import numpy as np

    cb = TrackingCallback(store=store, artifacts_dir=tmp_path / "a")
    cb.set_model(FakeModel())
    cb.on_train_begin()
    logs = {
        "loss": np.float32(0.5),
        "acc": keras.ops.convert_to_tensor(0.75),  # a 0-d tensor of the backend in use
        "n": np.int64(3),
        "nan": float("nan"),
        "inf": float("inf"),
        "ninf": -math.inf,
        "väl'; DROP TABLE runs; --": 1.0,
        "k" * 300: 2.0,
        "vector": np.array([1.0, 2.0]),
        "text": "hello",
    }
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cb.on_epoch_begin(0)
        cb.on_epoch_end(0, logs)
        cb.on_epoch_begin(1)
        cb.on_epoch_end(1, {"loss": 0.25})  # keys missing in some epochs
        cb.on_train_end()
    assert any("non-scalar" in str(w.message) for w in record)
    run = store.get_run(cb.run_id)
    assert run.status == "finished" and run.epochs_done == 2
    values = {p.key: p.value for p in store.metric_history(run.id) if p.epoch == 0}
    assert values["loss"] == 0.5 and values["acc"] == 0.75 and values["n"] == 3
    assert math.isnan(values["nan"]) and values["inf"] == math.inf and values["ninf"] == -math.inf
    assert values["väl'; DROP TABLE runs; --"] == 1.0 and values["k" * 300] == 2.0
    assert "vector" not in values and "text" not in values
    assert [p.value for p in store.metric_history(run.id, ["loss"])] == [0.5, 0.25]


class BatchCounter(keras.callbacks.Callback):
    """The (epoch, batch) pairs Keras reported to the callbacks."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.seen.append((self.epoch, batch))


@pytest.mark.keras
def test_a_fit_against_a_distant_database_is_whole_when_fit_returns(db_url, tmp_path):
    """Epoch writes go to a writer thread; when `fit` returns, all of them are in the database,
    in order, as Keras reported them (PostgreSQL behind a proxy adding 5 ms each way)."""
    with behind_proxy(db_url, 0.005) as (url, _):
        cb = TrackingCallback(
            db=url,
            artifacts_dir=tmp_path / "a",
            spool_path=tmp_path / "spool.db",
            log_every_n_batches=1,
        )
        counter = BatchCounter()
        history = fit(model(), [counter, cb], epochs=6)
        with open_store(db_url) as s:  # read at once, and not through the proxy
            run = s.get_run(cb.run_id)
            points = s.metric_history(run.id)
            batches = s.metric_history(run.id, ["loss"], batches=True)
            best = [c for c in s.checkpoints(run.id) if c.is_best]
    assert (run.status, run.stop_reason, run.epochs_done) == ("finished", "completed", 6)
    for key, values in history.history.items():
        got = [p for p in points if p.key == key]
        assert [p.epoch for p in got] == list(range(6))
        assert [p.value for p in got] == pytest.approx(values)
    assert [(p.epoch, p.step) for p in batches] == counter.seen
    val_loss = history.history["val_loss"]
    assert best and best[-1].epoch == val_loss.index(min(val_loss))
    assert cb._recorder is not None and cb._recorder.spooled_to is None
