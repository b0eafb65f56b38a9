"""What both sides of the benchmark share: sizes, the synthetic runs, and timing statistics.

Standard library only: `mlflow_driver.py` imports this module from MLflow's own virtualenv, where
neither tracker nor its dependencies are installed.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

EPOCH_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae")
RUN_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy")
T0 = 1_700_000_000.0  # first synthetic run's start (2023-11-14), seconds since the epoch


@dataclass(frozen=True)
class Size:
    """How big each benchmark is. `full` is what the issue asks for; `tiny` only proves it runs."""

    name: str
    # 1. per-epoch write
    write_epochs: int = 100
    write_reps: int = 5
    # 2. fit overhead
    fit_samples: int = 2000
    fit_batch: int = 32
    fit_epochs: int = 20
    fit_reps: int = 7
    # 3. bulk ingest
    ingest_runs: int = 5000
    ingest_epochs: int = 50
    ingest_chunk: int = 100
    ingest_reps: int = 3
    ingest_reps_pg: int = 1
    mlflow_ingest_runs: int = 200
    # 4. queries (on the ingest database) and 5. growth
    query_reps: int = 20
    process_reps: int = 7
    mlflow_process_reps: int = 5  # each MLflow process takes seconds just to import
    mlflow_query_runs: int = 5000
    growth_runs: tuple[int, ...] = (500, 5000, 50000)
    # 6. web UI (bench/ui_api.py, ui_pages.py, ui_charts.py)
    ui_runs: int = 50_000
    ui_batch_epochs: int = 100
    ui_batch_steps: int = 10_000
    ui_reps: int = 15
    ui_browser_reps: int = 5
    ui_chart_runs: int = 10
    ui_chart_epochs: int = 10_000
    mlflow_ui_runs: int = 50_000
    # 6. a database on another machine: PostgreSQL behind a proxy adding this much each way
    latency_delays_ms: tuple[float, ...] = (0.0, 1.0, 5.0)
    latency_reps: int = 21
    first_fit_procs: int = 3  # processes whose first fit is measured (benchmark 7)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


SIZES = {
    "full": Size("full"),
    "tiny": Size(
        "tiny",
        write_epochs=10,
        write_reps=2,
        fit_samples=64,
        fit_epochs=2,
        fit_reps=1,
        ingest_runs=20,
        ingest_epochs=5,
        ingest_chunk=10,
        ingest_reps=1,
        ingest_reps_pg=1,
        mlflow_ingest_runs=5,
        query_reps=3,
        process_reps=1,
        mlflow_process_reps=1,
        mlflow_query_runs=20,
        growth_runs=(10, 30),
        ui_runs=300,
        ui_batch_epochs=10,
        ui_batch_steps=1000,
        ui_reps=3,
        ui_browser_reps=1,
        ui_chart_runs=3,
        ui_chart_epochs=300,
        mlflow_ui_runs=300,
        latency_reps=1,
        first_fit_procs=2,
    ),
}


# -- synthetic runs -------------------------------------------------------------------------------


def run_id(i: int) -> str:
    """A stable 32-hex run id for run number `i` (uuid4-shaped, so prefixes are spread)."""
    return random.Random(i).getrandbits(128).to_bytes(16, "big").hex()


@dataclass(frozen=True)
class SynthRun:
    """One synthetic finished run: ids, times in seconds since the epoch, metric rows."""

    index: int
    id: str
    name: str
    started: float
    ended: float
    params: dict[str, Any]
    rows: list[tuple[str, int, float, float]]  # key, epoch, value, time


def synth_run(i: int, epochs: int, keys: tuple[str, ...] = RUN_KEYS) -> SynthRun:
    """Run number `i`: losses fall and accuracies rise, with noise, all seeded by `i`."""
    rnd = random.Random(i * 7919 + 1)
    started = T0 + 60.0 * i
    rate = rnd.uniform(0.02, 0.2)
    floor = rnd.uniform(0.05, 0.5)
    rows = []
    for e in range(epochs):
        t = started + 2.0 * (e + 1)
        base = floor + math.exp(-rate * e)
        for k in keys:
            noise = rnd.gauss(0.0, 0.01)
            if "acc" in k:
                v = 1.0 - base / (1.0 + floor) + noise
            elif "mae" in k:
                v = 0.5 * base + noise
            else:
                v = base + noise + (0.05 if k.startswith("val_") else 0.0)
            rows.append((k, e, v, t))
    params = {"lr": round(10 ** rnd.uniform(-4, -2), 6), "batch_size": rnd.choice([16, 32, 64])}
    return SynthRun(
        index=i,
        id=run_id(i),
        name=f"bench-{i:06d}",
        started=started,
        ended=started + 2.0 * (epochs + 1),
        params=params,
        rows=rows,
    )


def synth_runs(start: int, count: int, epochs: int) -> Iterator[SynthRun]:
    for i in range(start, start + count):
        yield synth_run(i, epochs)


def epoch_logs(e: int, keys: tuple[str, ...] = EPOCH_KEYS) -> dict[str, float]:
    """The logs Keras would pass to `on_epoch_end` of epoch `e` (6 metrics)."""
    base = 0.1 + math.exp(-0.05 * e)
    return {k: (1.0 - base / 1.2 if "acc" in k else base) + 0.001 * i for i, k in enumerate(keys)}


# -- timing ---------------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """The `q`-th percentile (0-100) with linear interpolation, as numpy's default."""
    xs = sorted(samples)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples: list[float]) -> dict[str, Any]:
    """Median, p95, min, max and count of durations in seconds."""
    return {
        "n": len(samples),
        "median": statistics.median(samples) if samples else math.nan,
        "p95": percentile(samples, 95),
        "min": min(samples) if samples else math.nan,
        "max": max(samples) if samples else math.nan,
    }


def median_interval(samples: list[float], level: float = 0.9) -> tuple[float, float]:
    """An interval that holds the true median with probability at least `level`, whatever the
    distribution: the order statistics k and n + 1 - k for the largest k the binomial law allows
    (the whole range when there are too few samples for `level`)."""
    xs = sorted(samples)
    n = len(xs)
    if not xs:
        return math.nan, math.nan
    k, below = 1, 0.0
    for j in range(1, n // 2 + 1):
        below += math.comb(n, j - 1) / 2**n  # P(at most j - 1 samples under the median)
        if 1 - 2 * below < level:
            break
        k = j
    return xs[k - 1], xs[n - k]


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# -- the web UI's store (bench/ui_api.py, and MLflow's copy of it in mlflow_driver.py) -----------

UI_T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the first run's start


def ui_runs(n: int) -> Iterator[dict[str, Any]]:
    """The finished runs of the UI benchmarks' store, one a minute: name, times (seconds since
    the epoch), two params and, per metric of RUN_KEYS, 100 epochs summarised (last, min and
    max with their epochs). Both tools' stores hold the same facts."""
    rng = random.Random(0)
    for i in range(n):
        params = {"lr": rng.choice((0.1, 0.01, 0.001)), "units": rng.choice((32, 64))}
        metrics = {}
        for key in RUN_KEYS:
            v = rng.random()
            metrics[key] = {
                "last": v,
                "min": v / 2,
                "min_epoch": rng.randrange(100),
                "max": v * 2,
                "max_epoch": rng.randrange(100),
            }
        start = UI_T0 + 60 * i
        yield {
            "id": f"{i:032x}",
            "name": f"bench-{i:06d}",
            "started": start,
            "ended": start + 180,
            "params": params,
            "metrics": metrics,
        }
