"""A training process that is killed or signalled still leaves a correct record."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tracker import open_store

from .latency import behind_proxy

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


# -- exceptions Keras raises in its own loop, where no wrapper sees them ---------------------------

UNSEEN = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, sys.argv[2])
    from tests.keras_helpers import data, fit, model
    from tracker import TrackingCallback, open_store

    x, y = data()
    cb = TrackingCallback(db=sys.argv[1], heartbeat_interval=0.5)
    mode = sys.argv[3]

    def slow_validation():
        print("VALIDATION", flush=True)
        time.sleep(60)
        yield x[:8], y[:8]

    def bad_shards():
        for i in range(3):
            yield x[i * 16 : (i + 1) * 16], y[i * 16 : (i + 1) * 16]
        raise RuntimeError("bad shard")

    if mode == "bad-data":  # torch draws batches in fit itself, outside the train step
        model().fit(bad_shards(), epochs=2, steps_per_epoch=5, verbose=0, callbacks=[cb])
    elif mode == "mismatch":  # Keras builds the validation iterator at the end of epoch 0
        fit(model(), [cb], epochs=3, validation_data=(x[:10], y[:12]))
    elif mode == "ctrl-c":
        fit(model(), [cb], epochs=3, validation_data=slow_validation(), validation_steps=1,
            validation_split=0.0)
    elif mode == "caught-then-sigterm":
        try:
            fit(model(), [cb], epochs=3, validation_data=(x[:10], y[:12]))
        except ValueError:
            pass
        with open_store(sys.argv[1]) as s:
            for _ in range(100):
                if s.get_run(cb.run_id).status != "running":
                    break
                time.sleep(0.1)
        print("READY", flush=True)
        time.sleep(60)
    """
)


def _run_unseen(db_url, request, mode):
    return subprocess.Popen(
        [sys.executable, "-c", UNSEEN, db_url, str(request.config.rootpath), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(proc, line):
    for got in proc.stdout:
        if got.strip() == line:
            return
    raise AssertionError(f"no {line!r}: {proc.stderr.read()[-2000:]}")


def test_script_dying_of_an_unseen_exception_records_it(db_url, request):
    proc = _run_unseen(db_url, request, "mismatch")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    run, _ = _only_run(db_url)
    error = run.stop_details["error"]
    assert (run.status, run.stop_reason) == ("failed", "error")
    assert f"{error['type']}: {error['message']}" in err  # as Python printed it
    assert run.epochs_done == 0 and run.ended_at is not None


def test_script_dying_of_an_exception_from_its_data_records_it(db_url, request):
    proc = _run_unseen(db_url, request, "bad-data")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    run, _ = _only_run(db_url)  # no waiting for the heartbeat: recorded as fit raised
    error = run.stop_details["error"]
    assert (run.status, run.stop_reason) == ("failed", "error")
    assert f"{error['type']}: {error['message']}" in err  # as Python printed it
    assert "bad shard" in error["message"] and run.ended_at is not None


def test_ctrl_c_while_validation_data_loads_is_an_interruption(db_url, request):
    proc = _run_unseen(db_url, request, "ctrl-c")
    _wait_for(proc, "VALIDATION")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    run, _ = _only_run(db_url)
    assert (run.status, run.stop_reason) == ("interrupted", "interrupted")
    assert run.stop_details["signal"] == "SIGINT/KeyboardInterrupt"


def test_after_an_unseen_failure_sigterm_still_ends_the_process(db_url, request):
    proc = _run_unseen(db_url, request, "caught-then-sigterm")
    _wait_for(proc, "READY")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # as without the tracker
    run, _ = _only_run(db_url)
    assert run.status == "failed" and run.stop_details["error"]["type"] == "ValueError"


# -- kill -9 with the epoch writes off the training thread ----------------------------------------

REPORTING = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[2])
    import keras
    from tests.keras_helpers import fit, model
    from tracker import TrackingCallback

    class Report(keras.callbacks.Callback):
        # At the start of epoch N every callback's end of epoch N - 1 has returned, the
        # tracker's included: Keras's History up to there is what the process has finished.
        def on_epoch_begin(self, epoch, logs=None):
            tmp = sys.argv[3] + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.model.history.history, f)
            os.replace(tmp, sys.argv[3])

    cb = TrackingCallback(db=sys.argv[1], heartbeat_interval=0.5, log_every_n_batches=2)
    fit(model(), [Report(), cb], epochs=10_000)
    """
)


def test_kill_9_loses_at_most_the_epoch_being_written(db_url, request, tmp_path):
    """Through a slow link (PostgreSQL behind a 20 ms proxy) an epoch's write outlasts an epoch
    of the tiny model, so the kill usually lands with a write in flight; whatever the timing,
    the database holds every reported epoch but the last, exactly as Keras's History has it."""
    report = tmp_path / "history.json"
    with behind_proxy(db_url, 0.020) as (url, _):
        proc = subprocess.Popen(
            [sys.executable, "-c", REPORTING, url, str(request.config.rootpath), str(report)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 180
            history: dict = {}
            while len(history.get("loss", [])) < 6:
                assert proc.poll() is None, proc.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "no progress report"
                if report.exists():
                    history = json.loads(report.read_text())
                time.sleep(0.02)
            proc.kill()
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        history = json.loads(report.read_text())  # the last report written before the kill
    finished = len(history["loss"])
    with open_store(db_url) as s:
        (ranked,) = s.list_runs()
        run_id = ranked.run.id
        stored = {k: s.metric_history(run_id, [k]) for k in ("loss", "val_loss", "accuracy")}
        batches = s.metric_history(run_id, ["loss"], batches=True)
    epochs = [p.epoch for p in stored["loss"]]
    assert epochs == list(range(len(epochs)))  # in order, no gap
    assert len(epochs) >= finished - 1  # at most the epoch being written is lost
    common = min(len(epochs), finished)
    for key, points in stored.items():
        assert [p.epoch for p in points] == epochs
        assert [p.value for p in points[:common]] == pytest.approx(history[key][:common])
    # The batches of a stored epoch were stored with it.
    assert {p.epoch for p in batches} >= set(epochs)
