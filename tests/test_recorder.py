"""The store the callback's recorder shares across the `fit`s of one process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

from tracker import Store, open_store
from tracker.recorder import RunRecorder, shared_store


def _run(recorder: RunRecorder) -> str:
    run_id = uuid.uuid4().hex
    recorder.call(Store.create_run, run_id=run_id, experiment="shared")
    recorder.call(Store.log_epoch, run_id, 0, {"loss": 1.0})
    recorder.call(Store.finish_run, run_id, status="finished", stop_reason="completed")
    return run_id


def test_recorders_of_one_process_share_the_store(db_url, tmp_path):
    first = RunRecorder(db_url, spool_path=tmp_path / "spool.db")
    a = _run(first)
    store = first._target()
    first.close()  # the end of one `fit` does not close what the next one uses
    second = RunRecorder(db_url, spool_path=tmp_path / "spool.db")
    b = _run(second)
    assert second._target() is store
    second.close()
    with open_store(db_url) as s:
        assert [s.get_run(r).epochs_done for r in (a, b)] == [1, 1]


def test_a_replaced_sqlite_file_is_opened_afresh(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    old = shared_store(url)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"t.db{suffix}").unlink(missing_ok=True)
    recorder = RunRecorder(url, spool_path=tmp_path / "spool.db")
    run_id = _run(recorder)  # a stale engine would write into the deleted file
    assert recorder._target() is not old
    assert recorder.spooled_to is None
    with open_store(url) as s:
        assert s.get_run(run_id).status == "finished"


def test_a_failed_store_is_no_longer_shared(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    store = shared_store(url)
    recorder = RunRecorder(url, spool_path=tmp_path / "spool.db")
    with pytest.warns(RuntimeWarning, match="dropped one write"):
        recorder.call(Store.log_epoch, "no-such-run", 0, {"loss": 1.0})
    assert recorder._target() is store  # this recorder goes on with it
    assert shared_store(url) is not store  # the next `fit` opens the database again
    recorder.close()


def test_a_relative_sqlite_path_is_not_shared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = shared_store("sqlite:///rel.db")
    second = shared_store("sqlite:///rel.db")
    assert first is not second
    first.close()
    second.close()


FORK = textwrap.dedent(
    """
    import os, sys, uuid
    from tracker import Store
    from tracker.recorder import RunRecorder, shared_store

    url = sys.argv[1]

    def run(tag):
        recorder = RunRecorder(url)
        run_id = uuid.uuid4().hex
        recorder.call(Store.create_run, run_id=run_id, experiment=tag)
        recorder.call(Store.log_epoch, run_id, 0, {"loss": 1.0})
        recorder.call(Store.finish_run, run_id, status="finished", stop_reason="completed")
        assert recorder.pending == 0
        return recorder._target()

    parent = run("parent")
    pid = os.fork()
    if pid == 0:
        child = run("child")
        # A new engine of its own, and a normal exit (the parent's connections are not closed).
        sys.exit(0 if child is not parent and shared_store(url) is child else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    assert run("parent-again") is parent  # the parent's engine still works after the child
    print("OK")
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
def test_a_forked_child_does_not_use_the_parents_engine(db_url):
    proc = subprocess.run(
        [sys.executable, "-c", FORK, db_url], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    with open_store(db_url) as s:
        ranked = s.list_runs()
    assert sorted(r.run.experiment for r in ranked) == ["child", "parent", "parent-again"]
    assert all(r.run.status == "finished" for r in ranked)
