"""Write helpers of the store, each working inside the caller's session (and so its transaction).

`fold` keeps a metric's summary (first, last, min, max) in step with the rows written in the
same transaction; rankings read the summary and never the history.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tracker.models import Experiment, Metric, MetricSummary, Param, Tag
from tracker.records import MetricPoint

_ADJECTIVES = [
    "amber",
    "bold",
    "calm",
    "brisk",
    "clever",
    "deft",
    "eager",
    "fair",
    "gentle",
    "keen",
    "lucid",
    "merry",
    "nimble",
    "quiet",
    "rapid",
    "steady",
    "swift",
    "vivid",
]
_NOUNS = [
    "badger",
    "cedar",
    "comet",
    "falcon",
    "fern",
    "harbor",
    "heron",
    "lark",
    "maple",
    "otter",
    "pine",
    "raven",
    "river",
    "sparrow",
    "tiger",
    "willow",
    "wren",
    "zephyr",
]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def encode_param(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def generated_name(run_id: str) -> str:
    """A readable name (as MLflow and W&B give), made unique by the id's first hex digits."""
    n = int(run_id[:8], 16)
    return f"{_ADJECTIVES[n % len(_ADJECTIVES)]}-{_NOUNS[(n // 97) % len(_NOUNS)]}-{run_id[:4]}"


def experiment_id(s: Session, name: str) -> int:
    found = s.scalar(select(Experiment.id).where(Experiment.name == name))
    if found is not None:
        return found
    try:
        with s.begin_nested():  # another process may create the same experiment right now
            exp = Experiment(name=name, created_at=utcnow())
            s.add(exp)
        return exp.id
    except IntegrityError:
        return s.scalars(select(Experiment.id).where(Experiment.name == name)).one()


def put_params(s: Session, run_id: str, params: Mapping[str, Any]) -> None:
    for key, value in params.items():
        s.merge(Param(run_id=run_id, key=str(key), value=encode_param(value)))


def put_tags(s: Session, run_id: str, tags: Mapping[str, Any]) -> None:
    for key, value in tags.items():
        s.merge(Tag(run_id=run_id, key=str(key), value=str(value)))


def point_rows(run_id: str, points: Iterable[MetricPoint]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "key": p.key,
            "epoch": p.epoch,
            "step": p.step,
            "value": p.value,
            "time": p.time,
        }
        for p in points
    ]


def insert_points(s: Session, run_id: str, points: Iterable[MetricPoint]) -> int:
    """Insert metric points in bulk and fold the epoch-level ones into the run's summaries."""
    points = list(points)
    if not points:
        return 0
    s.execute(insert(Metric), point_rows(run_id, points))
    by_key: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for p in points:
        if p.step is None:
            by_key[p.key].append((p.epoch, p.value))
    if by_key:
        update_summaries(s, run_id, by_key)
    return len(points)


def update_summaries(
    s: Session, run_id: str, by_key: Mapping[str, list[tuple[int, float]]]
) -> None:
    existing = {
        m.key: m
        for m in s.scalars(
            select(MetricSummary).where(
                MetricSummary.run_id == run_id, MetricSummary.key.in_(list(by_key))
            )
        )
    }
    for key, values in by_key.items():
        summary = existing.get(key)
        if summary is None:
            epoch, value = values[0]
            summary = MetricSummary(
                run_id=run_id,
                key=key,
                count=0,
                first_value=value,
                first_epoch=epoch,
                last_value=value,
                last_epoch=epoch,
            )
            s.add(summary)
        for epoch, value in values:
            fold(summary, epoch, value)


def fold(summary: MetricSummary, epoch: int, value: float) -> None:
    summary.count += 1
    if epoch <= summary.first_epoch:
        summary.first_value, summary.first_epoch = value, epoch
    if epoch >= summary.last_epoch:
        summary.last_value, summary.last_epoch = value, epoch
    if not math.isfinite(value):
        return
    if summary.min_value is None or value < summary.min_value:
        summary.min_value, summary.min_epoch = value, epoch
    if summary.max_value is None or value > summary.max_value:
        summary.max_value, summary.max_epoch = value, epoch
