"""1. Per-epoch write: latency of recording one epoch of 6 metrics.

tracker: `TrackingCallback.on_epoch_end` driven by hand on a fake model (save_best_weights=False),
and the bare `Store.log_epoch`. MLflow: `mlflow.log_metrics(dict, step=e)`.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from common import EPOCH_KEYS, epoch_logs, summarize
from harness import Context

from tracker import open_store
from tracker.training.callback import TrackingCallback


class FakeModel:
    """What the callback touches on a model when no `fit` is running."""

    optimizer = None
    stop_training = False

    def save_weights(self, path: Any, overwrite: bool = True) -> None:
        raise AssertionError("save_best_weights is off")


def _callback_reps(ctx: Context, url: str) -> list[dict[str, Any]]:
    size = ctx.size
    store = open_store(url)
    reps = []
    try:
        for r in range(size.write_reps):
            cb = TrackingCallback(
                store=store,
                experiment="bench-write",
                run_name=f"callback-{r}",
                save_best_weights=False,
                spool_path=ctx.workdir / "spool.db",
            )
            cb.set_model(FakeModel())
            cb.on_train_begin()
            samples = []
            for e in range(size.write_epochs):
                logs = epoch_logs(e, EPOCH_KEYS)
                cb.on_epoch_begin(e)
                t0 = time.perf_counter()
                cb.on_epoch_end(e, logs)
                samples.append(time.perf_counter() - t0)
            cb.on_train_end()
            reps.append(summarize(samples))
    finally:
        store.close()
    return reps


def _store_reps(ctx: Context, url: str) -> list[dict[str, Any]]:
    size = ctx.size
    store = open_store(url)
    reps = []
    try:
        for r in range(size.write_reps):
            run = store.create_run(experiment="bench-write", name=f"store-{r}")
            samples = []
            for e in range(size.write_epochs):
                logs = epoch_logs(e, EPOCH_KEYS)
                t0 = time.perf_counter()
                store.log_epoch(run.id, e, logs)
                samples.append(time.perf_counter() - t0)
            store.finish_run(run.id, status="finished", stop_reason="completed")
            reps.append(summarize(samples))
    finally:
        store.close()
    return reps


def combine(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repetitions of each repetition's median and p95."""
    return {
        "median": statistics.median(r["median"] for r in reps),
        "p95": statistics.median(r["p95"] for r in reps),
        "reps": reps,
    }


def run(ctx: Context, backend: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "epochs": ctx.size.write_epochs,
        "metrics": len(EPOCH_KEYS),
        "reps": ctx.size.write_reps,
    }
    url = ctx.new_db(backend, "write_tracker")
    open_store(url).close()  # migrations happen here, outside the timings
    out["tracker_callback"] = combine(_callback_reps(ctx, url))
    out["tracker_store"] = combine(_store_reps(ctx, url))
    if ctx.mlflow:
        ml_url = ctx.new_db(backend, "write_mlflow")
        res = ctx.mlflow.call(
            "epoch_write",
            cwd=ctx.scratch("mlflow-write"),
            uri=ml_url,
            epochs=ctx.size.write_epochs,
            reps=ctx.size.write_reps,
        )
        out["mlflow"] = combine(res["reps"])
        out["mlflow"]["loadavg"] = res["loadavg"]
    return out
