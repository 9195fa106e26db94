"""the health check's row: health writes, not only reads

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cj_health_probe",
        sa.Column("probe_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("probed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cj_health_probe")
