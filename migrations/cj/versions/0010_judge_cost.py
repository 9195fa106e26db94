"""what judging costs: comparisons priced, a batch's cost ceiling and reliability target, judgements
kept for reuse, and waves sent through the providers' batch APIs

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batches:
        batches.add_column(sa.Column("max_cost_usd", sa.Float(), nullable=True))
        batches.add_column(sa.Column("target_reliability", sa.Float(), nullable=True))
        batches.add_column(sa.Column("no_cache", sa.Boolean(), nullable=False, server_default=sa.false()))
        batches.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
        batches.add_column(sa.Column("judge_mode", sa.String(10), nullable=False, server_default="DIRECT"))
    with op.batch_alter_table("comparisons") as comparisons:
        comparisons.add_column(sa.Column("tokens_cached", sa.Integer(), nullable=True))
        comparisons.add_column(sa.Column("tokens_cache_written", sa.Integer(), nullable=True))
        comparisons.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
        comparisons.add_column(sa.Column("cached", sa.Boolean(), nullable=False, server_default=sa.false()))
        comparisons.add_column(sa.Column("provider_batch_id", sa.String(100), nullable=True))
    op.create_table(
        "judgements",
        sa.Column("judgement_key", sa.String(64), primary_key=True),
        sa.Column("winner", sa.String(10), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("justification", sa.Text(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("judgements")
    with op.batch_alter_table("comparisons") as comparisons:
        for column in ("provider_batch_id", "cached", "cost_usd", "tokens_cache_written", "tokens_cached"):
            comparisons.drop_column(column)
    with op.batch_alter_table("batches") as batches:
        for column in ("judge_mode", "cost_usd", "no_cache", "target_reliability", "max_cost_usd"):
            batches.drop_column(column)
