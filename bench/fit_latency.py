"""The tracker side of the remote-database benchmark, run in its own process: `model.fit` of the
tiny model with a database behind a slow link (`--db` already points through the proxy).

    .venv/bin/python bench/fit_latency.py --db postgresql+psycopg://...proxy... --workdir DIR

Prints `BENCH_JSON {...}`: seconds of every fit per variant (an empty callback's too: how much
the machine's noise moves the end-to-end figure), and, for every tracked fit, the seconds spent
in each of the callback's hooks (per epoch for the end of an epoch) and the CPU seconds of the
tracker's own threads (the writer's, for each write it applied during the fit; the heartbeat's).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import fitmodel
from common import loadavg

from tracker import TrackingCallback
from tracker.training import recorder

# Where the callback's work is done (private names: see fit_tracker.py). `_after_epoch_end` is
# the end of an epoch: the epoch's write is handed over there, after the previous one landed.
HOOKS = (
    "on_train_begin",
    "on_train_batch_end",
    "_after_epoch_begin",
    "_after_epoch_end",
    "_after_train_end",
)


class TimedCallback(TrackingCallback):
    """TrackingCallback that keeps the seconds of every call of its hooks."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.samples: dict[str, list[float]] = defaultdict(list)


def _timed(name: str) -> Any:
    inner = getattr(TrackingCallback, name)

    def hook(self: TimedCallback, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(self, *args, **kwargs)
        finally:
            self.samples[name].append(time.perf_counter() - t0)

    return hook


for _name in HOOKS:
    setattr(TimedCallback, _name, _timed(_name))


# CPU seconds of the tracker's threads, by thread name (private names, as above): what training
# shares its cores with, beyond the time in the hooks.
THREAD_CPU: dict[str, float] = {"tracker-writer": 0.0, "tracker-heartbeat": 0.0}
_apply = recorder.RunRecorder._apply
_run = threading.Thread.run


def _timed_apply(self: recorder.RunRecorder, entry: Any) -> Any:
    t0 = time.thread_time()
    try:
        return _apply(self, entry)
    finally:
        if threading.current_thread().name == "tracker-writer":
            THREAD_CPU["tracker-writer"] += time.thread_time() - t0


def _timed_run(self: threading.Thread) -> None:
    try:
        _run(self)
    finally:
        if self.name == "tracker-heartbeat":  # joined when the run ends: within the fit
            THREAD_CPU[self.name] += time.thread_time()


recorder.RunRecorder._apply = _timed_apply  # type: ignore[method-assign]
threading.Thread.run = _timed_run  # type: ignore[method-assign]


class Empty(fitmodel.keras.callbacks.Callback):
    """A callback that does nothing: Keras's own cost of one more callback, and the noise."""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument(
        "--cold",
        action="store_true",
        help="a script's first fit instead: a new model traced inside the tracked fit, then "
        "an untracked fit of another new model as its baseline",
    )
    a = p.parse_args()
    before = loadavg()
    data = fitmodel.make_data(a.samples)
    model = fitmodel.make_model()
    fits: list[dict[str, Any]] = []

    def tracked() -> float:
        cb = TimedCallback(
            db=a.db,
            experiment="bench-latency",
            spool_path=a.workdir / "spool.db",
            artifacts_dir=a.workdir / "artifacts",
            save_best_weights=False,
        )
        cpu = dict(THREAD_CPU)
        seconds = fitmodel.fit_once(model, data, a.batch, a.epochs, [cb])
        cpu = {k: THREAD_CPU[k] - cpu[k] for k in cpu}
        fits.append({"seconds": seconds, "hooks": dict(cb.samples), "thread_cpu": cpu})
        spooled = cb._recorder.spooled_to if cb._recorder else None
        if spooled is not None:
            raise SystemExit(f"the run went to the spool {spooled}: the database was away")
        return seconds

    if a.cold:
        tracked()  # the first step traces the model, and the store opens meanwhile
        base = fitmodel.fit_once(fitmodel.make_model(), data, a.batch, a.epochs, [])
        cold = {"cold_fit": fits[0], "cold_base_s": base, "loadavg": {"before": before}}
        print("BENCH_JSON " + json.dumps(cold), flush=True)
        return
    variants = {
        "none": lambda: fitmodel.fit_once(model, data, a.batch, a.epochs, []),
        "tracker_epoch": tracked,
        "empty_callback": lambda: fitmodel.fit_once(model, data, a.batch, a.epochs, [Empty()]),
    }
    times = fitmodel.alternate(variants, a.reps)
    result = {
        "times": times,
        # The warm-up fit opened the store (a sweep or a notebook pays that once): apart.
        "first_fit": fits[0],
        "fits": fits[1:],
        "loadavg": {"before": before, "after": loadavg()},
        "cpus": sorted(os.sched_getaffinity(0)),  # the cores this process trained on
    }
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
