"""2. Training overhead: `model.fit` of a tiny model with and without tracking (SQLite).

Each tool is measured in its own process (MLflow in its virtualenv) against a baseline fit without
any callback in that same process, with the variants' order rotated every repetition. The
overhead of a variant is the median over repetitions of (fit with it / baseline fit) - 1.

Run alone, it measures the tracker on one Keras backend (`bench/run.py` measures TensorFlow):

    python bench/fit_overhead.py --keras-backend jax     # in .venv-jax, as scripts/test makes it
    python bench/fit_overhead.py --keras-backend torch --reps 5

and writes `bench/results/fit-overhead-<backend>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import loadavg, median_interval, summarize
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
            "overhead_interval": median_interval(ratios),
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


# -- one Keras backend, run by hand ---------------------------------------------------------------


def _python_for(keras_backend: str) -> str:
    """The backend's test environment (`.venv-jax`, `.venv-torch`), else `.venv`."""
    root = BENCH.parent
    for venv in (f".venv-{keras_backend}", ".venv"):
        python = root / venv / "bin" / "python"
        if python.exists():
            return str(python)
    return sys.executable


def on_backend(keras_backend: str, reps: int, python: str | None = None) -> dict[str, Any]:
    python = python or _python_for(keras_backend)
    shape = {"samples": 2000, "batch": 32, "epochs": 20}
    with tempfile.TemporaryDirectory() as work:
        os.environ["KERAS_BACKEND"] = keras_backend  # run_json passes the environment on
        command = [
            python,
            str(BENCH / "fit_tracker.py"),
            "--db",
            f"sqlite:///{work}/fit.db",
            "--workdir",
            work,
            "--reps",
            str(reps),
            *[f"--{k}={v}" for k, v in shape.items()],
        ]
        res = run_json(command, cwd=Path(work))
    out = overheads(res["times"])
    base = out["none"]["seconds"]["median"]
    for name, spent in res["in_hooks_s"].items():
        out[name].update(in_hooks_s=spent, in_hooks=spent / base)
    return {
        "keras_backend": keras_backend,
        "python": python,
        **shape,
        "reps": reps,
        "model": "Dense 64 relu -> Dense 10",
        "tracker": out,
        "loadavg": res["loadavg"],
        "loadavg_here": loadavg(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keras-backend", choices=("tensorflow", "jax", "torch"), required=True)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--python", help="interpreter with Keras on that backend")
    a = p.parse_args()
    result = on_backend(a.keras_backend, a.reps, a.python)
    path = BENCH / "results" / f"fit-overhead-{a.keras_backend}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    t = result["tracker"]
    print(f"{a.keras_backend}: untracked fit {t['none']['seconds']['median']:.2f} s (median)")
    for name in ("tracker_epoch", "tracker_batch"):
        v = t[name]
        print(
            f"  {name}: in hooks {v['in_hooks'] * 100:+.2f} % ({v['in_hooks_s'] * 1000:.1f} ms), "
            f"end to end {v['overhead'] * 100:+.1f} % "
            f"(empty callback {t['empty_callback']['overhead'] * 100:+.1f} %)"
        )
    print(f"  written to {path.relative_to(BENCH.parent)}")


if __name__ == "__main__":
    main()
