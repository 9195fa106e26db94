"""each essay's 95 % credible interval of its score, as sampled (skewed where the posterior is)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batch_essays") as essays:
        essays.add_column(sa.Column("score_low_95", sa.Float(), nullable=True))
        essays.add_column(sa.Column("score_high_95", sa.Float(), nullable=True))
    # scores stored before: their normal approximation, as the engine gives where it does not sample
    op.execute(
        "UPDATE batch_essays SET score_low_95 = score - 1.96 * standard_error, "
        "score_high_95 = score + 1.96 * standard_error WHERE score IS NOT NULL AND standard_error IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("batch_essays") as essays:
        essays.drop_column("score_high_95")
        essays.drop_column("score_low_95")
