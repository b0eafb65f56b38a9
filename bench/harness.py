"""Where the benchmarks run: scratch databases on SQLite or a throwaway PostgreSQL cluster, MLflow's
own virtualenv (made on first use), subprocess helpers and the machine description."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from common import Size

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MLFLOW_VENV = BENCH / ".venv-mlflow"
MLFLOW_REQUIREMENTS = BENCH / "mlflow-requirements.txt"
OWN_OUTPUTS = (":!bench/results", ":!bench/RESULTS.md")
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}


class BenchError(RuntimeError):
    pass


def run_json(cmd: list[str], *, cwd: Path, timeout: float = 3600) -> dict[str, Any]:
    """Run a benchmark script and return the JSON it prints on its `BENCH_JSON` line."""
    env = {**os.environ, **QUIET_ENV}
    env.pop("TRACKER_DB_URL", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH_JSON "):
            if proc.returncode == 0:
                return json.loads(line[len("BENCH_JSON ") :])
            break
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
    raise BenchError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}):\n{tail}")


# -- MLflow's virtualenv --------------------------------------------------------------------------


class MlflowEnv:
    """MLflow in `bench/.venv-mlflow`, driven through `mlflow_driver.py`."""

    def __init__(self, path: Path = MLFLOW_VENV) -> None:
        self.path = path
        self.python = path / "bin" / "python"

    def ensure(self, log: Any = print) -> None:
        stamp = self.path / ".requirements"
        wanted = MLFLOW_REQUIREMENTS.read_text()
        if self.python.exists() and stamp.exists() and stamp.read_text() == wanted:
            return
        log(f"installing MLflow into {self.path} (first use; pip reuses its cache) ...")
        if not self.python.exists():
            venv.EnvBuilder(with_pip=True).create(self.path)
        pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-r", str(MLFLOW_REQUIREMENTS)], check=True)
        stamp.write_text(wanted)

    def call(self, command: str, *, cwd: Path, **options: Any) -> dict[str, Any]:
        cmd = [str(self.python), str(BENCH / "mlflow_driver.py"), command]
        for k, v in options.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        return run_json(cmd, cwd=cwd)


# -- databases ------------------------------------------------------------------------------------


class Postgres:
    """A throwaway cluster (tests/pgcluster.py) with one fresh database per benchmark."""

    def __init__(self) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.pgcluster import Cluster

        self.cluster = Cluster()
        self.server_url = self.cluster.start()
        self._n = 0

    def new_database(self, name: str) -> str:
        import psycopg

        self._n += 1
        db = f"{name}_{self._n}"
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        return self.server_url.rsplit("/", 1)[0] + f"/{db}"

    def conninfo(self, db: str) -> str:
        """A libpq URL of database `db` on the cluster, with its user and password."""
        parts = urlsplit(self.server_url)
        return urlunsplit(("postgresql", parts.netloc, f"/{db}", "", ""))

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.conninfo("postgres")) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def settings(self) -> str:
        return "throwaway cluster of tests/pgcluster.py (fsync=off), local TCP"

    def pin(self, cpus: set[int]) -> None:
        """Run the server's processes on `cpus`: the postmaster and those it has started (the
        backends it starts later inherit its cores)."""
        postmaster = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        for pid in [postmaster, *_children(postmaster)]:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.sched_setaffinity(pid, cpus)

    def stop(self) -> None:
        self.cluster.stop()


def _children(parent: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == parent:  # the field after the state: the parent's pid
            out.append(int(stat.parent.name))
    return out


def split_cpus() -> tuple[set[int], set[int]] | None:
    """The cores this process may use, as (training's, the other machine's): the last one for a
    database \"on another machine\" and its link, the rest for training. None with one core."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return set(cpus[:-1]), {cpus[-1]}


@contextmanager
def on_cpus(cpus: set[int] | None) -> Iterator[None]:
    """Processes started inside run on `cpus` (a child inherits the cores of the thread that
    starts it; this process's other threads keep theirs)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


@dataclass
class Context:
    size: Size
    workdir: Path
    mlflow: MlflowEnv | None
    postgres: Postgres | None = None
    log: Any = print
    shared: dict[str, Any] = field(default_factory=dict)  # databases one benchmark leaves another

    def backends(self, which: str = "both") -> list[str]:
        """The backends a benchmark made for `which` ("sqlite", "both", "postgresql") runs on."""
        pg = ["postgresql"] if self.postgres else []
        return {"sqlite": ["sqlite"], "both": ["sqlite", *pg], "postgresql": pg}[which]

    def new_db(self, backend: str, name: str) -> str:
        """A URL of an empty database (no schema) for `backend`."""
        if backend == "postgresql":
            assert self.postgres is not None
            return self.postgres.new_database(name)
        path = self.workdir / f"{name}.db"
        n = 1
        while path.exists():
            n += 1
            path = self.workdir / f"{name}-{n}.db"
        return f"sqlite:///{path}"

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def drop_sqlite(url: str) -> None:
    if url.startswith("sqlite:///"):
        base = url[len("sqlite:///") :]
        for suffix in ("", "-wal", "-shm"):
            Path(base + suffix).unlink(missing_ok=True)


# -- the machine ----------------------------------------------------------------------------------


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.rstrip()


def machine_info() -> dict[str, Any]:
    # Tracked files changed since the commit, leaving out this benchmark's own outputs.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *OWN_OUTPUTS) or ""
    dirty = [line[3:] for line in status.splitlines()]
    return {
        "cores": os.cpu_count(),
        "memory_gib": _meminfo_gib(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": {
            d: _version(d)
            for d in ("tracker", "sqlalchemy", "alembic", "click", "psycopg", "tensorflow", "keras")
        },
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_files": dirty,
        "git_dirty_tracked": bool(dirty),
        "disk_free_gib": round(shutil.disk_usage(ROOT).free / 1024**3, 1),
    }
