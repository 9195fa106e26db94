"""results keep the grade bands the projection drew, for clients to show

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batch_results", sa.Column("grade_bands", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_results") as batch:
        batch.drop_column("grade_bands")
