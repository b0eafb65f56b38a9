"""Metric series as the charts draw them: x positions and server-side downsampling.

A batch-level series can hold 10^5-10^6 points, more than a chart has pixels. `downsample`
keeps, in each of about `max_points / 3` buckets over x, the bucket's minimum, maximum and last
point, so spikes, the global minimum and maximum and the latest value are never dropped (a
stride sample would drop them). It relies on x being sorted, as the store returns points, and
finds each bucket's edges by bisection: the per-point work is C-level slicing and min/max, not a
Python loop. NaN (None here, as the store gives a NULL) takes no part in min/max but can be a
bucket's last point, so a run that went NaN ends on its NaN.

Pure functions on lists: no database, no Starlette.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast


@dataclass(frozen=True)
class Series:
    x: list[float]
    epoch: list[int]
    step: list[int] | None  # None at epoch level
    value: list[float | None]  # None: NaN
    total: int  # points before downsampling

    def to_json(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "epoch": self.epoch,
            "step": self.step,
            "value": [_json_value(v) for v in self.value],
            "total": self.total,
            "shown": len(self.x),
        }


def _json_value(v: float | None) -> float | str:
    if v is None or math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def batch_x(
    epochs: Sequence[int], steps: Sequence[int], steps_per_epoch: int | None
) -> list[float]:
    """x = epoch + step / steps per epoch: `steps_per_epoch` (fit's `steps`), or where it is
    unknown or too small for the steps recorded, the epoch's largest step + 1, so x never runs
    into the next epoch and stays sorted."""
    last_step: dict[int, int] = {}
    for e, s in zip(epochs, steps, strict=True):
        last_step[e] = s  # points come in (epoch, step) order: the last is the largest
    per = {e: max(steps_per_epoch or 0, s + 1) for e, s in last_step.items()}
    return [e + s / per[e] for e, s in zip(epochs, steps, strict=True)]


def within(x: Sequence[float], x_min: float | None, x_max: float | None) -> tuple[int, int]:
    """The slice [lo, hi) of sorted `x` inside [x_min, x_max] (open ends when None)."""
    lo = 0 if x_min is None else bisect.bisect_left(x, x_min)
    hi = len(x) if x_max is None else bisect.bisect_right(x, x_max)
    return lo, max(lo, hi)


def downsample(x: Sequence[float], y: Sequence[float | None], max_points: int) -> list[int]:
    """Indices of the points to draw: all of them when they fit in `max_points`, else each
    bucket's min, max and last (in x order), with `max_points // 3` buckets of equal x width.

    `x` must be sorted. The result never holds more than `max_points` indices (at least 3).
    """
    n = len(x)
    if n <= max(max_points, 3):
        return list(range(n))
    buckets = max(1, max_points // 3)
    x0, span = x[0], x[-1] - x[0]
    if span <= 0 or not math.isfinite(span):
        return _bucket(y, 0, n)
    keep: list[int] = []
    lo = 0
    for b in range(1, buckets + 1):
        hi = n if b == buckets else bisect.bisect_left(x, x0 + span * b / buckets, lo)
        if hi > lo:
            keep.extend(_bucket(y, lo, hi))
        lo = hi
    return keep


def _bucket(y: Sequence[float | None], lo: int, hi: int) -> list[int]:
    """The min, max and last index of y[lo:hi], sorted, each once."""
    part = list(y[lo:hi])
    finite = cast("list[float]", part if None not in part else [v for v in part if v is not None])
    picks = {hi - 1}
    if finite:
        picks.add(lo + part.index(min(finite)))
        picks.add(lo + part.index(max(finite)))
    return sorted(picks)


def build(
    rows: Sequence[Any],
    *,
    batches: bool,
    steps_per_epoch: int | None,
    max_points: int | None,
    x_min: float | None = None,
    x_max: float | None = None,
) -> Series:
    """A `Series` from the store's `(epoch, step, value)` rows (sorted), restricted to
    [x_min, x_max] and downsampled to about `max_points` (None: every point)."""
    epochs = [r[0] for r in rows]
    steps = [r[1] for r in rows] if batches else None
    values = [_none_for_nan(r[2]) for r in rows]
    x: list[float] = (
        batch_x(epochs, steps, steps_per_epoch) if steps is not None else [float(e) for e in epochs]
    )
    lo, hi = within(x, x_min, x_max)
    if (lo, hi) != (0, len(x)):
        x, epochs, values = x[lo:hi], epochs[lo:hi], values[lo:hi]
        steps = steps[lo:hi] if steps is not None else None
    total = len(x)
    if max_points is not None and total > max_points:
        idx = downsample(x, values, max_points)
        x, epochs, values = [x[i] for i in idx], [epochs[i] for i in idx], [values[i] for i in idx]
        steps = [steps[i] for i in idx] if steps is not None else None
    return Series(x, epochs, steps, values, total)


def _none_for_nan(v: float | None) -> float | None:
    return None if v is None or v != v else v
