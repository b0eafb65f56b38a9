"""SQLAlchemy models of the run store. No queries and no I/O here.

Two conventions hold for every metric value column: NULL means NaN (SQLite cannot store NaN
and turns it into NULL, so both backends do the same), and infinities are stored as they are.
The summary's `min_*`/`max_*` columns only ever hold finite values, which is what keeps a NaN or
an infinity from winning a ranking.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both backends (SQLite keeps no zone, so we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime given to the store: {value!r}")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class MetricValue(TypeDecorator[float]):
    """A float where NULL stands for NaN on both backends."""

    impl = Double
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: Any) -> float | None:
        if value is None or math.isnan(value):
            return None
        return float(value)

    def process_result_value(self, value: float | None, dialect: Any) -> float:
        return math.nan if value is None else float(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    runs: Mapped[list[Run]] = relationship(back_populates="experiment")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    name: Mapped[str] = mapped_column(String(255), index=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"), index=True)
    # running, finished, failed, interrupted, crashed
    status: Mapped[str] = mapped_column(String(16), index=True)
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    stop_details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A running run whose deadline has passed is shown as crashed: its process stopped beating.
    heartbeat_deadline: Mapped[datetime] = mapped_column(UTCDateTime())
    epochs_planned: Mapped[int | None] = mapped_column(Integer)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    last_epoch: Mapped[int | None] = mapped_column(Integer)
    fit_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    environment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # TensorBoard log dirs, CSVLogger files, ...: [{"kind": ..., "path": ...}]
    references: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    experiment: Mapped[Experiment] = relationship(back_populates="runs")
    params: Mapped[list[Param]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    tags: Mapped[list[Tag]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class Param(Base):
    __tablename__ = "params"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # JSON text, so 3 and "3" stay apart


class Tag(Base):
    __tablename__ = "tags"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_key_epoch", "run_id", "key", "epoch"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(Text)
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(
        Integer
    )  # batch index within the epoch; None: epoch-level
    value: Mapped[float] = mapped_column(MetricValue(), nullable=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime())


class MetricSummary(Base):
    """First, last, min and max of one epoch-level metric of one run, kept with every write."""

    __tablename__ = "metric_summaries"
    # `best` walks one of these from its end: cost independent of how many runs there are.
    __table_args__ = (
        Index("ix_metric_summaries_key_min", "key", "min_value", "run_id"),
        Index("ix_metric_summaries_key_max", "key", "max_value", "run_id"),
        Index("ix_metric_summaries_key_last", "key", "last_value", "run_id"),
    )

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    first_value: Mapped[float] = mapped_column(MetricValue(), nullable=True)
    first_epoch: Mapped[int] = mapped_column(Integer)
    last_value: Mapped[float] = mapped_column(MetricValue(), nullable=True)
    last_epoch: Mapped[int] = mapped_column(Integer)
    min_value: Mapped[float | None] = mapped_column(Double)  # finite values only
    min_epoch: Mapped[int | None] = mapped_column(Integer)
    max_value: Mapped[float | None] = mapped_column(Double)
    max_epoch: Mapped[int | None] = mapped_column(Integer)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int | None] = mapped_column(Integer)
    batch: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # "weights" or "model"
    source: Mapped[str] = mapped_column(String(64))  # the callback class that wrote it
    monitor: Mapped[str | None] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Double)
    is_best: Mapped[bool] = mapped_column(Boolean, default=False)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
