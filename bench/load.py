"""Load test (issue 6): many training processes writing one database while queries run.

    python bench/load.py                    # 8 writers on SQLite, 16 on a throwaway PostgreSQL
    python bench/load.py --epochs 20 --sqlite-writers 2 --pg-writers 2    # a quick look

Each writer is a separate process that records one run: `--epochs` epochs of 10 metrics, each
epoch also carrying 20 batch points (written with the epoch, as the callback does). Meanwhile this
process ranks and lists runs in a loop. At the end every row is counted: the run passes only if
nothing is missing, nothing is duplicated and no writer or query saw an error. Results go to
bench/results/load-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS, BATCHES = 10, 20


def worker(url: str, name: str, epochs: int) -> None:
    from tracker import open_store
    from tracker.records import MetricPoint

    store = open_store(url)
    run = store.create_run(experiment="load", name=name, epochs_planned=epochs)
    latencies = []
    for epoch in range(epochs):
        now = datetime.now(timezone.utc)
        batches = [MetricPoint("loss", epoch, b, 1.0 / (b + 1), now) for b in range(BATCHES)]
        t0 = time.perf_counter()
        store.log_epoch(
            run.id, epoch, {f"m{k}": epoch + k / 10 for k in range(METRICS)}, batches=batches
        )
        latencies.append(time.perf_counter() - t0)
    store.finish_run(run.id, status="finished", stop_reason="completed")
    latencies.sort()
    print(
        json.dumps(
            {
                "run_id": run.id,
                "median_ms": 1e3 * statistics.median(latencies),
                "p95_ms": 1e3 * latencies[int(0.95 * (len(latencies) - 1))],
            }
        )
    )


def run_load(url: str, writers: int, epochs: int) -> dict:
    from tracker import open_store

    open_store(url).close()  # migrate once up front; the race on an empty db has its own test
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, f"w{i}", str(epochs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(writers)
    ]
    query_ms, query_errors = [], []
    store = open_store(url)
    start = time.perf_counter()
    while any(p.poll() is None for p in procs):
        t0 = time.perf_counter()
        try:
            store.list_runs(limit=50)
            if store.metric_keys():
                store.best_runs("m0", mode="min")
        except Exception as e:  # noqa: BLE001 - counted and reported
            query_errors.append(repr(e))
        query_ms.append(1e3 * (time.perf_counter() - t0))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    outs = [p.communicate() for p in procs]
    writer_errors = [err[-500:] for p, (_, err) in zip(procs, outs, strict=True) if p.returncode]
    stats = [json.loads(out) for p, (out, _) in zip(procs, outs, strict=True) if not p.returncode]
    missing = []
    for st in stats:
        got_epochs = len(store.metric_history(st["run_id"]))
        got_batches = len(store.metric_history(st["run_id"], batches=True))
        if (got_epochs, got_batches) != (epochs * METRICS, epochs * BATCHES):
            missing.append(
                {"run": st["run_id"], "epoch_rows": got_epochs, "batch_rows": got_batches}
            )
    store.close()
    rows = writers * epochs * (METRICS + BATCHES)
    return {
        "writers": writers,
        "epochs": epochs,
        "rows_expected": rows,
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "writer_errors": writer_errors,
        "query_errors": query_errors,
        "incomplete_runs": missing,
        "epoch_write_median_ms": statistics.median(s["median_ms"] for s in stats)
        if stats
        else None,
        "epoch_write_p95_ms": max(s["p95_ms"] for s in stats) if stats else None,
        "queries": len(query_ms),
        "query_median_ms": statistics.median(query_ms) if query_ms else None,
        "ok": not writer_errors and not query_errors and not missing and len(stats) == writers,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--sqlite-writers", type=int, default=8)
    parser.add_argument("--pg-writers", type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    results = {
        "started": datetime.now(timezone.utc).isoformat(),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = run_load(f"sqlite:///{tmp}/load.db", args.sqlite_writers, args.epochs)
        print("sqlite", json.dumps(results["sqlite"], indent=1))
    if args.pg_writers:
        from tests.pgcluster import Cluster

        cluster = Cluster()
        try:
            results["postgresql"] = run_load(cluster.start(), args.pg_writers, args.epochs)
            print("postgresql", json.dumps(results["postgresql"], indent=1))
        finally:
            cluster.stop()
    results["loadavg_after"] = os.getloadavg()
    out = ROOT / "bench" / "results" / f"load-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2))
    print(out)
    sys.exit(0 if all(results[k]["ok"] for k in ("sqlite", "postgresql") if k in results) else 1)


if __name__ == "__main__":
    main()
