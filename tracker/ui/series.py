"""Metric series as the charts draw them: x positions and server-side downsampling.

A batch-level series can hold 10^5-10^6 points, more than a chart has pixels. `downsample`
keeps, in each of about `max_points / 3` buckets over x, the bucket's minimum, maximum and last
point, so spikes, the global minimum and maximum and the latest value are never dropped (a
stride sample would drop them). It relies on x being sorted, as the store returns points, and
finds each bucket's edges by bisection: the per-point work is C-level slicing and min/max, not a
Python loop. NaN (None here, as the store gives a NULL) takes no part in min/max but can be a
bucket's last point, so a run that went NaN ends on its NaN.

A batch series is not read whole to be downsampled: `build_from_blocks` gives the same points
from the store's block summaries (`tracker.store.tables.batch_blocks`), reading point by point only
the blocks that a bucket's edge or the range's ends cut.

Pure functions on lists (and on a `BlockSource` the caller binds to its transaction): no
database, no Starlette.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol, cast


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
        self,
        epochs: Sequence[int],
        steps: Sequence[int],
        steps_per_epoch: int | None,
        per: dict[int, int] | None = None,
    ) -> None:
        self.epochs, self.steps = epochs, steps
        self.per = _divisors(epochs, steps, steps_per_epoch or 0) if per is None else per

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
    bx = _BatchX(epochs, steps, steps_per_epoch) if batches else None
    x: Sequence[float] = _EpochX(epochs) if bx is None else bx
    lo, hi = within(x, x_min, x_max)
    total = hi - lo
    if max_points is None or total <= max_points:
        idx: Sequence[int] = range(lo, hi)
    else:
        if (lo, hi) != (0, len(x)):  # x as before the cut: each epoch keeps its steps
            epochs, steps, values = epochs[lo:hi], steps[lo:hi], values[lo:hi]
            x = _EpochX(epochs) if bx is None else _BatchX(epochs, steps, None, bx.per)
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


# -- from block summaries -----------------------------------------------------------------------

# A block row as the store gives it: (epoch, count, first_step, last_step, last_value, min_value,
# min_step, max_value, max_step); a point is a block of one. A minimum of None: only NaN.
_Block = tuple[int, int, int, int, float | None, float | None, Any, float | None, Any]
_Span = tuple[int, int, int]


class BlockSource(Protocol):
    """What `build_from_blocks` reads (`tracker.store.series_reads.SeriesSource`)."""

    def blocks(self) -> list[Any]: ...
    def points(self, spans: Sequence[_Span]) -> list[Any]: ...
    def rows(self) -> list[Any]: ...


def build_from_blocks(
    source: BlockSource,
    *,
    steps_per_epoch: int | None,
    max_points: int,
    x_min: float | None = None,
    x_max: float | None = None,
) -> Series:
    """`build(source.rows(), batches=True, ...)`, the same points, read from the series' block
    summaries (64 steps of one epoch each) wherever a whole block falls in one bucket: only the
    blocks that the range's ends or a bucket's edge cut are read point by point.

    Exact: a bucket's minimum, maximum and last point are those of its blocks and points, taken
    in order with `downsample`'s rules (the first of equal extremes, NaN never one). When the
    range holds no more than `max_points` points, all of them are read.
    """
    blocks: list[_Block] = source.blocks()
    per = _block_divisors(blocks, steps_per_epoch or 0)
    if x_min is not None or x_max is not None:
        blocks = _within(blocks, per, source, x_min, x_max)
    total = sum(b[1] for b in blocks)
    if total <= max(max_points, 3):
        return build(
            source.rows(),
            batches=True,
            steps_per_epoch=steps_per_epoch,
            max_points=max_points,
            x_min=x_min,
            x_max=x_max,
        )
    buckets = max(1, max_points // 3)
    first, last = blocks[0], blocks[-1]
    x0 = first[0] + first[2] / per[first[0]]
    span = last[0] + last[3] / per[last[0]] - x0
    edges = (
        [x0 + span * b / buckets for b in range(1, buckets)]
        if span > 0 and math.isfinite(span)
        else []
    )
    # a point on an edge is in the bucket to its right, as in `downsample`
    bucket = functools.partial(bisect.bisect_right, edges)
    of = list(map(bucket, [b[0] + b[2] / per[b[0]] for b in blocks]))
    ends = map(bucket, [b[0] + b[3] / per[b[0]] for b in blocks])
    cut = [i for i, (a, z) in enumerate(zip(of, ends, strict=True)) if a != z]
    if cut:
        blocks = _split(blocks, cut, source, per, None, None)
        of = list(map(bucket, [b[0] + b[2] / per[b[0]] for b in blocks]))
    return _picked(blocks, of, per, total)


def _block_divisors(blocks: Sequence[_Block], known: int) -> dict[int, int]:
    """`_divisors` from block summaries: each epoch's largest step is its blocks' last."""
    out: dict[int, int] = {}
    for b in blocks:
        out[b[0]] = max(out.get(b[0], known), b[3] + 1)
    return out


def _within(
    blocks: list[_Block],
    per: dict[int, int],
    source: BlockSource,
    x_min: float | None,
    x_max: float | None,
) -> list[_Block]:
    """The blocks inside [x_min, x_max], those its ends cut replaced by their points inside."""
    lo = -math.inf if x_min is None else x_min
    hi = math.inf if x_max is None else x_max
    kept: list[_Block] = []
    cut: list[int] = []
    for b in blocks:
        xf, xl = b[0] + b[2] / per[b[0]], b[0] + b[3] / per[b[0]]
        if xl < lo or xf > hi:
            continue
        if xf < lo or xl > hi:
            cut.append(len(kept))
        kept.append(b)
    return _split(kept, cut, source, per, lo, hi) if cut else kept


def _split(
    blocks: list[_Block],
    cut: list[int],
    source: BlockSource,
    per: dict[int, int],
    lo: float | None,
    hi: float | None,
) -> list[_Block]:
    """`blocks` with those at the indices `cut` replaced by their points (blocks of one), only
    those with x in [lo, hi] when given: one query for all of them."""
    spans = [(blocks[i][0], blocks[i][2], blocks[i][3]) for i in cut]
    points = iter(source.points(spans))
    point = next(points, None)
    out: list[_Block] = []
    start = 0
    for i, (e, first, last) in zip(cut, spans, strict=True):
        out += blocks[start:i]
        start = i + 1
        while point is not None and point[0] == e and first <= point[1] <= last:
            s, v = point[1], point[2]
            point = next(points, None)
            if lo is not None and hi is not None and not lo <= e + s / per[e] <= hi:
                continue
            v = None if v is None or v != v else v
            out.append((e, 1, s, s, v, v, s, v, s))
    out += blocks[start:]
    return out


def _picked(blocks: list[_Block], of: list[int], per: dict[int, int], total: int) -> Series:
    """Each bucket's minimum, maximum and last point, in order, from blocks none of which
    straddles an edge (`of`: each block's bucket)."""
    keep: dict[tuple[int, int], float | None] = {}
    i, n = 0, len(blocks)
    while i < n:
        b = of[i]
        lo_v = hi_v = None
        lo_p = hi_p = (0, 0)
        while i < n and of[i] == b:
            r = blocks[i]
            i += 1
            v = r[5]
            if v is None:
                continue
            if lo_v is None or v < lo_v:
                lo_v, lo_p = v, (r[0], r[6])
            v = r[7]
            if hi_v is None or v > hi_v:  # type: ignore[operator]
                hi_v, hi_p = v, (r[0], r[8])
        last = blocks[i - 1]
        picks = {(last[0], last[3]): last[4]}
        if lo_v is not None:
            picks[lo_p] = lo_v
            picks[hi_p] = hi_v
        for pos in sorted(picks):
            keep[pos] = picks[pos]
    return Series(
        [e + s / per[e] for e, s in keep],
        [e for e, _ in keep],
        [s for _, s in keep],
        list(keep.values()),
        total,
    )
