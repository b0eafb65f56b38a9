"""The wheel ships the CLI and the migrations inside `tracker` and works in a clean venv."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "tracker", "cli", "migrations")

pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop("TRACKER_DB_URL", None)
    return env


def _sh(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the packaged sources (the working tree stays untouched)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    _sh(sys.executable, "-m", "build", "--wheel", "--outdir", tmp / "dist", src, cwd=tmp)
    (found,) = (tmp / "dist").glob("tracker-*.whl")
    return found


def test_wheel_holds_only_the_tracker_package(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert "tracker" in tops
    assert all(t == "tracker" or re.fullmatch(r"tracker-[^-]+\.dist-info", t) for t in tops), tops
    for needed in (
        "tracker/cli/main.py",
        "tracker/cli/__init__.py",
        "tracker/migrations/env.py",
        "tracker/migrations/script.py.mako",
        "tracker/migrations/versions/0001_create_run_store.py",
        "tracker/py.typed",
    ):
        assert needed in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "tracker = tracker.cli.main:cli" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_runs_the_cli(wheel: Path, tmp_path: Path):
    venv = tmp_path / "venv"
    _sh(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _sh(
        venv / "bin" / "python",
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        wheel,
        cwd=tmp_path,
    )
    tracker = venv / "bin" / "tracker"
    db = f"sqlite:///{tmp_path}/x.db"
    upgraded = _sh(tracker, "--db", db, "db", "upgrade", cwd=tmp_path)
    assert "upgraded from empty to" in upgraded.stdout
    listed = _sh(tracker, "--db", db, "runs", "list", "--format", "json", cwd=tmp_path)
    assert json.loads(listed.stdout) == []
    current = _sh(tracker, "--db", db, "db", "current", "--format", "json", cwd=tmp_path)
    assert json.loads(current.stdout)["is_head"] is True
    # The installed copy, not this checkout, answered.
    where = _sh(
        venv / "bin" / "python",
        "-c",
        "import tracker.cli; print(tracker.cli.__file__)",
        cwd=tmp_path,
    )
    assert str(venv) in where.stdout
