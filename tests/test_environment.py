"""The git state recorded with a run: one `git` process in a repository, none outside one."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import pytest

from tracker.training.environment import _git_state_by_parts, collect_environment, git_state

from .conftest import IN_CI
from .git_repo import commit as _commit
from .git_repo import git as _git
from .git_repo import make_repo

# Under CI the machine has git (it cloned the repository) and a skip would only hide a failure.
pytestmark = pytest.mark.skipif(
    shutil.which("git") is None and not IN_CI, reason="git is not installed"
)


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path / "repo")


def test_outside_a_repository_no_git_process_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("GIT_DIR", raising=False)
    monkeypatch.delenv("GIT_WORK_TREE", raising=False)
    inside = subprocess.run(["git", "-C", str(tmp_path), "rev-parse"], capture_output=True)
    if inside.returncode == 0 and not IN_CI:
        pytest.skip("the temporary folder lies inside a git repository")
    calls = []
    run = subprocess.run
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, *a, **k: calls.append(cmd) or run(cmd, *a, **k)
    )
    assert git_state(str(tmp_path)) == {} and calls == []


def test_a_repository_without_commits_has_no_state(repo):
    assert git_state(str(repo)) == {} == _git_state_by_parts(str(repo))


def test_commit_branch_and_dirty_flag_as_three_git_calls_gave_them(repo):
    _commit(repo)
    clean = git_state(str(repo))
    assert clean["git_branch"] == "work" and clean["git_dirty"] is False
    assert clean == _git_state_by_parts(str(repo))
    (repo / "untracked.txt").write_text("x")  # untracked files do not make the tree dirty
    assert git_state(str(repo)) == clean
    (repo / "a.txt").write_text("changed")
    dirty = git_state(str(repo))
    assert dirty == {**clean, "git_dirty": True} == _git_state_by_parts(str(repo))
    sub = repo / "sub"
    sub.mkdir()
    assert git_state(str(sub)) == dirty  # from a folder inside the work tree too


def test_detached_head_is_named_head(repo):
    _commit(repo)
    _commit(repo, "b.txt")
    _git(repo, "checkout", "-q", "HEAD~1")
    state = git_state(str(repo))
    assert state["git_branch"] == "HEAD" and state == _git_state_by_parts(str(repo))


def test_each_run_reads_the_git_state_again(repo, monkeypatch):
    _commit(repo)
    monkeypatch.chdir(repo)
    first = dict(collect_environment())  # read as the store reads it, when the run is written
    _commit(repo, "b.txt")
    second = dict(collect_environment())
    assert first["git_commit"] != second["git_commit"]
    assert second["python"] == first["python"] and second["host"] == first["host"]


def test_git_runs_when_the_environment_is_first_read_not_as_fit_starts(repo, monkeypatch):
    """`fit`'s start takes only what belongs to that moment; `git` runs when the environment is
    first read (the writer thread reads it as it writes the run's creation), once, in the
    folder `fit` started in."""
    _commit(repo)
    monkeypatch.chdir(repo)
    threads = []
    run = subprocess.run
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda cmd, *a, **k: threads.append(threading.current_thread()) or run(cmd, *a, **k),
    )
    env = collect_environment()
    monkeypatch.chdir(repo.parent)  # the training code moves on; the run keeps its start
    assert threads == []
    reader = threading.Thread(target=lambda: dict(env))
    reader.start()
    reader.join()
    head = run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    assert env["cwd"] == str(repo) and env["git_commit"] == head.stdout.strip()
    assert dict(env) == dict(env) and threads == [reader]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_as_fit_starts_completes_the_environment(repo, monkeypatch):
    """A data loader's worker may be forked while the environment is still being learned: the
    child reads it whole, instead of waiting for a thread that is not there."""
    _commit(repo)
    monkeypatch.chdir(repo)
    env = collect_environment()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        try:
            os._exit(0 if dict(env).get("git_commit") else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0
