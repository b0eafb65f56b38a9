"""The artifact store without Keras: push, restore from the store, availability, delete, S3.

Real files, a real shared folder, a real S3-compatible endpoint (moto's server on loopback),
both databases. The training side (the callback's uploads, `kill -9`) is in
test_artifacts_fit.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tracker import open_store
from tracker.artifacts import ArtifactStore, FileChanged, clean_root, shown
from tracker.checkpoint_files import file_digest

from .cli_support import checkpoint_file, fails, ok_json, run
from .conftest import S3_BUCKET as BUCKET
from .helpers import seed_run


def _seed(db_url: str, folder: Path, content: bytes = b"weights-bytes" * 1000) -> tuple[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    with open_store(db_url) as s:
        run_id = seed_run(s, {"val_loss": [0.5, 0.2]}, name="trained-there")
        ck = folder / "ckpt.weights.h5"
        checkpoint_file(s, run_id, ck, content, epoch=1, monitor="val_loss", value=0.2)
    return run_id, ck


def _available(db_url: str, run_id: str) -> list[str]:
    return [c["available"] for c in ok_json(db_url, "runs", "show", run_id)["checkpoints"]]


def test_push_then_restore_from_the_store_after_the_file_is_gone(db_url, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    run_id, ck = _seed(db_url, tmp_path / "there")
    original = ck.read_bytes()
    assert _available(db_url, run_id) == ["local"]

    pushed = run(db_url, "artifacts", "push", run_id, "--to", str(shared))
    assert pushed.exit_code == 0 and "uploaded 1 checkpoint" in pushed.stdout, pushed.stderr
    assert _available(db_url, run_id) == ["both"]
    assert "uploaded 0" in run(db_url, "artifacts", "push", run_id, "--to", str(shared)).stdout

    ck.unlink()  # "here": the machine that trained is out of reach
    monkeypatch.setenv("TRACKER_ARTIFACTS", str(shared))
    shown = ok_json(db_url, "runs", "show", run_id)["checkpoints"][0]
    assert (shown["state"], shown["available"], shown["uploaded"]) == ("missing", "store", True)
    to = tmp_path / "here" / "restored.weights.h5"
    to.parent.mkdir()
    out = run(db_url, "restore", run_id, "--to", str(to))
    assert out.exit_code == 0, out.stderr
    assert to.read_bytes() == original and str(shared) in out.stdout


def test_restore_refuses_a_tampered_store_copy(db_url, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    run_id, ck = _seed(db_url, tmp_path / "there")
    assert run(db_url, "artifacts", "push", run_id, "--to", str(shared)).exit_code == 0
    ck.unlink()
    (stored,) = shared.rglob("ckpt.weights.h5")
    data = bytearray(stored.read_bytes())
    data[10] ^= 0xFF  # same size, other bytes
    stored.write_bytes(bytes(data))
    to = tmp_path / "out.weights.h5"
    err = fails(db_url, "restore", run_id, "--to", str(to))
    assert "refusing to restore" in err and "does not match" in err
    assert not to.exists() and not list(tmp_path.glob(".out.weights.h5*"))
    stored.write_bytes(bytes(data[:-1]))  # another size: no longer counted as in the store
    assert _available(db_url, run_id) == ["neither"]
    assert "no longer exists" in fails(db_url, "restore", run_id, "--to", str(to))


def test_push_names_files_that_are_not_intact_here(db_url, tmp_path):
    run_id, ck = _seed(db_url, tmp_path / "there")
    ck.write_bytes(b"changed since")
    result = run(db_url, "artifacts", "push", run_id, "--to", str(tmp_path / "shared"))
    assert result.exit_code == 1 and "modified here" in result.stderr
    assert not (tmp_path / "shared").exists() or not list((tmp_path / "shared").rglob("*.h5"))


def test_runs_delete_asks_then_removes_the_store_copies(db_url, tmp_path):
    shared = tmp_path / "shared"
    run_id, _ = _seed(db_url, tmp_path / "there")
    keep_id, _ = _seed(db_url, tmp_path / "other")
    for r in (run_id, keep_id):
        assert run(db_url, "artifacts", "push", r, "--to", str(shared)).exit_code == 0
    assert (shared / run_id).is_dir()
    refused = run(db_url, "runs", "delete", run_id)  # no terminal to ask on: refused
    assert refused.exit_code == 1 and (shared / run_id).is_dir()
    deleted = run(db_url, "runs", "delete", run_id, "--yes")
    assert deleted.exit_code == 0, deleted.stderr
    assert not (shared / run_id).exists() and (shared / keep_id).is_dir()
    assert (tmp_path / "there" / "ckpt.weights.h5").is_file()  # the user's own file stays


_PROBE = """
import sys
from tracker.cli.main import cli
cli.main(["--db", sys.argv[1], "runs", "show", sys.argv[2]], standalone_mode=False)
print(sorted(m for m in ("fsspec", "s3fs", "boto3", "botocore") if m in sys.modules))
"""


def test_runs_show_with_a_folder_store_imports_no_fsspec(tmp_path):
    db_url = f"sqlite:///{tmp_path}/t.db"
    run_id, _ = _seed(db_url, tmp_path / "there")
    assert run(db_url, "artifacts", "push", run_id, "--to", str(tmp_path / "s")).exit_code == 0
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, db_url, run_id], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- S3 through an S3-compatible endpoint -------------------------------------------------------


def _keys(client, prefix: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_s3_store_push_restore_delete(db_url, tmp_path, s3):
    content = bytes(range(256)) * 8000  # 2 MB: more than one chunk each way
    run_id, ck = _seed(db_url, tmp_path / "there", content)
    prefix = f"team/{tmp_path.name}"
    pushed = run(db_url, "artifacts", "push", run_id, "--to", f"s3://{BUCKET}/{prefix}")
    assert pushed.exit_code == 0, pushed.stderr
    (key,) = _keys(s3, f"{prefix}/{run_id}/")
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(content).hexdigest()

    ck.unlink()
    shown = ok_json(db_url, "runs", "show", run_id)
    (c,) = shown["checkpoints"]
    assert c["available"] == "store" and c["artifact_uri"] == f"s3://{BUCKET}/{key}"
    assert "test-secret" not in json.dumps(shown) and "AKIATEST" not in json.dumps(shown)
    to = tmp_path / "restored.weights.h5"
    out = run(db_url, "restore", run_id, "--to", str(to))
    assert out.exit_code == 0, out.stderr
    assert to.read_bytes() == content and f"s3://{BUCKET}/{key}" in out.stdout

    s3.put_object(Bucket=BUCKET, Key=key, Body=body[:-1] + b"\x00")  # tampered in the store
    assert "does not match" in fails(db_url, "restore", run_id, "--to", str(to), "--force")
    assert to.read_bytes() == content  # the earlier good copy is not touched

    assert run(db_url, "runs", "delete", run_id, "--yes").exit_code == 0
    assert _keys(s3, f"{prefix}/{run_id}/") == []


def test_store_url_credentials_are_neither_stored_nor_printed(db_url, tmp_path, s3):
    run_id, _ = _seed(db_url, tmp_path / "there")
    url = f"s3://AKIAINURL:sekrit@{BUCKET}/cred?sas_token=abc123"
    result = run(db_url, "artifacts", "push", run_id, "--to", url)
    assert result.exit_code == 1  # S3 takes credentials from its own sources, not the URL
    assert "sekrit" not in result.stdout + result.stderr
    assert "abc123" not in result.stdout + result.stderr
    with open_store(db_url) as s:
        (ck,) = s.checkpoints(run_id)
    assert ck.artifact_root is None and ck.uploaded_at is None


def test_roots_are_kept_without_credentials_and_shown_masked():
    url = "az://user:pw@container/runs?sv=2024&sig=s3cr3t&sas_token=t0kv4l"
    assert clean_root(url) == "az://container/runs"
    assert "pw" not in shown(url) and "s3cr3t" not in shown(url) and "t0kv4l" not in shown(url)
    assert clean_root("/mnt/shared/artifacts") == "/mnt/shared/artifacts"
    assert clean_root("memory:///tmp/store") == "memory:///tmp/store"


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_file_changed_since_it_was_recorded_leaves_no_copy(where, tmp_path, request):
    src = tmp_path / "w.weights.h5"
    src.write_bytes(b"x" * (3 << 20))
    size, sha = file_digest(src)
    if where == "s3":
        client = request.getfixturevalue("s3")
        store = ArtifactStore(f"s3://{BUCKET}/changed-{tmp_path.name}")
    else:
        store = ArtifactStore(str(tmp_path / "store"))
    src.write_bytes(b"y" * (3 << 20))  # overwritten by a later save before its upload
    with pytest.raises(FileChanged):
        store.upload(src, "run/w.weights.h5", size, sha)
    assert store.size("run/w.weights.h5") is None
    if where == "s3":
        assert _keys(client, f"changed-{tmp_path.name}/") == []
    store.upload(src, "run/w.weights.h5", *file_digest(src))
    assert store.size("run/w.weights.h5") == 3 << 20


@pytest.mark.slow
def test_stream_benchmark_runs_small(tmp_path):
    """bench/artifacts.py's memory measurement runs (figures: bench/RESULTS.md, never here)."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "bench/artifacts.py", "stream", "--gb", "0.02", "--s3-mb", "6"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    for where, size in (("folder", int(0.02 * (1 << 30))), ("s3", 6 << 20)):
        assert result[where]["bytes"] == size
        assert {"hash", "upload", "fetch"} <= set(result[where])


def test_an_upload_thread_ends_once_idle_and_a_later_upload_starts_another(tmp_path):
    """A sweep of many fits must not keep one idle upload thread per fit."""
    import hashlib
    import threading
    import time

    from tracker.artifacts import ArtifactStore
    from tracker.uploads import UPLOADER_IDLE_S, Uploader

    def uploads_alive() -> int:
        return sum(t.name == "tracker-uploads" for t in threading.enumerate())

    done: list[str] = []
    store = ArtifactStore(str(tmp_path / "store"))
    uploader = Uploader(store, lambda key, sha: done.append(key))
    before = uploads_alive()
    for n in range(2):
        src = tmp_path / f"w{n}.bin"
        src.write_bytes(bytes([n]) * 1000)
        sha = hashlib.sha256(src.read_bytes()).hexdigest()
        uploader.submit(src, f"run/w{n}.bin", 1000, sha)
        assert uploader.wait() == 0 and done[-1] == f"run/w{n}.bin"
        assert (tmp_path / "store" / "run" / f"w{n}.bin").read_bytes() == src.read_bytes()
        deadline = time.monotonic() + UPLOADER_IDLE_S + 10
        while uploads_alive() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert uploads_alive() == before
