"""Real fits writing to an artifact store: trained on one "machine", restored on another, a
training process killed with uploads pending and finished by `tracker sync`, the best weights on
S3, an unreachable store reported when the run ends. Both databases.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from tracker import open_store
from tracker.checkpoint_files import file_digest

from .cli_support import ok_json, run
from .conftest import S3_BUCKET

pytestmark = pytest.mark.keras

# A filesystem whose writes are slow, registered by the test scripts only: it keeps uploads
# pending long enough to kill the training process in the middle of them.
SLOW_FS = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    import fsspec
    from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

    class SlowOpener(LocalFileOpener):
        def write(self, data):
            Path(os.environ["UPLOAD_MARKER"]).touch()
            time.sleep(float(os.environ["SLOW_UPLOAD_S"]))
            return super().write(data)

    class SlowFS(LocalFileSystem):
        protocol = "slowfile"

        def _open(self, path, mode="rb", block_size=None, **kwargs):
            return SlowOpener(self._strip_protocol(path), mode, fs=self, **kwargs)

    fsspec.register_implementation("slowfile", SlowFS, clobber=True)
    """
)

TRAIN = SLOW_FS + textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    os.chdir(sys.argv[3])
    import keras
    from tests.keras_helpers import fit, model
    from tracker import TrackingCallback

    mc = keras.callbacks.ModelCheckpoint("ckpt/epoch{epoch:02d}.keras")
    cb = TrackingCallback(db=sys.argv[1], upload_checkpoints=True, run_name="trained-there")
    fit(model(), [mc, cb], epochs=3)
    print("FIT DONE", flush=True)
    """
)

SYNC = SLOW_FS + textwrap.dedent(
    """
    import sys
    from tracker.cli.main import cli
    cli(["--db", sys.argv[1], "sync"])
    """
)


def _train(db_url: str, rootdir: Path, workdir: Path, env: dict[str, str]) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, db_url, str(rootdir), str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SLOW_UPLOAD_S": "0", "UPLOAD_MARKER": os.devnull, **env},
    )


def _checkpoints(db_url: str):
    with open_store(db_url) as s:
        (ranked,) = s.list_runs()
        return ranked.run.id, s.checkpoints(ranked.run.id)


def test_trained_there_restored_here_from_a_shared_folder(db_url, tmp_path, request, monkeypatch):
    import keras

    from tests.keras_helpers import model
    from tracker import restore_weights

    there, here, shared = tmp_path / "there", tmp_path / "here", tmp_path / "shared"
    proc = _train(db_url, request.config.rootpath, there, {"TRACKER_ARTIFACTS": str(shared)})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "FIT DONE" in out, err[-3000:]
    run_id, cks = _checkpoints(db_url)
    mine = [c for c in cks if c.source == "ModelCheckpoint"]
    assert len(mine) == 3 and all(c.uploaded_at is not None for c in mine)
    assert all(c.artifact_uri and c.artifact_uri.startswith(str(shared)) for c in mine)
    reference = tmp_path / "reference"
    shutil.copytree(there / "ckpt", reference)  # what Keras wrote, kept outside both machines
    shutil.rmtree(there)  # the machine that trained is out of reach

    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("TRACKER_ARTIFACTS", str(shared))
    shown = ok_json(db_url, "runs", "show", run_id)["checkpoints"]
    assert [c["available"] for c in shown if c["source"] == "ModelCheckpoint"] == ["store"] * 3
    restored = run(db_url, "restore", run_id, "--epoch", "2", "--to", str(here / "m.keras"))
    assert restored.exit_code == 0, restored.stderr
    assert (here / "m.keras").read_bytes() == (reference / "epoch03.keras").read_bytes()

    m = model(seed=1)
    ck = restore_weights(m, run_id, db=db_url)
    assert ck.source == "ModelCheckpoint" and not Path(ck.path).exists()
    saved = keras.models.load_model(reference / Path(ck.path).name)
    for got, want in zip(m.get_weights(), saved.get_weights(), strict=True):
        assert (got == want).all()


def test_kill_9_with_uploads_pending_then_sync_finishes_them(db_url, tmp_path, request):
    work, store = tmp_path / "work", tmp_path / "store"
    marker = tmp_path / "upload-started"
    env = {
        "TRACKER_ARTIFACTS": f"slowfile://{store}",
        "TRACKER_ARTIFACTS_DIR": str(tmp_path / "local"),
        "SLOW_UPLOAD_S": "600",
        "UPLOAD_MARKER": str(marker),
    }
    proc = _train(db_url, request.config.rootpath, work, env)
    deadline = time.monotonic() + 240
    saved = 0
    while time.monotonic() < deadline and proc.poll() is None and saved < 3:
        time.sleep(0.3)
        with open_store(db_url) as s:
            runs = s.list_runs()
            cks = s.checkpoints(runs[0].run.id) if runs else []
        saved = sum(c.source == "ModelCheckpoint" for c in cks)
    time.sleep(2)  # the run ends: best weights written, then it waits for the uploads
    assert proc.poll() is None and marker.exists(), proc.communicate()[1][-3000:]
    proc.kill()  # kill -9 while the first upload is still being written
    out, _ = proc.communicate(timeout=30)
    assert "FIT DONE" not in out
    run_id, cks = _checkpoints(db_url)
    with open_store(db_url) as s:
        # Training went on through all 3 epochs while the first upload was still being written.
        assert len(s.pending_uploads(run_id)) == len(cks) >= 4

    synced = subprocess.run(
        [sys.executable, "-c", SYNC, db_url],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "SLOW_UPLOAD_S": "0", "UPLOAD_MARKER": os.devnull},
        timeout=120,
    )
    assert synced.returncode == 0, synced.stderr
    assert "pending checkpoint upload(s)" in synced.stdout
    _, cks = _checkpoints(db_url)
    newest = {c.path: c.id for c in cks}
    for c in cks:
        if newest[c.path] != c.id:
            continue  # an older best-weights file the newer one overwrote
        assert c.uploaded_at is not None, c
        stored = store / c.artifact_key
        assert file_digest(stored) == (c.size, c.sha256)
    assert sum(c.source == "ModelCheckpoint" for c in cks) == 3


def test_best_weights_go_to_s3_and_restore_from_there(db_url, tmp_path, s3, monkeypatch):
    from tests.keras_helpers import fit, model
    from tracker import TrackingCallback, restore_weights

    url = f"s3://{S3_BUCKET}/fit-{tmp_path.name}"
    cb = TrackingCallback(db=db_url, artifacts=url, artifacts_dir=tmp_path / "local")
    m = model()
    fit(m, [cb], epochs=3)
    run_id, cks = _checkpoints(db_url)
    best = cks[-1]
    assert best.source == "TrackingCallback" and best.uploaded_at is not None
    assert best.artifact_uri == f"{url}/{run_id}/best.weights.h5"
    body = s3.get_object(Bucket=S3_BUCKET, Key=f"fit-{tmp_path.name}/{run_id}/best.weights.h5")
    assert len(body["Body"].read()) == best.size

    expected = model(seed=2)
    expected.load_weights(best.path)
    Path(best.path).unlink()
    fresh = model(seed=3)
    ck = restore_weights(fresh, run_id, db=db_url)
    assert ck.id == best.id
    for got, want in zip(fresh.get_weights(), expected.get_weights(), strict=True):
        assert (got == want).all()


def test_a_run_ending_with_uploads_unfinished_says_so_and_sync_finishes(db_url, tmp_path):
    import keras

    from tests.keras_helpers import fit, model
    from tracker import TrackingCallback

    store = tmp_path / "store"
    store.write_text("not a folder yet: the store is away")
    cb = TrackingCallback(
        db=db_url, artifacts=str(store), artifacts_dir=tmp_path / "local", upload_checkpoints=True
    )
    path = str(tmp_path / "ckpt" / "e{epoch}.weights.h5")
    mc = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model(), [mc, cb], epochs=2)
    said = [str(w.message) for w in caught if "did not finish" in str(w.message)]
    assert said and "tracker sync" in said[0]
    run_id, cks = _checkpoints(db_url)
    assert cks and all(c.uploaded_at is None for c in cks)

    store.unlink()  # the store is back
    synced = run(db_url, "sync")
    assert synced.exit_code == 0 and "finished" in synced.stdout, synced.stderr
    _, cks = _checkpoints(db_url)
    newest = {c.path: c.id for c in cks}
    finished = [c for c in cks if newest[c.path] == c.id]  # not an overwritten best file
    assert len(finished) == 3  # two ModelCheckpoint files and the best weights
    for c in finished:
        assert c.uploaded_at is not None and c.artifact_key is not None
        assert file_digest(store / c.artifact_key) == (c.size, c.sha256)
