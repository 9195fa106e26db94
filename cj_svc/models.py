"""Everything the CJ Service keeps. Codes and states are stored as text, never as database enums."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STORAGE_ID = String(32)
ESSAY_ID = String(36)
TIMESTAMP = DateTime(timezone=True)


class Base(DeclarativeBase):
    pass


class Assignment(Base):
    """Assessment instructions: what essays of an assignment are judged against."""

    __tablename__ = "assignments"

    assignment_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    course_code: Mapped[str] = mapped_column(String(50), default="")
    instructions: Mapped[str] = mapped_column(Text, default="")
    grade_scale: Mapped[str] = mapped_column(String(50))
    student_prompt_storage_id: Mapped[str | None] = mapped_column(STORAGE_ID)
    judge_rubric_storage_id: Mapped[str | None] = mapped_column(STORAGE_ID)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class Anchor(Base):
    """An essay whose grade is known, registered for an assignment and its grade scale."""

    __tablename__ = "anchors"
    __table_args__ = (
        UniqueConstraint("assignment_id", "label", "grade_scale", name="anchors_assignment_label_scale_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assignment_id: Mapped[str] = mapped_column(ForeignKey("assignments.assignment_id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(ESSAY_ID)
    grade: Mapped[str] = mapped_column(String(10))
    grade_scale: Mapped[str] = mapped_column(String(50))
    storage_id: Mapped[str] = mapped_column(STORAGE_ID)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class Batch(Base):
    """One assessment request and the durable state of its workflow."""

    __tablename__ = "batches"
    __table_args__ = (
        Index("batches_state_idx", "state"),
        # A request id is the caller's own: two users may send the same one.
        UniqueConstraint("owner", "request_id", name="batches_owner_request_key"),
        Index("batches_owner_created_idx", "owner", "created_at"),
    )

    batch_id: Mapped[str] = mapped_column(STORAGE_ID, primary_key=True)
    # Whose batch it is: the caller's user when tokens are on, '' on an open mesh.
    owner: Mapped[str] = mapped_column(String(100), default="", server_default="")
    request_id: Mapped[str] = mapped_column(String(36))
    # sha256 of the request, so that a reused request_id with a different request is refused
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    batch_label: Mapped[str] = mapped_column(String(255))
    # A BatchState name without its prefix (PENDING, RUNNING, ...), as text.
    state: Mapped[str] = mapped_column(String(20))
    state_reason: Mapped[str] = mapped_column(Text, default="")
    assignment_id: Mapped[str | None] = mapped_column(String(100))
    grade_scale: Mapped[str | None] = mapped_column(String(50))
    language: Mapped[str] = mapped_column(String(35), default="")
    course_code: Mapped[str] = mapped_column(String(50), default="")
    user_id: Mapped[str] = mapped_column(String(100), default="")
    org_id: Mapped[str] = mapped_column(String(100), default="")
    judge_provider: Mapped[str] = mapped_column(String(20))
    judge_model: Mapped[str] = mapped_column(String(200), default="")
    judge_temperature: Mapped[float | None] = mapped_column(Float)
    judge_max_tokens: Mapped[int | None] = mapped_column(Integer)
    judge_system_prompt: Mapped[str] = mapped_column(Text, default="")
    # A JudgeMode name, as text.
    judge_mode: Mapped[str] = mapped_column(String(10), default="DIRECT", server_default="DIRECT")
    prompt_storage_id: Mapped[str | None] = mapped_column(STORAGE_ID)
    prompt_text: Mapped[str] = mapped_column(Text, default="")
    instructions: Mapped[str] = mapped_column(Text, default="")
    comparison_budget: Mapped[int] = mapped_column(Integer)
    # The request's seed, when it asked for a reproducible batch.
    seed: Mapped[int | None] = mapped_column(BigInteger)
    # When it stops for decided grades (the request's GradeStop); None: the service's default.
    grade_stop_share: Mapped[float | None] = mapped_column(Float)
    grade_stop_probability: Mapped[float | None] = mapped_column(Float)
    grade_stop_off: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Its cost ceiling in US dollars (the request's max_cost_usd), and whether it may reuse answers.
    max_cost_usd: Mapped[float | None] = mapped_column(Float)
    # The SSR it stops at (the request's target_reliability); None: the service's.
    target_reliability: Mapped[float | None] = mapped_column(Float)
    no_cache: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    wave: Mapped[int] = mapped_column(Integer, default=0)
    comparisons_done: Mapped[int] = mapped_column(Integer, default=0)
    comparisons_failed: Mapped[int] = mapped_column(Integer, default=0)
    current_ssr: Mapped[float | None] = mapped_column(Float)
    # What its answers cost so far (recounted with comparisons_done); None without a price.
    cost_usd: Mapped[float | None] = mapped_column(Float)
    max_score_change: Mapped[float | None] = mapped_column(Float)
    correlation_id: Mapped[str] = mapped_column(String(100), default="")
    # Which replica works the batch, until when (renewed while it works).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    completed_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)


class BatchEssay(Base):
    """A student essay or an anchor in a batch, with its latest score."""

    __tablename__ = "batch_essays"
    __table_args__ = (UniqueConstraint("batch_id", "essay_id", name="batch_essays_batch_essay_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.batch_id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # the engine's index of this essay
    essay_id: Mapped[str] = mapped_column(ESSAY_ID)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    text_storage_id: Mapped[str] = mapped_column(STORAGE_ID)
    is_anchor: Mapped[bool] = mapped_column(Boolean, default=False)
    known_grade: Mapped[str | None] = mapped_column(String(10))
    score: Mapped[float | None] = mapped_column(Float)
    standard_error: Mapped[float | None] = mapped_column(Float)
    score_low_95: Mapped[float | None] = mapped_column(Float)  # the score's 95 % credible interval
    score_high_95: Mapped[float | None] = mapped_column(Float)
    rank: Mapped[int | None] = mapped_column(Integer)
    wins: Mapped[int] = mapped_column(Integer, default=0)
    losses: Mapped[int] = mapped_column(Integer, default=0)


class Comparison(Base):
    """One question to the judge: written before it is sent, updated when the answer comes."""

    __tablename__ = "comparisons"
    __table_args__ = (Index("comparisons_batch_status_idx", "batch_id", "status"),)

    comparison_id: Mapped[str] = mapped_column(STORAGE_ID, primary_key=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.batch_id", ondelete="CASCADE"))
    wave: Mapped[int] = mapped_column(Integer)
    essay_a_id: Mapped[str] = mapped_column(ESSAY_ID)
    essay_b_id: Mapped[str] = mapped_column(ESSAY_ID)
    # PENDING, DONE or FAILED, as text.
    status: Mapped[str] = mapped_column(String(10))
    # essay_a or essay_b
    winner: Mapped[str | None] = mapped_column(String(10))
    confidence: Mapped[int | None] = mapped_column(Integer)
    justification: Mapped[str | None] = mapped_column(Text)
    # An ErrorCode name without its prefix, as text (VARCHAR(100)), never a database enum.
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    request_correlation_id: Mapped[str] = mapped_column(String(100), default="")
    provider: Mapped[str] = mapped_column(String(20), default="")
    model: Mapped[str] = mapped_column(String(200), default="")
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    # Parts of tokens_in: read from and written to the provider's prompt cache.
    tokens_cached: Mapped[int | None] = mapped_column(Integer)
    tokens_cache_written: Mapped[int | None] = mapped_column(Integer)
    # US dollars, priced when answered; None when the model has no price.
    cost_usd: Mapped[float | None] = mapped_column(Float)
    # Answered from the judgement cache: no call was made.
    cached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The provider's batch job it was sent in (batch mode): polled again after a restart.
    provider_batch_id: Mapped[str | None] = mapped_column(String(100))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    completed_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    # The replica that wrote the row and sent it to the judge.
    replica_id: Mapped[str | None] = mapped_column(String(64))


class BatchResult(Base):
    """Written once, when a batch is finalized."""

    __tablename__ = "batch_results"

    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.batch_id", ondelete="CASCADE"), primary_key=True)
    scale_separation_reliability: Mapped[float] = mapped_column(Float)
    position_bias: Mapped[float] = mapped_column(Float)
    position_bias_se: Mapped[float] = mapped_column(Float)
    self_consistency: Mapped[float | None] = mapped_column(Float)
    grade_scale: Mapped[str | None] = mapped_column(String(50))
    grades_projected: Mapped[bool] = mapped_column(Boolean)
    projection_note: Mapped[str] = mapped_column(Text, default="")
    # JSON list of [grade, lower, upper] on the score scale (null for an open end); null: not projected.
    grade_bands: Mapped[str | None] = mapped_column(Text)
    # JSON of the anchor diagnostics, the warnings (worst first) and whether grades are reliable.
    diagnostics: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class GradeProjection(Base):
    """A student's projected grade with its probabilities (JSON text: grade -> probability)."""

    __tablename__ = "grade_projections"
    __table_args__ = (UniqueConstraint("batch_id", "essay_id", name="grade_projections_batch_essay_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.batch_id", ondelete="CASCADE"))
    essay_id: Mapped[str] = mapped_column(ESSAY_ID)
    grade: Mapped[str] = mapped_column(String(10))
    probabilities: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float] = mapped_column(Float)
    confidence_label: Mapped[str] = mapped_column(String(10))


class HealthProbe(Base):
    """One row that the health check writes to, to learn that the database still takes writes."""

    __tablename__ = "cj_health_probe"

    probe_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    probed_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class HandledRequest(Base):
    """A change request whose request_id has been handled, recorded in the transaction that made
    the change: the same request sent again is answered from the state it left, not done twice,
    and the same id on a different request is refused."""

    __tablename__ = "handled_requests"

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    method: Mapped[str] = mapped_column(String(100))
    # sha256 of the request without its request_id (see cj_svc.requests.fingerprint)
    fingerprint: Mapped[str] = mapped_column(String(64))
    handled_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class Judgement(Base):
    """A judge's answer kept for reuse: the same two texts in the same order, asked of the same judge
    with the same settings, are not paid for twice (see cj_svc.judgements)."""

    __tablename__ = "judgements"

    # sha256 of everything the answer depends on (cj_svc.judgements.judgement_key)
    judgement_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    winner: Mapped[str] = mapped_column(String(10))
    confidence: Mapped[int] = mapped_column(Integer)
    justification: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
