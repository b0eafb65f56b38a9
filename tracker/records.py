"""Plain records the store hands out: no ORM object ever leaves a session.

`to_json()` gives the stable JSON contract of the CLI (README, "JSON output"); non-finite floats
become the strings "NaN", "Infinity" and "-Infinity" so the output is strict JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tracker.clock import utcnow
from tracker.values import plain


def json_float(value: float | None) -> float | str | None:
    if value is None:
        return None
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def json_time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    experiment: str
    status: str
    stop_reason: str | None
    stop_details: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None
    heartbeat_at: datetime
    epochs_planned: int | None
    epochs_done: int
    last_epoch: int | None
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    fit_params: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    references: list[dict[str, Any]] = field(default_factory=list)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def label(self) -> str:
        """How a run is named to a person: `name (short id)`."""
        return f"{self.name} ({self.short_id})"

    @property
    def duration_s(self) -> float | None:
        end = self.ended_at or (self.heartbeat_at if self.status != "running" else None)
        if end is None:
            end = utcnow()
        return (end - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "experiment": self.experiment,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "epochs": self.epochs_done,
            "epochs_planned": self.epochs_planned,
            "started_at": json_time(self.started_at),
            "ended_at": json_time(self.ended_at),
            "duration_s": self.duration_s,
            "params": plain(self.params),
            "tags": dict(self.tags),
        }


@dataclass(frozen=True)
class SummaryRecord:
    key: str
    count: int
    first_value: float
    first_epoch: int
    last_value: float
    last_epoch: int
    min_value: float | None
    min_epoch: int | None
    max_value: float | None
    max_epoch: int | None

    def best(self, mode: str) -> tuple[float | None, int | None]:
        return (
            (self.min_value, self.min_epoch) if mode == "min" else (self.max_value, self.max_epoch)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "count": self.count,
            "first": json_float(self.first_value),
            "first_epoch": self.first_epoch,
            "last": json_float(self.last_value),
            "last_epoch": self.last_epoch,
            "min": json_float(self.min_value),
            "min_epoch": self.min_epoch,
            "max": json_float(self.max_value),
            "max_epoch": self.max_epoch,
        }


@dataclass(frozen=True, init=False)
class MetricPoint:
    key: str
    epoch: int
    step: int | None
    value: float
    time: datetime

    def __init__(
        self, key: str, epoch: int, step: int | None, value: float, time: datetime
    ) -> None:
        # What the generated __init__ of a frozen dataclass does (one object.__setattr__ per
        # field), for less: points are made per batch and per row read (bench/RESULTS.md, 9).
        d = self.__dict__
        d["key"] = key
        d["epoch"] = epoch
        d["step"] = step
        d["value"] = value
        d["time"] = time

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "epoch": self.epoch,
            "step": self.step,
            "value": json_float(self.value),
            "time": json_time(self.time),
        }


@dataclass(frozen=True)
class RunDestination:
    """The database a spooled run was meant for: by identity when the recorder had reached it,
    always by its URL without password."""

    url: str
    database_id: str | None


@dataclass(frozen=True)
class CheckpointRecord:
    id: int
    run_id: str
    epoch: int | None
    batch: int | None
    path: str
    kind: str
    source: str
    monitor: str | None
    value: float | None
    is_best: bool
    size: int
    sha256: str
    created_at: datetime
    artifact_root: str | None = None
    artifact_key: str | None = None
    uploaded_at: datetime | None = None

    @property
    def artifact_uri(self) -> str | None:
        """Where the copy in the artifact store is (or is meant to be), without credentials."""
        if self.artifact_root is None or self.artifact_key is None:
            return None
        return self.artifact_root.rstrip("/") + "/" + self.artifact_key

    def to_json(self, state: str | None = None) -> dict[str, Any]:
        out = {
            "epoch": self.epoch,
            "batch": self.batch,
            "path": self.path,
            "kind": self.kind,
            "source": self.source,
            "sha256": self.sha256,
            "size": self.size,
            "monitor": self.monitor,
            "value": json_float(self.value),
            "is_best": self.is_best,
            "created_at": json_time(self.created_at),
            "artifact_uri": self.artifact_uri,
            "uploaded": self.uploaded_at is not None,
        }
        if state is not None:
            out["state"] = state
        return out


@dataclass(frozen=True)
class RankedRun:
    """One row of `best` or of a sorted `runs list`: a run and its value of one metric."""

    run: RunRecord
    metric: str
    mode: str
    agg: str
    epoch: int | None
    value: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run.id,
            "run_name": self.run.name,
            "experiment": self.run.experiment,
            "metric": self.metric,
            "mode": self.mode,
            "agg": self.agg,
            "epoch": self.epoch,
            "value": json_float(self.value),
        }


@dataclass(frozen=True)
class RunDetail:
    """A run with what it recorded, read in one transaction (`Store.run_detail`)."""

    run: RunRecord
    summaries: dict[str, SummaryRecord]
    history: list[MetricPoint]  # epoch-level points, oldest first
    checkpoints: list[CheckpointRecord]
