"""Metric series as the charts draw them: x positions and server-side downsampling.

A batch-level series can hold 10^5-10^6 points, more than a chart has pixels. `downsample`
keeps, in each of about `max_points / 3` buckets over x, the bucket's minimum, maximum and last
point, so spikes, the global minimum and maximum and the latest value are never dropped (a
stride sample would drop them). It relies on x being sorted, as the store returns points, and
finds each bucket's edges by bisection: the per-point work is C-level slicing and min/max, not a
Python loop. NaN (None here, as the store gives a NULL) takes no part in min/max but can be a
bucket's last point, so a run that went NaN ends on its NaN.

A batch series is not read whole to be downsampled: `build_from_blocks` gives the same points
from the store's block summaries (`tracker.tables.batch_blocks`), reading point by point only
the blocks that a bucket's edge or the range's ends cut.

Pure functions on lists (and on a `BlockSource` the caller binds to its transaction): no
database, no Starlette.
"""

from __future__ import annotations

import bisect
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

# A run of consecutive points of one epoch summarised: x of its first and last point, how many,
# its minimum, maximum and last value, each with its point's (epoch, step), and its first
# point's (epoch, step); a minimum of None: only NaN.
_Pos = tuple[int, int]
_Part = tuple[float, float, int, float | None, _Pos, float | None, _Pos, float | None, _Pos, _Pos]


class BlockSource(Protocol):
    """What `build_from_blocks` reads (`tracker.queries.BatchSource`)."""

    def blocks(self) -> list[Any]: ...
    def points(self, spans: Sequence[tuple[int, int, int]]) -> list[Any]: ...
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
    blocks = source.blocks()
    per = _block_divisors(blocks, steps_per_epoch or 0)

    def x_of(pos: _Pos) -> float:
        return pos[0] + pos[1] / per[pos[0]]

    parts: list[_Part | None] = []
    cut: list[tuple[int, int, int]] = []
    for e, n, first, last, last_v, min_v, min_s, max_v, max_s in blocks:
        xf, xl = e + first / per[e], e + last / per[e]
        if (x_min is not None and xl < x_min) or (x_max is not None and xf > x_max):
            continue
        if (x_min is not None and xf < x_min) or (x_max is not None and xl > x_max):
            parts.append(None)
            cut.append((e, first, last))
            continue
        no = min_s is None
        parts.append(
            (
                xf,
                xl,
                n,
                min_v,
                (e, 0 if no else min_s),
                max_v,
                (e, 0 if no else max_s),
                last_v,
                (e, last),
                (e, first),
            )
        )
    if cut:
        points = [p for p in _point_parts(source.points(cut), x_of) if _inside(p[0], x_min, x_max)]
        parts = _fill(parts, points, cut)
    whole = cast("list[_Part]", parts)
    total = sum(p[2] for p in whole)
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
    x0, span = whole[0][0], whole[-1][1] - whole[0][0]
    edges = (
        [x0 + span * b / buckets for b in range(1, buckets)]
        if span > 0 and math.isfinite(span)
        else []
    )
    right = bisect.bisect_right
    split = {i for i, p in enumerate(whole) if right(edges, p[0]) != right(edges, p[1])}
    if split:
        spans = [(p[9][0], p[9][1], p[8][1]) for i, p in enumerate(whole) if i in split]
        whole = cast(
            "list[_Part]",
            _fill(
                [None if i in split else p for i, p in enumerate(whole)],
                _point_parts(source.points(spans), x_of),
                spans,
            ),
        )
    return _picked(whole, edges, total, x_of)


def _block_divisors(blocks: Sequence[Any], known: int) -> dict[int, int]:
    """`_divisors` from block summaries: each epoch's largest step is its blocks' last."""
    out: dict[int, int] = {}
    for b in blocks:
        out[b[0]] = max(out.get(b[0], known), b[3] + 1)
    return out


def _inside(x: float, x_min: float | None, x_max: float | None) -> bool:
    return (x_min is None or x >= x_min) and (x_max is None or x <= x_max)


def _point_parts(rows: Sequence[Any], x_of: Any) -> list[_Part]:
    out: list[_Part] = []
    for e, s, v in rows:
        pos = (e, s)
        x = x_of(pos)
        v = None if v is None or v != v else v
        out.append((x, x, 1, v, pos, v, pos, v, pos, pos))
    return out


def _fill(
    parts: list[_Part | None], points: list[_Part], spans: Sequence[tuple[int, int, int]]
) -> list[_Part | None]:
    """`parts` with each None (a cut block) replaced by the points of its span, in order."""
    it = iter(points)
    pending = next(it, None)
    out: list[_Part | None] = []
    k = 0
    for p in parts:
        if p is not None:
            out.append(p)
            continue
        e, lo, hi = spans[k]
        k += 1
        while pending is not None and pending[4][0] == e and lo <= pending[4][1] <= hi:
            out.append(pending)
            pending = next(it, None)
    return out


def _picked(parts: list[_Part], edges: list[float], total: int, x_of: Any) -> Series:
    """Each bucket's minimum, maximum and last point, in order, from parts none of which
    straddles an edge (a point on an edge is in the bucket to its right, as in `downsample`)."""
    keep: dict[_Pos, float | None] = {}
    right = bisect.bisect_right
    of = [right(edges, p[0]) for p in parts]
    i, n = 0, len(parts)
    while i < n:
        b = of[i]
        lo_v = hi_v = None
        lo_p = hi_p = (0, 0)
        while i < n and of[i] == b:
            p = parts[i]
            if p[3] is not None and (lo_v is None or p[3] < lo_v):
                lo_v, lo_p = p[3], p[4]
            if p[5] is not None and (hi_v is None or p[5] > hi_v):
                hi_v, hi_p = p[5], p[6]
            last = p
            i += 1
        picks = {last[8]: last[7]}
        if lo_v is not None:
            picks[lo_p] = lo_v
            picks[hi_p] = hi_v
        for pos in sorted(picks):
            keep[pos] = picks[pos]
    return Series(
        [x_of(pos) for pos in keep],
        [pos[0] for pos in keep],
        [pos[1] for pos in keep],
        list(keep.values()),
        total,
    )
