"""What the run ran on: versions, host, git state, command line. Gathered once per run.

What cannot change while the process lives (versions, host, platform) is looked up once per process;
the git state is read again for every run (code may be edited or committed between two `fit`s), with
one `git` process in a repository and none outside one. What belongs to the moment `fit` starts
(directory, command line, the modules in use) is taken then; the rest when the environment is first
read, which is on the writer thread as it writes the run's creation, so that a `git` process and
package metadata stay out of the training thread and off the hook that starts the run.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any


@cache
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str, cwd: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _maybe_in_repository(cwd: str) -> bool:
    """False only when git surely finds no repository from `cwd` (so none need be asked): no
    `.git` in it or above it, none of them a repository itself, no GIT_DIR / GIT_WORK_TREE."""
    if os.environ.get("GIT_DIR") or os.environ.get("GIT_WORK_TREE"):
        return True
    try:
        here = Path(cwd).resolve()
        for d in (here, *here.parents):
            if os.path.lexists(d / ".git"):
                return True
            if (d / "HEAD").is_file() and (d / "objects").is_dir() and (d / "refs").is_dir():
                return True  # a bare repository, or a .git directory itself
    except OSError:
        return True
    return False


def git_state(cwd: str | None = None) -> dict[str, Any]:
    """Commit, branch and dirty flag of the repository around `cwd`; empty outside one."""
    cwd = cwd or os.getcwd()
    if not _maybe_in_repository(cwd):
        return {}
    # One process for all three facts: the header of `status --branch` names commit and branch.
    out = _git("status", "--porcelain=v2", "--branch", "--untracked-files=no", cwd=cwd)
    if out is not None:
        lines = out.splitlines()
        heads = dict(
            line[2:].split(" ", 1) for line in lines if line.startswith("# ") and " " in line[2:]
        )
        commit = heads.get("branch.oid")
        if commit is None:
            return _git_state_by_parts(cwd)
        if commit == "(initial)":
            return {}  # no commit yet
        branch = heads.get("branch.head")
        return {
            "git_commit": commit,
            "git_dirty": any(not line.startswith("#") for line in lines),
            "git_branch": "HEAD" if branch in (None, "(detached)") else branch,
        }
    return _git_state_by_parts(cwd)  # no work tree (a bare repository), or an older git


def _git_state_by_parts(cwd: str) -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if not commit:
        return {}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return {
        "git_commit": commit,
        "git_dirty": bool(status),
        "git_branch": _git("rev-parse", "--abbrev-ref", "HEAD", cwd=cwd),
    }


@cache
def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "tracker": _version("tracker"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
    }


def keras_backend() -> str | None:
    """`keras.backend.backend()` when Keras is imported (it is, by the callback); None else."""
    keras = sys.modules.get("keras")
    try:
        return str(keras.backend.backend()) if keras is not None else None
    except Exception:  # noqa: BLE001 - a Keras without the function: unknown
        return None


# Packages whose version is recorded: the one imported (in use), else the one installed.
_PACKAGES = ("tensorflow", "keras", "jax", "torch")


class Environment(Mapping[str, Any]):
    """A run's environment, read as a dict: the first read completes it.

    No thread and no lock: two threads reading at once would both learn the same facts, and a
    child forked before the first read learns them itself."""

    def __init__(self) -> None:
        self._now: dict[str, Any] = {
            "backend": keras_backend(),
            "pid": os.getpid(),
            "cwd": os.getcwd(),
            "command": [sys.executable, *sys.argv],
        }
        for name in _PACKAGES:
            self._now[name] = getattr(sys.modules.get(name), "__version__", None)
        self._facts: dict[str, Any] | None = None

    def _complete(self) -> dict[str, Any]:
        facts = self._facts
        if facts is None:
            try:
                facts = _with_the_rest(self._now)
            except Exception:  # noqa: BLE001 - what cannot be learned is left out, not the run
                facts = dict(self._now)
            self._facts = facts
        return facts

    def __getitem__(self, key: str) -> Any:
        return self._complete()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._complete())

    def __len__(self) -> int:
        return len(self._complete())


def _with_the_rest(now: dict[str, Any]) -> dict[str, Any]:
    machine = _machine()

    def in_use(name: str) -> str | None:
        return now[name] or _version(name)

    return {
        "python": machine["python"],
        "tensorflow": in_use("tensorflow"),
        "keras": in_use("keras"),
        "backend": now["backend"],
        "jax": in_use("jax"),
        "torch": in_use("torch"),
        "tracker": machine["tracker"],
        "host": machine["host"],
        "platform": machine["platform"],
        "pid": now["pid"],
        "cwd": now["cwd"],
        "command": now["command"],
        **git_state(now["cwd"]),
    }


def collect_environment() -> Environment:
    return Environment()
