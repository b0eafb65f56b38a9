"""The MLflow side of the benchmarks, run by the python of MLflow's own virtualenv.

    bench/.venv-mlflow/bin/python bench/mlflow_driver.py COMMAND --uri URI [options]

Prints one line `BENCH_JSON {...}` with the timings (seconds) on stdout; everything else it or
MLflow prints is noise for the caller. The tracker side never imports this module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from typing import Any

from common import EPOCH_KEYS, RUN_KEYS, epoch_logs, loadavg, summarize, synth_runs

os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")  # log_metrics's default: blocking
warnings.filterwarnings("ignore")
logging.getLogger("mlflow").setLevel(logging.ERROR)
logging.getLogger("alembic").setLevel(logging.ERROR)

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402

EXPERIMENT = "bench"


def _experiment_id(client: MlflowClient) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    return exp.experiment_id if exp else client.create_experiment(EXPERIMENT)


def epoch_write(a: argparse.Namespace) -> dict[str, Any]:
    """`mlflow.log_metrics(dict, step=e)` of 6 metrics, one run of `epochs` epochs per rep."""
    mlflow.set_tracking_uri(a.uri)
    mlflow.set_experiment(EXPERIMENT)  # creates the database outside the timings
    reps = []
    for _ in range(a.reps):
        samples = []
        with mlflow.start_run():
            for e in range(a.epochs):
                logs = epoch_logs(e, EPOCH_KEYS)
                t0 = time.perf_counter()
                mlflow.log_metrics(logs, step=e)
                samples.append(time.perf_counter() - t0)
        reps.append(summarize(samples))
    return {"reps": reps}


def fit(a: argparse.Namespace) -> dict[str, Any]:
    """`model.fit` without tracking, with MlflowCallback per epoch, and per batch."""
    import fitmodel

    mlflow.set_tracking_uri(a.uri)
    mlflow.set_experiment(EXPERIMENT)
    data = fitmodel.make_data(a.samples)
    model = fitmodel.make_model()

    def run(callbacks: list[Any] | None) -> float:
        if callbacks is None:
            return fitmodel.fit_once(model, data, a.batch, a.epochs, [])
        t0 = time.perf_counter()
        with mlflow.start_run():  # ending the run flushes the callback's queued metrics
            fitmodel.fit_once(model, data, a.batch, a.epochs, callbacks)
        return time.perf_counter() - t0

    MlflowCallback = mlflow.keras.MlflowCallback
    variants = {
        "none": lambda: run(None),
        "mlflow_callback_epoch": lambda: run([MlflowCallback()]),
        "mlflow_callback_batch": lambda: run(
            [MlflowCallback(log_every_epoch=False, log_every_n_steps=1)]
        ),
    }
    times = fitmodel.alternate(variants, a.reps)
    return {"times": times, "callback": "mlflow.keras.MlflowCallback"}


def fit_latency(a: argparse.Namespace) -> dict[str, Any]:
    """`model.fit` with MlflowCallback per epoch against a store behind the latency proxy, the
    seconds of every call of its hooks, of `start_run` and of ending the run kept per fit."""
    import fitmodel

    mlflow.set_tracking_uri(a.uri)
    mlflow.set_experiment(EXPERIMENT)
    data = fitmodel.make_data(a.samples)
    model = fitmodel.make_model()
    fits: list[dict[str, Any]] = []

    class Timed(mlflow.keras.MlflowCallback):
        samples: dict[str, list[float]]

    def timed(name: str) -> Any:
        inner = getattr(mlflow.keras.MlflowCallback, name)

        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(self, *args, **kwargs)
            finally:
                self.samples.setdefault(name, []).append(time.perf_counter() - t0)

        return hook

    for name in ("on_train_begin", "on_epoch_end", "on_batch_end", "on_test_end"):
        setattr(Timed, name, timed(name))

    def tracked() -> float:
        cb = Timed()
        cb.samples = {}
        t0 = time.perf_counter()
        run = mlflow.start_run()
        cb.samples["start_run"] = [time.perf_counter() - t0]
        fitmodel.fit_once(model, data, a.batch, a.epochs, [cb])
        t1 = time.perf_counter()
        mlflow.end_run()  # flushes the metrics the callback queued
        cb.samples["end_run"] = [time.perf_counter() - t1]
        seconds = time.perf_counter() - t0
        fits.append({"seconds": seconds, "hooks": cb.samples, "run_id": run.info.run_id})
        return seconds

    variants = {
        "none": lambda: fitmodel.fit_once(model, data, a.batch, a.epochs, []),
        "mlflow_callback_epoch": tracked,
    }
    times = fitmodel.alternate(variants, a.reps)
    return {
        "times": times,
        "first_fit": fits[0],
        "fits": fits[1:],
        "callback": "mlflow.keras.MlflowCallback",
    }


def ingest(a: argparse.Namespace) -> dict[str, Any]:
    """Whole runs through `MlflowClient`: create_run, one log_batch, set_terminated."""
    client = MlflowClient(a.uri)
    exp_id = _experiment_id(client)
    runs = list(synth_runs(a.start, a.runs, a.epochs))
    rows = 0
    t0 = time.perf_counter()
    for r in runs:
        run = client.create_run(exp_id, start_time=int(r.started * 1000), run_name=r.name)
        rid = run.info.run_id
        metrics = [Metric(k, v, int(t * 1000), e) for k, e, v, t in r.rows]
        params = [Param(k, str(v)) for k, v in r.params.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
            client.log_batch(rid, metrics=metrics[i : i + 1000], params=params if i == 0 else [])
        client.set_terminated(rid, end_time=int(r.ended * 1000))
        rows += len(metrics)
    seconds = time.perf_counter() - t0
    return {"runs": a.runs, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


QUERY_SCRIPT = """
import sys
from mlflow import MlflowClient
c = MlflowClient(sys.argv[1])
e = c.get_experiment_by_name("bench").experiment_id
if sys.argv[2] == "best":
    r = c.search_runs([e], order_by=["metrics.val_loss ASC"], max_results=1)
else:
    r = c.search_runs([e], order_by=["attributes.start_time DESC"], max_results=50)
print(len(r))
"""


def queries(a: argparse.Namespace) -> dict[str, Any]:
    """In-process queries on a populated store, then whole processes doing the same."""
    client = MlflowClient(a.uri)
    exp_id = _experiment_id(client)
    newest = client.search_runs([exp_id], order_by=["attributes.start_time DESC"], max_results=1)
    run_id = newest[0].info.run_id

    def best() -> Any:
        return client.search_runs([exp_id], order_by=["metrics.val_loss ASC"], max_results=1)

    def history() -> Any:
        return [client.get_metric_history(run_id, k) for k in RUN_KEYS]

    def list50() -> Any:
        return client.search_runs([exp_id], order_by=["attributes.start_time DESC"], max_results=50)

    out: dict[str, Any] = {}
    for name, fn in (("best", best), ("history", history), ("list50", list50)):
        fn()  # warm: compiled statements, connection pool
        samples = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        out[name] = summarize(samples)
    out["process"] = _process_timings(a)
    return out


def _process_timings(a: argparse.Namespace) -> dict[str, Any]:
    mlflow_cli = os.path.join(os.path.dirname(sys.executable), "mlflow")
    commands = {
        "help": [mlflow_cli, "--help"],
        "best": [sys.executable, "-c", QUERY_SCRIPT, a.uri, "best"],
        "list50": [sys.executable, "-c", QUERY_SCRIPT, a.uri, "list50"],
    }
    out = {}
    for name, cmd in commands.items():
        subprocess.run(cmd, check=True, capture_output=True)  # warm the page cache
        samples = []
        for _ in range(a.process_reps):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            samples.append(time.perf_counter() - t0)
        out[name] = summarize(samples)
    return out


def ui_store(a: argparse.Namespace) -> dict[str, Any]:
    """A store for MLflow's UI holding the runs of tracker's UI benchmark (`common.ui_runs`):
    the experiment made by MLflow, then runs, their name tag, params and each metric's latest
    value (what MLflow's runs table reads) inserted in bulk into MLflow's own tables, with that
    value as the metric's one history row (not 100 epochs: 20,000,000 rows would take hours
    through MLflow's API). On PostgreSQL the database is then `VACUUM ANALYZE`d, as autovacuum
    does soon after a large insert and as bench/ui_api.py's `settle` does tracker's store."""
    from common import ui_runs
    from mlflow.store.tracking.dbmodels import models
    from sqlalchemy import create_engine, insert

    client = MlflowClient(a.uri)
    exp_id = client.create_experiment("bench-ui")
    t0 = time.perf_counter()
    runs, tags, params, latest = [], [], [], []
    for r in ui_runs(a.runs):
        rid, start, end = r["id"], int(r["started"] * 1000), int(r["ended"] * 1000)
        runs.append(
            {
                "run_uuid": rid,
                "name": r["name"],
                "source_type": "LOCAL",
                "source_name": "bench",
                "entry_point_name": "",
                "user_id": "bench",
                "status": "FINISHED",
                "start_time": start,
                "end_time": end,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": "active",
                "artifact_uri": f"/tmp/mlflow-artifacts/{exp_id}/{rid}/artifacts",
                "experiment_id": int(exp_id),
            }
        )
        tags.append({"run_uuid": rid, "key": "mlflow.runName", "value": r["name"]})
        params += [{"run_uuid": rid, "key": k, "value": str(v)} for k, v in r["params"].items()]
        latest += [
            {
                "run_uuid": rid,
                "key": k,
                "value": m["last"],
                "timestamp": end,
                "step": 99,
                "is_nan": False,
            }
            for k, m in r["metrics"].items()
        ]
    engine = create_engine(a.uri)
    with engine.begin() as c:
        c.execute(insert(models.SqlRun.__table__), runs)
        c.execute(insert(models.SqlTag.__table__), tags)
        c.execute(insert(models.SqlParam.__table__), params)
        c.execute(insert(models.SqlLatestMetric.__table__), latest)
        c.execute(insert(models.SqlMetric.__table__), latest)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    return {
        "experiment_id": exp_id,
        "runs": a.runs,
        "newest": runs[-1]["name"],
        "build_s": time.perf_counter() - t0,
    }


def create_store(a: argparse.Namespace) -> dict[str, Any]:
    """Make MLflow's schema in the database at `uri` (its SQLAlchemy store migrates it on first
    use), so a measured process finds it made, as every process but the very first does."""
    MlflowClient(a.uri).search_experiments()
    return {}


def versions(a: argparse.Namespace) -> dict[str, Any]:
    import sqlalchemy

    return {"mlflow": mlflow.__version__, "sqlalchemy": sqlalchemy.__version__}


def main() -> None:
    p = argparse.ArgumentParser()
    commands = ["create_store", "epoch_write", "fit", "fit_latency", "ingest", "queries"]
    commands += ["ui_store", "versions"]
    p.add_argument("command", choices=commands)
    p.add_argument("--uri", default="")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--process-reps", type=int, default=5)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--start", type=int, default=0)
    a = p.parse_args()
    before = loadavg()
    result = globals()[a.command](a)
    result["loadavg"] = {"before": before, "after": loadavg()}
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
