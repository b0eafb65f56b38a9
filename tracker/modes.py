"""Whether a metric is better high or low: one rule for the callback's best weights, `best` and
`runs list --sort`.

Keras's `auto` mode maximises accuracy-like monitors and minimises losses; like Keras 3 we refuse to
guess for a name that is neither, rather than silently pick the worst run.
"""

from __future__ import annotations

import math

from tracker.errors import TrackerError

MODES = ("auto", "min", "max")
AGGS = ("best", "last")
_MAX_HINTS = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "r2", "similarity")
_MIN_HINTS = (
    "loss",
    "error",
    "mse",
    "mae",
    "mape",
    "msle",
    "rmse",
    "hinge",
    "entropy",
    "divergence",
    "poisson",
    "perplexity",
)


def infer_mode(metric: str) -> str | None:
    """`min`, `max`, or None when the name says neither."""
    name = metric.lower()
    if name.startswith("val_"):
        name = name[4:]
    if any(h in name for h in _MIN_HINTS):
        return "min"
    if any(h in name for h in _MAX_HINTS):
        return "max"
    return None


def check_mode(mode: str, error: type[Exception] = TrackerError) -> str:
    """`mode` when it is one of `MODES`; `error` (ValueError for the Keras callback) otherwise."""
    if mode not in MODES:
        raise error(f"mode must be one of {', '.join(MODES)}. Received: mode={mode!r}")
    return mode


def check_agg(agg: str) -> str:
    """`agg` when it is `best` or `last`."""
    if agg not in AGGS:
        raise TrackerError(f"agg must be `best` or `last`. Received: agg={agg!r}")
    return agg


def resolve_mode(metric: str, mode: str = "auto") -> str:
    """`mode` itself, or the inferred direction for `auto`.

    Raises:
        TrackerError: `mode` is not one of `auto`, `min`, `max`, or `auto` cannot tell.
    """
    if check_mode(mode) != "auto":
        return mode
    inferred = infer_mode(metric)
    if inferred is None:
        raise TrackerError(
            f"cannot tell whether {metric!r} is better high or low: pass --mode min or --mode max"
        )
    return inferred


def is_improvement(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """True when `value` beats `best` by more than `min_delta`; non-finite values never do."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta
