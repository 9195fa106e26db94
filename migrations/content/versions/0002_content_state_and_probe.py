"""content state (intact, damaged, missing) and the health probe's row

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("content_objects") as table:
        table.add_column(sa.Column("state", sa.String(20), nullable=False, server_default="INTACT"))
    op.create_table(
        "content_health_probe",
        sa.Column("probe_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("probed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("content_health_probe")
    with op.batch_alter_table("content_objects") as table:
        table.drop_column("state")
