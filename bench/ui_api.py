"""The web UI's server side, in process: /api/runs pages on 50,000 runs and a 1,000,000-point
batch series served downsampled (README, "Web UI"). Not part of bench/run.py yet.

    python bench/ui_api.py                      # SQLite file in a temporary folder
    python bench/ui_api.py URL                  # an existing (or empty) database
    python bench/ui_api.py --postgres           # a throwaway PostgreSQL cluster (tests.pgcluster)

The store is built with bulk inserts of runs, params and metric summaries (the runs table never
reads a metric history, so 100 epochs of history would only cost build time), plus one run with
100 epochs x 10,000 batch points of `loss`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from tracker import open_store
from tracker.records import MetricPoint
from tracker.store import Store
from tracker.tables import experiments, metric_summaries, params, runs
from tracker.ui.app import create_app, open_read_only

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
KEYS = ("loss", "val_loss", "accuracy", "val_accuracy")
REQUESTS = {
    "api runs, page of 50": "/api/runs?limit=50",
    "api runs, sorted by val_loss": "/api/runs?limit=50&sort=val_loss",
    "api runs, offset 25000 + param filter": "/api/runs?limit=50&offset=25000&param=units=64",
    "runs page HTML": "/?limit=50",
}
SERIES = {
    "series 1M -> 800": "/api/runs/million/series?key=loss&batches=1&max_points=800",
    "series 1M zoomed to 10%": "/api/runs/million/series?key=loss&batches=1&x_min=40&x_max=50",
}


def _run_row(i: int) -> dict:
    t = T0 + timedelta(minutes=i)
    return {
        "id": f"{i:032x}",
        "name": f"bench-{i:06d}",
        "experiment_id": 1,
        "status": "finished",
        "stop_reason": "completed",
        "stop_details": {},
        "started_at": t,
        "ended_at": t + timedelta(minutes=3),
        "heartbeat_at": t,
        "heartbeat_deadline": t,
        "epochs_planned": 100,
        "epochs_done": 100,
        "last_epoch": 99,
        "fit_params": {},
        "environment": {},
        "model": {},
        "references": [],
    }


def _summary(run_id: str, key: str, rng: random.Random) -> dict:
    v = rng.random()
    return {
        "run_id": run_id,
        "key": key,
        "count": 100,
        "first_value": v,
        "first_epoch": 0,
        "last_value": v,
        "last_epoch": 99,
        "min_value": v / 2,
        "min_epoch": rng.randrange(100),
        "max_value": v * 2,
        "max_epoch": rng.randrange(100),
    }


def build(store: Store, n_runs: int) -> None:
    rng = random.Random(0)
    with store.engine.begin() as c:
        c.execute(insert(experiments), [{"id": 1, "name": "bench", "created_at": T0}])
        rows = [_run_row(i) for i in range(n_runs)]
        c.execute(insert(runs), rows)
        c.execute(
            insert(params),
            [
                {"run_id": r["id"], "key": k, "value": str(rng.choice(choices))}
                for r in rows
                for k, choices in (("lr", (0.1, 0.01, 0.001)), ("units", (32, 64)))
            ],
        )
        c.execute(insert(metric_summaries), [_summary(r["id"], k, rng) for r in rows for k in KEYS])
    big = store.create_run(experiment="bench", name="million", fit_params={"steps": 10_000})
    for e in range(100):
        points = [MetricPoint("loss", e, s, 1 / (1 + e) + rng.random(), T0) for s in range(10_000)]
        store.log_batch_metrics(big.id, points)
    store.finish_run(big.id, status="finished", stop_reason="completed")


def median_ms(client: Any, path: str, reps: int) -> float:
    client.get(path)
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        r = client.get(path)
        samples.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return round(statistics.median(samples) * 1000, 1)


def measure(url: str, n_runs: int) -> None:
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

    with open_store(url) as store:
        if not store.run_ids():
            build(store, n_runs)
    with (
        open_read_only(url) as store,
        TestClient(create_app(store), base_url="http://127.0.0.1:5000") as client,
    ):
        for name, path in REQUESTS.items():
            print(f"{name:40s} {median_ms(client, path, 15):8.1f} ms")
        for name, path in SERIES.items():
            print(f"{name:40s} {median_ms(client, path, 9):8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--runs", type=int, default=50_000)
    args = parser.parse_args()
    if args.postgres:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.pgcluster import Cluster

        cluster = Cluster()
        try:
            measure(cluster.start(), args.runs)
        finally:
            cluster.stop()
        return
    with tempfile.TemporaryDirectory() as tmp:
        measure(args.url or f"sqlite:///{tmp}/ui.db", args.runs)


if __name__ == "__main__":
    main()
