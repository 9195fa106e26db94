"""a batch's rule for stopping once its grades are decided

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("grade_stop_share", sa.Float(), nullable=True))
    op.add_column("batches", sa.Column("grade_stop_probability", sa.Float(), nullable=True))
    op.add_column("batches", sa.Column("grade_stop_off", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("grade_stop_off")
        batch.drop_column("grade_stop_probability")
        batch.drop_column("grade_stop_share")
