"""cj schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assignments",
        sa.Column("assignment_id", sa.String(length=100), nullable=False),
        sa.Column("course_code", sa.String(length=50), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("grade_scale", sa.String(length=50), nullable=False),
        sa.Column("student_prompt_storage_id", sa.String(length=32), nullable=True),
        sa.Column("judge_rubric_storage_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("assignment_id"),
    )
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("batch_label", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=False),
        sa.Column("assignment_id", sa.String(length=100), nullable=True),
        sa.Column("grade_scale", sa.String(length=50), nullable=True),
        sa.Column("language", sa.String(length=35), nullable=False),
        sa.Column("course_code", sa.String(length=50), nullable=False),
        sa.Column("user_id", sa.String(length=100), nullable=False),
        sa.Column("org_id", sa.String(length=100), nullable=False),
        sa.Column("judge_provider", sa.String(length=20), nullable=False),
        sa.Column("judge_model", sa.String(length=200), nullable=False),
        sa.Column("judge_temperature", sa.Float(), nullable=True),
        sa.Column("judge_max_tokens", sa.Integer(), nullable=True),
        sa.Column("judge_system_prompt", sa.Text(), nullable=False),
        sa.Column("prompt_storage_id", sa.String(length=32), nullable=True),
        sa.Column("prompt_text", sa.Text(), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("comparison_budget", sa.Integer(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("comparisons_done", sa.Integer(), nullable=False),
        sa.Column("comparisons_failed", sa.Integer(), nullable=False),
        sa.Column("current_ssr", sa.Float(), nullable=True),
        sa.Column("max_score_change", sa.Float(), nullable=True),
        sa.Column("correlation_id", sa.String(length=100), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("batch_id"),
        sa.UniqueConstraint("request_id"),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index("batches_state_idx", ["state"], unique=False)

    op.create_table(
        "anchors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("assignment_id", sa.String(length=100), nullable=False),
        sa.Column("label", sa.String(length=36), nullable=False),
        sa.Column("grade", sa.String(length=10), nullable=False),
        sa.Column("grade_scale", sa.String(length=50), nullable=False),
        sa.Column("storage_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["assignment_id"], ["assignments.assignment_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("assignment_id", "label", "grade_scale", name="anchors_assignment_label_scale_key"),
    )
    op.create_table(
        "batch_essays",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("essay_id", sa.String(length=36), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("text_storage_id", sa.String(length=32), nullable=False),
        sa.Column("is_anchor", sa.Boolean(), nullable=False),
        sa.Column("known_grade", sa.String(length=10), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("standard_error", sa.Float(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("wins", sa.Integer(), nullable=False),
        sa.Column("losses", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.batch_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "essay_id", name="batch_essays_batch_essay_key"),
    )
    with op.batch_alter_table("batch_essays", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_essays_batch_id"), ["batch_id"], unique=False)

    op.create_table(
        "batch_results",
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("scale_separation_reliability", sa.Float(), nullable=False),
        sa.Column("position_bias", sa.Float(), nullable=False),
        sa.Column("position_bias_se", sa.Float(), nullable=False),
        sa.Column("self_consistency", sa.Float(), nullable=True),
        sa.Column("grade_scale", sa.String(length=50), nullable=True),
        sa.Column("grades_projected", sa.Boolean(), nullable=False),
        sa.Column("projection_note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.batch_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.create_table(
        "comparisons",
        sa.Column("comparison_id", sa.String(length=32), nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("essay_a_id", sa.String(length=36), nullable=False),
        sa.Column("essay_b_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("winner", sa.String(length=10), nullable=True),
        sa.Column("confidence", sa.Integer(), nullable=True),
        sa.Column("justification", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("request_correlation_id", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.batch_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("comparison_id"),
    )
    with op.batch_alter_table("comparisons", schema=None) as batch_op:
        batch_op.create_index("comparisons_batch_status_idx", ["batch_id", "status"], unique=False)

    op.create_table(
        "grade_projections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("essay_id", sa.String(length=36), nullable=False),
        sa.Column("grade", sa.String(length=10), nullable=False),
        sa.Column("probabilities", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("confidence_label", sa.String(length=10), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.batch_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "essay_id", name="grade_projections_batch_essay_key"),
    )


def downgrade() -> None:
    op.drop_table("grade_projections")
    with op.batch_alter_table("comparisons", schema=None) as batch_op:
        batch_op.drop_index("comparisons_batch_status_idx")

    op.drop_table("comparisons")
    op.drop_table("batch_results")
    with op.batch_alter_table("batch_essays", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batch_essays_batch_id"))

    op.drop_table("batch_essays")
    op.drop_table("anchors")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("batches_state_idx")

    op.drop_table("batches")
    op.drop_table("assignments")
