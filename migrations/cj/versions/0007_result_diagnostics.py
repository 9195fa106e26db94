"""results keep the anchor diagnostics and warnings the projection found

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batch_results", sa.Column("diagnostics", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_results") as batch:
        batch.drop_column("diagnostics")
