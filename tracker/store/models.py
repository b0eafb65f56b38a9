"""Typed ORM classes of the run store, mapped onto the Core tables of `tracker.store.tables`.

The schema is defined once, in `tracker.store.tables`; these classes give it typed attributes and
relationships for code that works with objects (importing a spooled run into one the database
already has). No queries and no I/O here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped, relationship

from tracker.store import tables


class Base(DeclarativeBase):
    metadata = tables.metadata


class Experiment(Base):
    __table__ = tables.experiments

    id: Mapped[int]
    name: Mapped[str]
    created_at: Mapped[datetime]

    runs: Mapped[list[Run]] = relationship(back_populates="experiment")


class Run(Base):
    __table__ = tables.runs

    id: Mapped[str]
    name: Mapped[str]
    experiment_id: Mapped[int]
    status: Mapped[str]
    stop_reason: Mapped[str | None]
    stop_details: Mapped[dict[str, Any]]
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime]
    heartbeat_deadline: Mapped[datetime]
    epochs_planned: Mapped[int | None]
    epochs_done: Mapped[int]
    last_epoch: Mapped[int | None]
    fit_params: Mapped[dict[str, Any]]
    environment: Mapped[dict[str, Any]]
    model: Mapped[dict[str, Any]]
    references: Mapped[list[dict[str, Any]]]

    experiment: Mapped[Experiment] = relationship(back_populates="runs")
    params: Mapped[list[Param]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    tags: Mapped[list[Tag]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class Param(Base):
    __table__ = tables.params

    run_id: Mapped[str]
    key: Mapped[str]
    value: Mapped[str]  # JSON text


class Tag(Base):
    __table__ = tables.tags

    run_id: Mapped[str]
    key: Mapped[str]
    value: Mapped[str]


class Metric(Base):
    __table__ = tables.metrics

    id: Mapped[int]
    run_id: Mapped[str]
    key: Mapped[str]
    epoch: Mapped[int]
    step: Mapped[int | None]
    value: Mapped[float]  # NaN is stored as NULL
    time: Mapped[datetime]


class MetricSummary(Base):
    __table__ = tables.metric_summaries

    run_id: Mapped[str]
    key: Mapped[str]
    count: Mapped[int]
    first_value: Mapped[float]
    first_epoch: Mapped[int]
    last_value: Mapped[float]
    last_epoch: Mapped[int]
    min_value: Mapped[float | None]
    min_epoch: Mapped[int | None]
    max_value: Mapped[float | None]
    max_epoch: Mapped[int | None]


class BatchBlock(Base):
    __table__ = tables.batch_blocks

    run_id: Mapped[str]
    key: Mapped[str]
    epoch: Mapped[int]
    block: Mapped[int]
    count: Mapped[int]
    first_step: Mapped[int]
    last_step: Mapped[int]
    last_value: Mapped[float | None]  # None: NaN
    min_value: Mapped[float | None]
    min_step: Mapped[int | None]
    max_value: Mapped[float | None]
    max_step: Mapped[int | None]


class Checkpoint(Base):
    __table__ = tables.checkpoints

    id: Mapped[int]
    run_id: Mapped[str]
    epoch: Mapped[int | None]
    batch: Mapped[int | None]
    path: Mapped[str]
    kind: Mapped[str]
    source: Mapped[str]
    monitor: Mapped[str | None]
    value: Mapped[float | None]
    is_best: Mapped[bool]
    size: Mapped[int]
    sha256: Mapped[str]
    created_at: Mapped[datetime]
    artifact_root: Mapped[str | None]
    artifact_key: Mapped[str | None]
    uploaded_at: Mapped[datetime | None]


class DatabaseIdentity(Base):
    __table__ = tables.database_identity

    id: Mapped[str]
    created_at: Mapped[datetime]


class RunDestination(Base):
    __table__ = tables.run_destinations

    run_id: Mapped[str]
    database_id: Mapped[str | None]
    url: Mapped[str]
