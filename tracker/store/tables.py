"""The run store's schema as SQLAlchemy Core tables: the one definition of it.

The store reads and writes through these tables with Core statements, so `tracker best` and
`tracker runs list` never import SQLAlchemy's ORM (a third of such a process's start-up);
`tracker.store.models` maps typed ORM classes onto the same tables, and the migrations are checked
against this metadata.

Two conventions hold for every metric value column: NULL means NaN (SQLite cannot store NaN and
turns it into NULL, so both backends do the same), and infinities are stored as they are. The
summary's `min_*`/`max_*` columns only ever hold finite values, which is what keeps a NaN or an
infinity from winning a ranking.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

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


def stored_value(value: float | None) -> float | None:
    """A metric value as a column holds it: NaN (and None) become NULL."""
    return None if value is None or math.isnan(value) else value


class MetricValue(TypeDecorator[float]):
    """A float where NULL stands for NaN on both backends."""

    impl = Double
    cache_ok = True

    def process_bind_param(self, value: float | None, dialect: Any) -> float | None:
        stored = stored_value(value)
        return None if stored is None else float(stored)

    def process_result_value(self, value: float | None, dialect: Any) -> float:
        return math.nan if value is None else float(value)


def _run_fk() -> ForeignKey:
    return ForeignKey("runs.id", ondelete="CASCADE")


metadata = MetaData(naming_convention=NAMING)

experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),  # uuid4 hex
    Column("name", String(255), nullable=False, index=True),
    Column("experiment_id", ForeignKey("experiments.id"), nullable=False, index=True),
    # running, finished, failed, interrupted, crashed
    Column("status", String(16), nullable=False, index=True),
    Column("stop_reason", String(32)),
    Column("stop_details", JSON, nullable=False, default=dict),
    Column("started_at", UTCDateTime(), nullable=False, index=True),
    Column("ended_at", UTCDateTime()),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
    # A running run whose deadline has passed is shown as crashed: its process stopped beating.
    Column("heartbeat_deadline", UTCDateTime(), nullable=False),
    Column("epochs_planned", Integer),
    Column("epochs_done", Integer, nullable=False, default=0),
    Column("last_epoch", Integer),
    Column("fit_params", JSON, nullable=False, default=dict),
    Column("environment", JSON, nullable=False, default=dict),
    Column("model", JSON, nullable=False, default=dict),
    # TensorBoard log dirs, CSVLogger files, ...: [{"kind": ..., "path": ...}]
    Column("references", JSON, nullable=False, default=list),
)

params = Table(
    "params",
    metadata,
    Column("run_id", _run_fk(), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),  # JSON text, so 3 and "3" stay apart
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", _run_fk(), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
)

metrics = Table(
    "metrics",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("run_id", _run_fk(), nullable=False),
    Column("key", Text, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("step", Integer),  # batch index within the epoch; NULL: epoch level
    Column("value", MetricValue(), nullable=True),
    Column("time", UTCDateTime(), nullable=False),
    Index("ix_metrics_run_key_epoch", "run_id", "key", "epoch"),
)

# Batch points only (a partial index: epoch-level writes never touch it), covering what a chart
# reads of a few steps of one epoch: the raw points of the batch blocks a bucket edge cuts.
Index(
    "ix_metrics_batch_points",
    metrics.c.run_id,
    metrics.c.key,
    metrics.c.epoch,
    metrics.c.step,
    metrics.c.value,
    sqlite_where=metrics.c.step.is_not(None),
    postgresql_where=metrics.c.step.is_not(None),
)

# Steps of one epoch per batch block: block = step // BATCH_BLOCK (stored data depends on it,
# so changing it takes a migration that rebuilds `batch_blocks`).
BATCH_BLOCK = 64

# Each batch-level series cut into blocks of BATCH_BLOCK steps of one epoch, with what a chart's
# downsampling keeps of them (count, first and last step, the last value, the minimum and
# maximum with their first step), kept with every write of batch points: a series of a million
# points is drawn from some 16,000 blocks instead of its rows.
batch_blocks = Table(
    "batch_blocks",
    metadata,
    Column("run_id", _run_fk(), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("block", Integer, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("first_step", Integer, nullable=False),
    Column("last_step", Integer, nullable=False),
    Column("last_value", Double),  # NULL: NaN
    Column("min_value", Double),  # over non-NaN values (infinities included); NULL: none
    Column("min_step", Integer),
    Column("max_value", Double),
    Column("max_step", Integer),
)

# First, last, min and max of one epoch-level metric of one run, kept with every write.
metric_summaries = Table(
    "metric_summaries",
    metadata,
    Column("run_id", _run_fk(), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("first_value", MetricValue(), nullable=True),
    Column("first_epoch", Integer, nullable=False),
    Column("last_value", MetricValue(), nullable=True),
    Column("last_epoch", Integer, nullable=False),
    Column("min_value", Double),  # finite values only
    Column("min_epoch", Integer),
    Column("max_value", Double),
    Column("max_epoch", Integer),
    # `best` walks one of these from its end: cost independent of how many runs there are.
    Index("ix_metric_summaries_key_min", "key", "min_value", "run_id"),
    Index("ix_metric_summaries_key_max", "key", "max_value", "run_id"),
    Index("ix_metric_summaries_key_last", "key", "last_value", "run_id"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", _run_fk(), nullable=False, index=True),
    Column("epoch", Integer),
    Column("batch", Integer),
    Column("path", Text, nullable=False),
    Column("kind", String(16), nullable=False),  # "weights" or "model"
    Column("source", String(64), nullable=False),  # the callback class that wrote it
    Column("monitor", Text),
    Column("value", Double),
    Column("is_best", Boolean, nullable=False, default=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # The copy in the artifact store: its root (a folder or an fsspec URL, never credentials),
    # its key under that root, and when its upload was confirmed (NULL: still pending).
    Column("artifact_root", Text),
    Column("artifact_key", Text),
    Column("uploaded_at", UTCDateTime()),
)

# Which database this is: one row, a random id made when the schema was created or upgraded to
# revision 0003. A database keeps it whatever URL reaches it (`localhost` or `127.0.0.1`, a
# relative or absolute path), so a spooled run can name the database it was meant for.
database_identity = Table(
    "database_identity",
    metadata,
    Column("id", String(32), primary_key=True),  # uuid4 hex
    Column("created_at", UTCDateTime(), nullable=False),
)

# Where a run kept in a spool file was going (spool files only; a run without a row here was
# spooled by an older tracker and goes wherever `tracker sync` is pointed). `database_id` is the
# destination's identity when the recorder had reached it at least once; `url` is its URL with
# the password removed, kept always (to name it, and to reach it with `tracker sync --all`).
run_destinations = Table(
    "run_destinations",
    metadata,
    Column("run_id", _run_fk(), primary_key=True),
    Column("database_id", String(32), index=True),
    Column("url", Text, nullable=False),
)
