"""Record where each checkpoint's copy in the artifact store is, and whether its upload finished.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 01:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("artifact_root", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("artifact_key", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_column("uploaded_at")
        batch_op.drop_column("artifact_key")
        batch_op.drop_column("artifact_root")
