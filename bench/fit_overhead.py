"""2. Training overhead: `model.fit` of a tiny model with and without tracking (SQLite).

Each tool is measured in its own process (MLflow in its virtualenv) against a baseline fit without
any callback in that same process, with the variants' order rotated every repetition. The
overhead of a variant is the median over repetitions of (fit with it / baseline fit) - 1.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from common import summarize
from harness import BENCH, Context, run_json


def overheads(times: dict[str, list[float]]) -> dict[str, Any]:
    base = times["none"]
    out: dict[str, Any] = {"none": {"seconds": summarize(base)}}
    for name, samples in times.items():
        if name == "none":
            continue
        ratios = [t / b - 1.0 for t, b in zip(samples, base, strict=True)]
        out[name] = {
            "seconds": summarize(samples),
            "overhead": statistics.median(ratios),
            "overhead_s": statistics.median(t - b for t, b in zip(samples, base, strict=True)),
            "overhead_of_minima": min(samples) / min(base) - 1.0,
            "overheads": ratios,
        }
    return out


def run(ctx: Context, backend: str) -> dict[str, Any]:
    size = ctx.size
    shape = {"samples": size.fit_samples, "batch": size.fit_batch, "epochs": size.fit_epochs}
    out: dict[str, Any] = {**shape, "reps": size.fit_reps, "model": "Dense 64 relu -> Dense 10"}
    url = ctx.new_db(backend, "fit_tracker")
    work = ctx.scratch("fit-tracker")
    command = [
        sys.executable,
        str(BENCH / "fit_tracker.py"),
        "--db",
        url,
        "--workdir",
        str(work),
        "--reps",
        str(size.fit_reps),
        *[f"--{k}={v}" for k, v in shape.items()],
    ]
    res = run_json(command, cwd=work)
    out["tracker"] = overheads(res["times"])
    out["tracker"]["timed_hooks"] = res["timed_hooks"]
    base = out["tracker"]["none"]["seconds"]["median"]
    for name, spent in res["in_hooks_s"].items():
        # The fits above share one process, as in a sweep or a notebook: the store's engine and
        # the model's summary are kept between them. A script fits once: its first fit, in a
        # process of its own, is measured too.
        reps = 3 if size.name == "full" else 1
        cold = [run_json([*command, "--cold", name], cwd=work)["in_hooks_s"] for _ in range(reps)]
        out["tracker"][name].update(
            in_hooks_s=spent,
            in_hooks=spent / base,
            in_hooks_cold_s=statistics.median(cold),
            in_hooks_cold=statistics.median(cold) / base,
            in_hooks_cold_all=cold,
        )
    out["tracker"]["loadavg"] = res["loadavg"]
    if ctx.mlflow:
        ml = ctx.mlflow.call(
            "fit",
            cwd=ctx.scratch("mlflow-fit"),
            uri=ctx.new_db(backend, "fit_mlflow"),
            reps=size.fit_reps,
            **shape,
        )
        out["mlflow"] = overheads(ml["times"])
        out["mlflow"]["loadavg"] = ml["loadavg"]
        out["mlflow"]["callback"] = ml["callback"]
    return out
