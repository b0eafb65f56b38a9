"""Summarise batch-level series in blocks of 64 steps and index batch points by step, so a chart
of a million batch points reads some 16,000 block rows instead of every point.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 01:55:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BLOCK = 64  # tracker.tables.BATCH_BLOCK when this revision was written

# Each block's summary from the rows already stored, by the store's rules: the last point is
# the highest step written last; of equal minima (maxima) the first by step, then by id; NaN
# (NULL) is never a minimum or maximum.
BACKFILL = f"""
INSERT INTO batch_blocks (run_id, key, epoch, block, count, first_step, last_step, last_value,
                          min_value, min_step, max_value, max_step)
SELECT run_id, key, epoch, block, COUNT(*), MIN(step), MAX(step),
       MAX(CASE WHEN by_last = 1 THEN value END),
       MIN(value), MIN(CASE WHEN by_min = 1 AND value IS NOT NULL THEN step END),
       MAX(value), MIN(CASE WHEN by_max = 1 AND value IS NOT NULL THEN step END)
FROM (
    SELECT run_id, key, epoch, step / {BLOCK} AS block, step, value,
           ROW_NUMBER() OVER (PARTITION BY run_id, key, epoch, step / {BLOCK}
                              ORDER BY step DESC, id DESC) AS by_last,
           ROW_NUMBER() OVER (PARTITION BY run_id, key, epoch, step / {BLOCK}
                              ORDER BY CASE WHEN value IS NULL THEN 1 ELSE 0 END, value,
                                       step, id) AS by_min,
           ROW_NUMBER() OVER (PARTITION BY run_id, key, epoch, step / {BLOCK}
                              ORDER BY CASE WHEN value IS NULL THEN 1 ELSE 0 END, value DESC,
                                       step, id) AS by_max
    FROM metrics
    WHERE step IS NOT NULL
) AS points
GROUP BY run_id, key, epoch, block
"""


def upgrade() -> None:
    op.create_table(
        "batch_blocks",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_step", sa.Integer(), nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=False),
        sa.Column("last_value", sa.Double(), nullable=True),
        sa.Column("min_value", sa.Double(), nullable=True),
        sa.Column("min_step", sa.Integer(), nullable=True),
        sa.Column("max_value", sa.Double(), nullable=True),
        sa.Column("max_step", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_batch_blocks_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "key", "epoch", "block", name=op.f("pk_batch_blocks")),
    )
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.create_index(
            "ix_metrics_batch_points",
            ["run_id", "key", "epoch", "step", "value"],
            unique=False,
            sqlite_where=sa.text("step IS NOT NULL"),
            postgresql_where=sa.text("step IS NOT NULL"),
        )
    op.execute(BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table("metrics", schema=None) as batch_op:
        batch_op.drop_index("ix_metrics_batch_points")
    op.drop_table("batch_blocks")
