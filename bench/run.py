"""Benchmarks of tracker against MLflow on this machine (issue #7).

    .venv/bin/python bench/run.py                       # everything, full size, SQLite (~25 min)
    .venv/bin/python bench/run.py --postgres            # also PostgreSQL (throwaway cluster)
    .venv/bin/python bench/run.py --postgres --only remote_db   # a database behind a slow link
    .venv/bin/python bench/run.py --size tiny --skip-mlflow --only ingest,queries
    .venv/bin/python bench/report.py                    # bench/RESULTS.md from latest.json
    .venv/bin/python bench/run.py --only ui_api,ui_pages,ui_charts --postgres \
        --add-to bench/results/latest.json              # the web UI's, added to the last run

MLflow is installed on first use into bench/.venv-mlflow (bench/mlflow-requirements.txt) and
driven through bench/mlflow_driver.py in that virtualenv; tracker runs here. Results go to
bench/results/<time>.json and bench/results/latest.json (only for a full-size run unless `--out`
is given). Every benchmark records the load average before and after it: the machine may be
shared, so read the figures with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the callback benchmark imports Keras

from common import SIZES, loadavg  # noqa: E402
from harness import BENCH, Context, MlflowEnv, Postgres, machine_info  # noqa: E402

# name -> (module, function, backends: "sqlite", "both" or "postgresql" only)
BENCHMARKS: dict[str, tuple[str, str, str]] = {
    "epoch_write": ("epoch_write", "run", "both"),
    "fit_overhead": ("fit_overhead", "run", "sqlite"),
    "ingest": ("ingest", "run", "both"),
    "queries": ("queries", "run", "both"),
    "growth": ("queries", "growth", "sqlite"),
    "remote_db": ("remote_db", "run", "postgresql"),  # skipped without --postgres
    "ui_api": ("ui_api", "run", "both"),
    "ui_pages": ("ui_pages", "run", "both"),
    "ui_charts": ("ui_charts", "run", "sqlite"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks, of: {', '.join(BENCHMARKS)}",
    )
    p.add_argument("--postgres", action="store_true", help="also run on a throwaway PostgreSQL")
    p.add_argument("--skip-mlflow", action="store_true", help="measure tracker only")
    p.add_argument(
        "--out", type=Path, help="results folder. Defaults to bench/results (full size only)"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch databases")
    p.add_argument(
        "--add-to",
        type=Path,
        help="add the results of --only's benchmarks to this results file (and to latest.json\n"
        "beside it when it is the latest), recording when and where they ran, instead of\n"
        "writing a new file: e.g. the web UI's benchmarks added to the last full run",
    )
    a = p.parse_args(argv)
    a.only = [n.strip() for n in a.only.split(",") if n.strip()]
    unknown = [n for n in a.only if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    return a


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_one(ctx: Context, name: str, backend: str) -> dict[str, Any]:
    module, fn, _ = BENCHMARKS[name]
    func = getattr(__import__(module), fn)
    log(f"[{time.strftime('%H:%M:%S')}] {name} on {backend} ...")
    before, t0 = loadavg(), time.perf_counter()
    result = func(ctx, backend)
    wall = time.perf_counter() - t0
    result["loadavg"] = {"before": before, "after": loadavg()}
    result["wall_s"] = wall
    log(f"    done in {wall:.1f} s (load {before} -> {result['loadavg']['after']})")
    return result


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    size = SIZES[a.size]
    started = datetime.now(timezone.utc)
    mlflow = None if a.skip_mlflow else MlflowEnv()
    if mlflow:
        mlflow.ensure(log)
    workdir = Path(tempfile.mkdtemp(prefix="tracker-bench-"))
    ctx = Context(size=size, workdir=workdir, mlflow=mlflow, log=log)
    results: dict[str, Any] = {
        "schema": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "size": size.to_json(),
        "command": ["bench/run.py", *(argv if argv is not None else sys.argv[1:])],
        "machine": machine_info(),
        "loadavg_start": loadavg(),
        "benchmarks": {},
    }
    try:
        if a.postgres:
            log("starting a throwaway PostgreSQL cluster ...")
            ctx.postgres = Postgres()
            results["machine"]["postgresql"] = ctx.postgres.version()
            results["machine"]["postgresql_settings"] = ctx.postgres.settings()
        if mlflow:
            results["machine"]["mlflow"] = mlflow.call("versions", cwd=workdir)
        for name in BENCHMARKS:  # fixed order: queries reads the store ingest leaves
            if name not in a.only:
                continue
            backends = ctx.backends(BENCHMARKS[name][2])
            if not backends:
                log(f"{name}: PostgreSQL only; skipped (pass --postgres)")
                continue
            results["benchmarks"][name] = {b: run_one(ctx, name, b) for b in backends}
    finally:
        if ctx.postgres:
            ctx.postgres.stop()
        if a.keep:
            log(f"scratch databases kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["loadavg_end"] = loadavg()
    if a.add_to:
        add_results(results, a.add_to)
        return 0
    official = a.size == "full" and len(a.only) == len(BENCHMARKS)
    write_results(results, a.out, official=official)
    return 0


def add_results(results: dict[str, Any], path: Path) -> None:
    """Merge `results`' benchmarks into the results file `path`, with a note of their run."""
    data = json.loads(path.read_text())
    latest = path.parent / "latest.json"
    is_latest = latest.exists() and json.loads(latest.read_text()).get("file") == data.get("file")
    data["benchmarks"].update(results["benchmarks"])
    run = {k: results[k] for k in ("started_at", "finished_at", "command", "size", "machine")}
    run["loadavg"] = {"start": results["loadavg_start"], "end": results["loadavg_end"]}
    run["benchmarks"] = sorted(results["benchmarks"])
    # an earlier addition of the same benchmarks is replaced, not kept beside this one
    kept = [a for a in data.get("added", []) if not set(a["benchmarks"]) <= set(run["benchmarks"])]
    data["added"] = [*kept, run]
    text = json.dumps(data, indent=1) + "\n"
    path.write_text(text)
    if is_latest:
        latest.write_text(text)
    log(f"results added to {path}" + (" (and latest.json)" if is_latest else ""))


def write_results(results: dict[str, Any], out: Path | None, official: bool) -> None:
    folder = out or BENCH / "results"
    if out is None and not official:
        folder = BENCH / "results" / "tmp"  # ignored by git: a tiny or partial run
    folder.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at"].replace(":", "").replace("+0000", "Z")
    path = folder / f"{stamp}.json"
    results["file"] = path.name
    text = json.dumps(results, indent=1) + "\n"
    path.write_text(text)
    (folder / "latest.json").write_text(text)
    log(f"results: {path} (and latest.json beside it)")


if __name__ == "__main__":
    sys.exit(main())
