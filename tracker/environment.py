"""What the run ran on: versions, host, git state, command line. Gathered once per run."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any


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


def git_state(cwd: str | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the repository around `cwd`; empty outside a repository."""
    cwd = cwd or os.getcwd()
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if not commit:
        return {}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return {
        "git_commit": commit,
        "git_dirty": bool(status),
        "git_branch": _git("rev-parse", "--abbrev-ref", "HEAD", cwd=cwd),
    }


def collect_environment() -> dict[str, Any]:
    tf = sys.modules.get("tensorflow")
    keras = sys.modules.get("keras")
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "tensorflow": getattr(tf, "__version__", None) or _version("tensorflow"),
        "keras": getattr(keras, "__version__", None) or _version("keras"),
        "tracker": _version("tracker"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "command": [sys.executable, *sys.argv],
    }
    env.update(git_state())
    return env
