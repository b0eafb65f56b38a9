"""A training process that is killed or signalled still leaves a correct record."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tracker import open_store

pytestmark = [pytest.mark.keras, pytest.mark.slow]

TRAIN = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    import keras
    from tests.keras_helpers import fit, model
    from tracker import TrackingCallback

    class Slow(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print("EPOCH", epoch, flush=True)
            time.sleep(0.3)

    cb = TrackingCallback(db=sys.argv[1], heartbeat_interval=0.5)
    fit(model(), [Slow(), cb], epochs=200)
    """
)


def _start(db_url: str, rootdir: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, db_url, rootdir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_epoch(proc: subprocess.Popen, epoch: int) -> None:
    for line in proc.stdout:
        if line.strip() == f"EPOCH {epoch}":
            return
    raise AssertionError(f"training ended early: {proc.stderr.read()[-2000:]}")


def _only_run(db_url: str):
    with open_store(db_url) as s:
        (ranked,) = s.list_runs()
        return ranked.run, len(s.metric_history(ranked.run.id, ["loss"]))


def test_kill_9_shows_crashed_with_ended_epochs_kept(db_url, request):
    proc = _start(db_url, str(request.config.rootpath))
    _wait_for_epoch(proc, 3)
    time.sleep(0.5)  # epoch 3 is written after the other callbacks' epoch end
    proc.kill()
    proc.communicate(timeout=30)
    time.sleep(1.5)  # two heartbeat intervals
    run, logged = _only_run(db_url)
    assert run.status == "crashed" and run.stop_reason == "crashed"
    assert logged >= 4 and run.epochs_done == logged


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_run_interrupted_and_process_stops_as_usual(db_url, request, signum):
    proc = _start(db_url, str(request.config.rootpath))
    _wait_for_epoch(proc, 2)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=60)
    if signum == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM  # killed by the signal, as without tracker
    else:
        assert proc.returncode != 0 and "KeyboardInterrupt" in err
    run, logged = _only_run(db_url)
    assert run.status == "interrupted" and run.stop_reason == "interrupted"
    assert run.epochs_done == logged >= 2
    assert run.ended_at is not None
