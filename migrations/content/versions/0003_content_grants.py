"""content grants: who uploaded what, for reads when tokens are on

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "content_grants",
        sa.Column("storage_id", sa.String(32), sa.ForeignKey("content_objects.storage_id", ondelete="CASCADE")),
        sa.Column("user_id", sa.String(100)),
        sa.Column("org_id", sa.String(100)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("storage_id", "user_id", "org_id"),
    )
    op.create_index("content_grants_user_idx", "content_grants", ["user_id"])
    op.create_index("content_grants_org_idx", "content_grants", ["org_id"])


def downgrade() -> None:
    op.drop_table("content_grants")
