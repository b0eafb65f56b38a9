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
from operator import itemgetter
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
    return list(_BatchX(epochs, steps, steps_per_epoch))


class _BatchX(Sequence[float]):
    """`batch_x` computed on demand: bisection and the picked points need a few thousand x
    values of a million-point series, not all of them."""

    def __init__(
        self, epochs: Sequence[int], steps: Sequence[int], steps_per_epoch: int | None
    ) -> None:
        self.epochs, self.steps = epochs, steps
        self.per = _divisors(epochs, steps, steps_per_epoch or 0)

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        e = self.epochs[i]
        return e + self.steps[i] / self.per[e]


def _divisors(epochs: Sequence[int], steps: Sequence[int], known: int) -> dict[int, int]:
    """Each epoch's steps: `known`, or its last (largest) step + 1 when that is more. Epochs
    are sorted, so each one's last point is found by bisection, not by a pass over all."""
    out: dict[int, int] = {}
    i, n = 0, len(epochs)
    while i < n:
        e = epochs[i]
        end = bisect.bisect_right(epochs, e, i)
        out[e] = max(known, steps[end - 1] + 1)
        i = end
    return out


class _EpochX(Sequence[float]):
    def __init__(self, epochs: Sequence[int]) -> None:
        self.epochs = epochs

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [float(e) for e in self.epochs[i]]
        return float(self.epochs[i])


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
    """A `Series` from the store's `(epoch, step, value)` rows (sorted; value None for NaN),
    restricted to [x_min, x_max] and downsampled to about `max_points` (None: every point).
    Columns are split and sliced by C-level operations; x is computed only for the
    points bisection visits and the points kept."""
    epochs, steps, values = (list(map(itemgetter(i), rows)) for i in range(3))
    x: Sequence[float] = _BatchX(epochs, steps, steps_per_epoch) if batches else _EpochX(epochs)
    lo, hi = within(x, x_min, x_max)
    total = hi - lo
    if max_points is None or total <= max_points:
        idx: Sequence[int] = range(lo, hi)
    else:
        if (lo, hi) != (0, len(x)):
            epochs, steps, values = epochs[lo:hi], steps[lo:hi], values[lo:hi]
            x = _BatchX(epochs, steps, steps_per_epoch) if batches else _EpochX(epochs)
        idx = downsample(x, values, max_points)
    return Series(
        [x[i] for i in idx],
        [epochs[i] for i in idx],
        [steps[i] for i in idx] if batches else None,
        [_none_for_nan(values[i]) for i in idx],
        total,
    )


def _none_for_nan(v: float | None) -> float | None:
    return None if v is None or v != v else v
