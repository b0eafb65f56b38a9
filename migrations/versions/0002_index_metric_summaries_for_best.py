"""Index metric summaries by (key, value, run) so `best` reads a few index entries at any size.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 02:44:34.102226
"""

from alembic import op


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_metric_summaries_key"))
        batch_op.create_index(
            "ix_metric_summaries_key_last", ["key", "last_value", "run_id"], unique=False
        )
        batch_op.create_index(
            "ix_metric_summaries_key_max", ["key", "max_value", "run_id"], unique=False
        )
        batch_op.create_index(
            "ix_metric_summaries_key_min", ["key", "min_value", "run_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("metric_summaries", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_summaries_key_min")
        batch_op.drop_index("ix_metric_summaries_key_max")
        batch_op.drop_index("ix_metric_summaries_key_last")
        batch_op.create_index(batch_op.f("ix_metric_summaries_key"), ["key"], unique=False)
