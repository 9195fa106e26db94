"""batches belong to their caller: owner column, request ids unique per owner

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

# 0001 left the request_id constraint unnamed: SQLite knows it by this convention in batch mode,
# PostgreSQL by its default name.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _request_id_constraint() -> str:
    return "batches_request_id_key" if op.get_bind().dialect.name == "postgresql" else "uq_batches_request_id"


def upgrade() -> None:
    with op.batch_alter_table("batches", naming_convention=NAMING) as batch:
        batch.add_column(sa.Column("owner", sa.String(length=100), nullable=False, server_default=""))
        batch.drop_constraint(_request_id_constraint(), type_="unique")
        batch.create_unique_constraint("batches_owner_request_key", ["owner", "request_id"])
        batch.create_index("batches_owner_created_idx", ["owner", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("batches", naming_convention=NAMING) as batch:
        batch.drop_index("batches_owner_created_idx")
        batch.drop_constraint("batches_owner_request_key", type_="unique")
        batch.create_unique_constraint(_request_id_constraint(), ["request_id"])
        batch.drop_column("owner")
