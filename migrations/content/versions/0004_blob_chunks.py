"""content bytes in the database, for `--blob-store database`

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
        "content_blob_chunks",
        sa.Column("blob_key", sa.String(40)),
        sa.Column("seq", sa.Integer()),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("blob_key", "seq"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Out of line and not compressed: compressing each MiB on its way in halved the stream rate,
        # and most content (random-looking documents, short essays) gains little from it.
        op.execute("ALTER TABLE content_blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("content_blob_chunks")
