"""4. Queries on the ingest database, and 5. how their cost grows with the number of runs.

tracker, in-process: `Store.best_runs("val_loss")` (best epoch of each run), one run's
`metric_history`, `list_runs(limit=50)`; as whole processes: `tracker --help`,
`tracker --db URL best --metric val_loss`, `tracker --db URL runs list --limit 50`, plus the
`python -X importtime` view of those processes. MLflow: `search_runs` ordered by
`metrics.val_loss` (ranks each run's *last* value: MLflow keeps no best-over-epochs),
`get_metric_history` of the 4 keys, `search_runs` of the newest 50.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import run_id, summarize
from harness import Context
from ingest import import_into

from tracker import open_store

TRACKER_CLI = str(Path(sys.executable).with_name("tracker"))
FORBIDDEN = ("alembic", "keras", "tensorflow")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TRACKER_DB_URL", None)
    return env


def in_process(url: str, reps: int, newest: str) -> dict[str, Any]:
    store = open_store(url)
    try:
        ops = {
            "best": lambda: store.best_runs("val_loss"),
            "history": lambda: store.metric_history(newest),
            "list50": lambda: store.list_runs(limit=50),
        }
        out: dict[str, Any] = {}
        for name, fn in ops.items():
            first = fn()  # warm: compiled statements, pool, page cache
            assert first, f"{name} returned nothing"
            samples = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - t0)
            out[name] = summarize(samples)
        out["best_value"] = store.best_runs("val_loss")[0].value
        return out
    finally:
        store.close()


def cli_commands(url: str) -> dict[str, list[str]]:
    return {
        "help": [TRACKER_CLI, "--help"],
        "best": [TRACKER_CLI, "--db", url, "best", "--metric", "val_loss"],
        "list50": [TRACKER_CLI, "--db", url, "runs", "list", "--limit", "50"],
    }


def processes(url: str, reps: int) -> dict[str, Any]:
    out = {}
    for name, cmd in cli_commands(url).items():
        subprocess.run(cmd, check=True, capture_output=True, env=_env())  # warm the page cache
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=_env())
            samples.append(time.perf_counter() - t0)
        out[name] = summarize(samples)
    return out


def importtime(url: str) -> dict[str, Any]:
    """What each command imports: any alembic/keras/tensorflow module, and the import time spent
    in each top-level package (the sum of its modules' own times)."""
    out = {}
    for name, cmd in cli_commands(url).items():
        py = [sys.executable, "-X", "importtime", "-m", "tracker.cli.main", *cmd[1:]]
        proc = subprocess.run(py, check=True, capture_output=True, text=True, env=_env())
        packages: dict[str, float] = {}
        modules: dict[str, float] = {}
        forbidden = set()
        for line in proc.stderr.splitlines():
            parts = line[len("import time:") :].split("|")
            if not line.startswith("import time:") or len(parts) != 3:
                continue
            if not parts[0].strip().isdigit():
                continue  # the header
            module = parts[2].strip()
            root = module.split(".")[0]
            if root in FORBIDDEN:
                forbidden.add(module)
            modules[module] = int(parts[0]) / 1e6  # self time
            packages[root] = packages.get(root, 0.0) + modules[module]
        top = sorted(packages.items(), key=lambda kv: -kv[1])[:8]
        top_modules = sorted(modules.items(), key=lambda kv: -kv[1])[:8]
        out[name] = {
            "total_s": sum(packages.values()),
            "top": [{"package": m, "self_s": s} for m, s in top],
            "top_modules": [{"module": m, "self_s": s} for m, s in top_modules],
            "forbidden": sorted(forbidden),
        }
    return out


def run(ctx: Context, backend: str) -> dict[str, Any]:
    size = ctx.size
    url = ctx.shared.get(f"store_{backend}")
    runs = size.ingest_runs
    out: dict[str, Any] = {"runs": runs, "epochs": size.ingest_epochs}
    if url is None:
        url = ctx.new_db(backend, "queries_tracker")
        ctx.log(f"    building a {runs}-run store with import_runs ...")
        out["build"] = import_into(url, 0, runs, size.ingest_epochs, size.ingest_chunk)
        ctx.shared[f"store_{backend}"] = url
    newest = run_id(runs - 1)
    out["tracker"] = in_process(url, size.query_reps, newest)
    out["tracker"]["process"] = processes(url, size.process_reps)
    out["tracker"]["importtime"] = importtime(url)
    if ctx.mlflow:
        ml_runs = min(size.mlflow_query_runs, runs)
        ml_url = ctx.new_db(backend, "queries_mlflow")
        ctx.log(f"    building a {ml_runs}-run MLflow store with log_batch ...")
        work = ctx.scratch("mlflow-queries")
        build = ctx.mlflow.call(
            "ingest", cwd=work, uri=ml_url, runs=ml_runs, epochs=size.ingest_epochs
        )
        out["mlflow"] = ctx.mlflow.call(
            "queries",
            cwd=work,
            uri=ml_url,
            reps=size.query_reps,
            process_reps=size.mlflow_process_reps,
        )
        out["mlflow"]["runs"] = ml_runs
        out["mlflow"]["build"] = build
    return out


def growth(ctx: Context, backend: str) -> dict[str, Any]:
    """The same queries on stores of growing size, each grown from the previous one."""
    size = ctx.size
    stages: list[dict[str, Any]] = []
    current: tuple[str, int] | None = None
    shared = ctx.shared.get(f"store_{backend}")
    left: tuple[str, int] | None = (shared, size.ingest_runs) if shared else None
    for n in sorted(size.growth_runs):
        options = [c for c in (current, left) if c and c[1] <= n]
        url, have = (
            max(options, key=lambda c: c[1]) if options else (ctx.new_db(backend, "growth"), 0)
        )
        if left and url == left[0]:
            left = None  # grown from here on: no longer the ingest store
        build = None
        if have < n:
            ctx.log(f"    growing a store from {have} to {n} runs ...")
            build = import_into(url, have, n - have, size.ingest_epochs, size.ingest_chunk)
        current = (url, n)
        stage: dict[str, Any] = {"runs": n, "rows": n * size.ingest_epochs * 4}
        if build:
            stage["build"] = build
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :]
            stage["db_mib"] = sum(
                os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s)
            ) / (1024 * 1024)
        stage["tracker"] = in_process(url, size.query_reps, run_id(n - 1))
        stage["tracker"]["process"] = processes(url, size.process_reps)
        stages.append(stage)
    return {"stages": stages, "epochs": size.ingest_epochs}
