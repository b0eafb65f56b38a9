"""One run per `fit`, written by process 0, whatever distributes the training.

Real fits under `tf.distribute` strategies that run on one machine (MirroredStrategy, the default
strategy), and two real processes joined by `torch.distributed` (gloo on loopback) or
`jax.distributed`, each running the same `fit` into one database: only process 0 records it.
Keras 3's own `fit` under MultiWorkerMirroredStrategy fails on TensorFlow 2.21 before any callback
runs (keras-team/keras#20585), so no test can exercise it; the README says so.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from tracker import open_store
from tracker.training import keras_objects

from .conftest import IN_CI
from .keras_helpers import backend, fit, model, tensorflow_only

keras = pytest.importorskip("keras") if not IN_CI else __import__("keras")
from tracker import TrackingCallback  # noqa: E402

pytestmark = pytest.mark.keras

WORKER_1 = '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}'


def _history_is_recorded(store, run_id, history):
    values = {(p.epoch, p.key): p.value for p in store.metric_history(run_id)}
    for key, series in history.history.items():
        assert [values[(e, key)] for e in history.epoch] == series


def test_a_strategy_is_asked_before_tf_config():
    """The order of the rule, on plain objects: a strategy that says "do not checkpoint" wins
    over TF_CONFIG, and so does one that says "checkpoint"; the default strategy knows of no
    cluster, so TF_CONFIG decides."""

    class Extended:
        def __init__(self, should):
            self.should_checkpoint = should

    class SomeStrategy:
        def __init__(self, should):
            self.extended = Extended(should)

    class _DefaultDistributionStrategy(SomeStrategy):
        pass

    def on(strategy):
        return SimpleNamespace(distribute_strategy=strategy)

    assert keras_objects.not_the_writer(on(SomeStrategy(True))) is None
    said = keras_objects.not_the_writer(on(SomeStrategy(False)))
    assert said == "its SomeStrategy says this worker does not checkpoint"
    os.environ["TF_CONFIG"] = WORKER_1
    try:
        assert keras_objects.not_the_writer(on(SomeStrategy(True))) is None
        said = keras_objects.not_the_writer(on(_DefaultDistributionStrategy(True)))
        assert said == "TF_CONFIG names it worker 1"
    finally:
        del os.environ["TF_CONFIG"]
    assert keras_objects.not_the_writer(on(_DefaultDistributionStrategy(True))) is None


@tensorflow_only("tf.distribute")
def test_mirrored_strategy_records_one_run(store, tmp_path, monkeypatch):
    import tensorflow as tf

    monkeypatch.setenv("TF_CONFIG", WORKER_1)  # the strategy in use answers, not TF_CONFIG
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        m = model()
    assert m.distribute_strategy is strategy
    cb = TrackingCallback(store=store, artifacts_dir=tmp_path / "a")
    history = fit(m, [cb], epochs=2)
    (listed,) = store.list_runs()
    assert listed.run.id == cb.run_id and listed.run.status == "finished"
    _history_is_recorded(store, cb.run_id, history)


@tensorflow_only("tf.distribute")
def test_the_default_strategy_records_one_run(store, tmp_path):
    import tensorflow as tf

    m = model()
    assert not tf.distribute.has_strategy()
    assert m.distribute_strategy.extended.should_checkpoint  # what it would say, unasked
    cb = TrackingCallback(store=store, artifacts_dir=tmp_path / "a")
    history = fit(m, [cb], epochs=2)
    assert [r.run.id for r in store.list_runs()] == [cb.run_id]
    _history_is_recorded(store, cb.run_id, history)


# -- two processes ------------------------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    db, port, rank = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    import keras
    if keras.backend.backend() == "torch":
        import torch.distributed as dist
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
        )
    else:
        import jax
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=rank)
    from tests.keras_helpers import fit, model
    from tracker import TrackingCallback
    cb = TrackingCallback(db=db, artifacts_dir=sys.argv[5])
    history = fit(model(), [cb], epochs=2)
    print("RUN", cb.run_id, os.getpid(), flush=True)
    if keras.backend.backend() == "torch":
        dist.barrier()
        dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(
    backend() == "tensorflow",
    reason="Keras 3's fit under MultiWorkerMirroredStrategy fails on TensorFlow 2.21 "
    "(keras-team/keras#20585); the two-process test runs on the torch and JAX backends",
)
def test_two_processes_one_run_written_by_process_0(tmp_path, request):
    db = f"sqlite:///{tmp_path}/runs.db"
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(request.config.rootpath), db, port, str(rank)]
            + [str(tmp_path / "artifacts")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    ran = [out.split("RUN ", 1)[1].split() for out, _ in outs]
    assert ran[1][0] == "None"  # process 1 did not record
    with open_store(db) as s:
        (listed,) = s.list_runs()
        run = listed.run
    assert run.id == ran[0][0] and run.status == "finished" and run.epochs_done == 2
    assert run.environment["pid"] == int(ran[0][1])
    assert run.environment["backend"] == backend()
    said = outs[1][1]
    assert "tracker does not record fits in this process" in said
    assert "rank 1 of 2" in said or "JAX process 1 of 2" in said
    assert "does not record" not in outs[0][1]
