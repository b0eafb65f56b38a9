"""The web UI's server side, in process: /api/runs pages on 50,000 runs and a 1,000,000-point
batch series served downsampled (README, "Web UI"); `ui_api` of bench/run.py.

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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]  # common.py; tests.pgcluster

from common import ui_runs  # noqa: E402

from tracker import open_store  # noqa: E402
from tracker.records import MetricPoint  # noqa: E402
from tracker.store.run_store import Store  # noqa: E402
from tracker.store.tables import experiments, metric_summaries, params, runs  # noqa: E402
from tracker.ui.app import create_app, open_read_only  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
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


def _run_row(r: dict[str, Any]) -> dict[str, Any]:
    start = datetime.fromtimestamp(r["started"], timezone.utc)
    return {
        "id": r["id"],
        "name": r["name"],
        "experiment_id": 1,
        "status": "finished",
        "stop_reason": "completed",
        "stop_details": {},
        "started_at": start,
        "ended_at": datetime.fromtimestamp(r["ended"], timezone.utc),
        "heartbeat_at": start,
        "heartbeat_deadline": start,
        "epochs_planned": 100,
        "epochs_done": 100,
        "last_epoch": 99,
        "fit_params": {},
        "environment": {},
        "model": {},
        "references": [],
    }


def _summary(run_id: str, key: str, m: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "key": key,
        "count": 100,
        "first_value": m["last"],
        "first_epoch": 0,
        "last_value": m["last"],
        "last_epoch": 99,
        "min_value": m["min"],
        "min_epoch": m["min_epoch"],
        "max_value": m["max"],
        "max_epoch": m["max_epoch"],
    }


def build(store: Store, n_runs: int, epochs: int = 100, steps: int = 10_000) -> None:
    """`n_runs` runs of `common.ui_runs` and the run `million`: `epochs` x `steps` batch
    points of `loss` (1,000,000 by default), written as training writes them, per epoch."""
    runs_ = list(ui_runs(n_runs))
    with store.engine.begin() as c:
        c.execute(insert(experiments), [{"id": 1, "name": "bench", "created_at": T0}])
        c.execute(insert(runs), [_run_row(r) for r in runs_])
        c.execute(
            insert(params),
            [
                {"run_id": r["id"], "key": k, "value": str(v)}
                for r in runs_
                for k, v in r["params"].items()
            ],
        )
        c.execute(
            insert(metric_summaries),
            [_summary(r["id"], k, m) for r in runs_ for k, m in r["metrics"].items()],
        )
    rng = random.Random(0)
    big = store.create_run(experiment="bench", name="million", fit_params={"steps": steps})
    for e in range(epochs):
        points = [MetricPoint("loss", e, s, 1 / (1 + e) + rng.random(), T0) for s in range(steps)]
        store.log_batch_metrics(big.id, points)
    store.finish_run(big.id, status="finished", stop_reason="completed")
    settle(store)


def settle(store: Store) -> None:
    """On PostgreSQL, `VACUUM ANALYZE` the freshly bulk-loaded tables: what autovacuum does to
    any table within a minute or so of a large insert (insert-triggered since PostgreSQL 13).
    Measured before it, a store that was filled in one statement a second ago counts its runs by
    visiting all 50,000 rows (the visibility map is still empty) and has no planner statistics,
    which no store that grew over months is like."""
    if store.engine.dialect.name != "postgresql":
        return
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("VACUUM ANALYZE")


def median_s(client: Any, path: str, reps: int) -> float:
    client.get(path)
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        r = client.get(path)
        samples.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
    return statistics.median(samples)


def measure(
    url: str, n_runs: int, epochs: int = 100, steps: int = 10_000, reps: int = 15
) -> dict[str, Any]:
    """Median seconds of each request (REQUESTS and SERIES) on the store at `url`, built
    first when it is empty; series requests take reps // 3 + 3 repetitions."""
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

    t = time.perf_counter()
    with open_store(url) as store:
        if not store.run_ids():
            build(store, n_runs, epochs, steps)
    built = time.perf_counter() - t
    out: dict[str, Any] = {"runs": n_runs, "batch_points": epochs * steps, "build_s": built}
    with (
        open_read_only(url) as store,
        TestClient(create_app(store), base_url="http://127.0.0.1:5000") as client,
    ):
        out["requests"] = {name: median_s(client, path, reps) for name, path in REQUESTS.items()}
        zoom = f"&x_min={0.4 * epochs:g}&x_max={0.5 * epochs:g}"
        series = {k: v.replace("&x_min=40&x_max=50", zoom) for k, v in SERIES.items()}
        out["series"] = {name: median_s(client, p, reps // 3 + 3) for name, p in series.items()}
        shown = client.get(series["series 1M -> 800"]).json()["series"]["loss"]
        out["series_shown"] = {"shown": shown["shown"], "total": shown["total"]}
    return out


def run(ctx: Any, backend: str) -> dict[str, Any]:
    """bench/run.py's entry: a new database of `backend` at the size's scale."""
    size = ctx.size
    url = ctx.new_db(backend, "ui")
    return measure(url, size.ui_runs, size.ui_batch_epochs, size.ui_batch_steps, size.ui_reps)


def report(result: dict[str, Any]) -> None:
    for name, s in {**result["requests"], **result["series"]}.items():
        print(f"{name:40s} {s * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--runs", type=int, default=50_000)
    args = parser.parse_args()
    if args.postgres:
        from tests.pgcluster import Cluster

        cluster = Cluster()
        try:
            report(measure(cluster.start(), args.runs))
        finally:
            cluster.stop()
        return
    with tempfile.TemporaryDirectory() as tmp:
        report(measure(args.url or f"sqlite:///{tmp}/ui.db", args.runs))


if __name__ == "__main__":
    main()
