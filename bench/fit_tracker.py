"""The tracker side of the fit-overhead benchmark, run in its own process (TensorFlow stays out of
the process that times the queries).

    .venv/bin/python bench/fit_tracker.py --db sqlite:///x.db --workdir DIR [options]

Prints `BENCH_JSON {...}`: seconds of every `model.fit` per variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import fitmodel
import keras
from common import loadavg

from tracker import TrackingCallback

# The callback's work, wherever Keras or its fit guard calls it from (private names: a hook that
# is renamed is simply not timed, and the figure becomes a lower bound).
HOOKS = (
    "on_train_begin",
    "on_train_batch_end",
    "_after_batch_end",
    "_after_epoch_begin",
    "_after_epoch_end",
    "_after_train_end",
)


class EmptyCallback(keras.callbacks.Callback):
    """The control: a callback that does nothing, to show what noise alone measures."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        pass


class TimedCallback(TrackingCallback):
    """TrackingCallback that adds up the seconds spent inside its own hooks."""

    spent = 0.0


def _timed(name: str) -> Any:
    inner = getattr(TrackingCallback, name)

    def hook(self: TimedCallback, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(self, *args, **kwargs)
        finally:
            self.spent += time.perf_counter() - t0

    return hook


for _name in HOOKS:
    if hasattr(TrackingCallback, _name):
        setattr(TimedCallback, _name, _timed(_name))


# The two variants whose time inside the hooks is measured.
TIMED = {
    "tracker_epoch": {"save_best_weights": False},
    "tracker_batch": {"save_best_weights": False, "log_every_n_batches": 1},
}


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
        choices=sorted(TIMED),
        help="time the hooks of this variant's first fit in this process, on a new model, after "
        "one untracked fit of another model (TensorFlow warm, tracker not), and stop",
    )
    a = p.parse_args()
    before = loadavg()
    data = fitmodel.make_data(a.samples)
    model = fitmodel.make_model()
    common: dict[str, Any] = {
        "db": a.db,
        "experiment": "bench-fit",
        "spool_path": a.workdir / "spool.db",
        "artifacts_dir": a.workdir / "artifacts",
    }

    if a.cold:
        fitmodel.fit_once(model, data, a.batch, a.epochs, [])
        cb = TimedCallback(**common, **TIMED[a.cold])
        fitmodel.fit_once(fitmodel.make_model(), data, a.batch, a.epochs, [cb])
        print("BENCH_JSON " + json.dumps({"in_hooks_s": cb.spent}), flush=True)
        return

    def run(**kwargs: Any) -> float:
        callbacks = [TrackingCallback(**common, **kwargs)] if kwargs else []
        return fitmodel.fit_once(model, data, a.batch, a.epochs, callbacks)

    variants = {
        "none": lambda: run(),
        "empty_callback": lambda: fitmodel.fit_once(
            model, data, a.batch, a.epochs, [EmptyCallback()]
        ),
        "tracker_epoch": lambda: run(save_best_weights=False),
        "tracker_batch": lambda: run(save_best_weights=False, log_every_n_batches=1),
        "tracker_default": lambda: run(save_best_weights=True),
    }
    times = fitmodel.alternate(variants, a.reps)
    # Off the clock above: a few more fits that add up the time spent inside the callback, a
    # low-noise lower bound of its overhead (it leaves out Keras's dispatch to the callback).
    in_hooks = {}
    for name, kwargs in TIMED.items():
        spent = []
        for _ in range(3):
            cb = TimedCallback(**common, **kwargs)
            fitmodel.fit_once(model, data, a.batch, a.epochs, [cb])
            spent.append(cb.spent)
        in_hooks[name] = statistics.median(spent)
    result = {
        "times": times,
        "in_hooks_s": in_hooks,
        "timed_hooks": [h for h in HOOKS if hasattr(TrackingCallback, h)],
        "loadavg": {"before": before, "after": loadavg()},
    }
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
