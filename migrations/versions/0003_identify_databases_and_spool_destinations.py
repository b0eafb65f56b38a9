"""Give every database an identity (a random id made here, once) and let a spool remember the
database each of its runs was meant for.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 01:50:00.000000
"""

import uuid
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    identity = op.create_table(
        "database_identity",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_database_identity")),
    )
    now = datetime.now(timezone.utc)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # as tracker.tables.UTCDateTime stores it there
    op.bulk_insert(identity, [{"id": uuid.uuid4().hex, "created_at": now}])
    op.create_table(
        "run_destinations",
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("database_id", sa.String(length=32), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_run_destinations_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_destinations")),
    )
    with op.batch_alter_table("run_destinations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_run_destinations_database_id"), ["database_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("run_destinations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_destinations_database_id"))
    op.drop_table("run_destinations")
    op.drop_table("database_identity")
