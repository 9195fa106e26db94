"""Batches: submission with every check before anything is stored, queries, cancel. No grpc here.

States and their allowed transitions (enforced by `transition`, a conditional UPDATE):
    PENDING -> RUNNING -> FINALIZING -> COMPLETED
    PENDING | RUNNING | FINALIZING -> FAILED
    PENDING | RUNNING -> CANCELLED
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter as MetricCounter
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cj_svc.content_client import ContentClient
from cj_svc.models import Anchor, Assignment, Batch, BatchEssay, BatchResult, Comparison, GradeProjection
from cj_svc.references import ESSAY_KINDS, PROMPT_KINDS, RUBRIC_KINDS, Reference, check, unknown_assignment
from cj_svc.requests import RequestKey, remember
from cj_svc.vocabulary import ALLOWED_FROM, FINAL_STATES, BatchState, ComparisonStatus, JudgeMode
from mesh_common.error_codes import ErrorCode
from mesh_common.ids import new_id
from mesh_server import database, errors, pages
from mesh_server.auth import Principal

PROMPT_FETCH_FAILURES = MetricCounter(
    "huleedu_cj_prompt_fetch_failures_total", "Prompts (or rubrics) that could not be fetched.", ["reason"]
)


@dataclass(frozen=True)
class Caller:
    """Whose batches a request may see and change. Batches are filed under their owner (the
    caller's user when tokens are on, '' on an open mesh)."""

    owner: str = ""
    sees_all: bool = True
    may_cancel_others: bool = True

    def sees(self, batch: Batch) -> bool:
        return self.sees_all or batch.owner == self.owner

    def may_cancel(self, batch: Batch) -> bool:
        return batch.owner == self.owner or self.may_cancel_others


# The service itself, and every caller of an open mesh.
EVERYONE = Caller()


@dataclass(frozen=True)
class EssayInput:
    essay_id: str
    text_storage_id: str
    display_name: str = ""


@dataclass(frozen=True)
class BatchRequest:
    request_id: str
    fingerprint: str
    owner: str
    batch_label: str
    essays: list[EssayInput]
    prompt_storage_id: str = ""
    assignment_id: str = ""
    language: str = ""
    course_code: str = ""
    user_id: str = ""
    org_id: str = ""
    judge_provider: str = ""
    judge_model: str = ""
    judge_temperature: float | None = None
    judge_max_tokens: int | None = None
    judge_system_prompt: str = ""
    judge_mode: str = JudgeMode.DIRECT
    comparison_budget: int | None = None
    seed: int | None = None
    grade_stop_share: float | None = None
    grade_stop_probability: float | None = None
    grade_stop_off: bool = False
    max_cost_usd: float | None = None
    no_cache: bool = False
    target_reliability: float | None = None
    correlation_id: str = ""
    # Who submits: the essays and the prompt it sends must be content it may read.
    submitted_by: Principal | None = None


@dataclass
class BatchView:
    batch: Batch
    essay_count: int
    anchor_count: int


@dataclass
class Results:
    batch: BatchView
    essays: list[BatchEssay]
    result: BatchResult | None
    projections: dict[str, GradeProjection]
    failures: Counter[str] = field(default_factory=Counter)
    usage: dict[str, float] = field(default_factory=dict)
    answered_by: str = ""  # the model its comparisons recorded (for judges without a model setting)


async def transition(
    session: AsyncSession, batch_id: str, to_state: BatchState, reason: str | None = None, *, release: bool = False
) -> bool:
    """Move a batch to `to_state` if its current state allows it; False if it did not. `release`:
    let go of the batch's lease in the same write (its worker's own last transition), so that no
    one sees the batch ended and still held."""
    values: dict[str, Any] = {"state": to_state, "updated_at": datetime.now(UTC)}
    if reason is not None:
        values["state_reason"] = reason
    if to_state in FINAL_STATES:
        values["completed_at"] = values["updated_at"]
    if release:
        values |= {"lease_owner": None, "lease_expires_at": None}
    result = await session.execute(
        update(Batch).where(Batch.batch_id == batch_id, Batch.state.in_(ALLOWED_FROM[to_state])).values(**values)
    )
    return database.changed_rows(result) == 1


def unique_essay_ids(essays: list[EssayInput]) -> None:
    """The contract's uniqueness rule, checked here rather than in CEL (see assessment.proto)."""
    seen: dict[str, int] = {}
    for index, essay in enumerate(essays):
        earlier = seen.setdefault(essay.essay_id, index)
        if earlier != index:
            raise errors.InvalidArgument(
                f"essay ids must be unique within a batch: {essay.essay_id!r} is essays[{earlier}] and "
                f"essays[{index}]; give each essay its own id",
                field="essays",
            )


async def failure_counts(session: AsyncSession, batch_id: str) -> Counter[str]:
    """How many of a batch's comparisons failed, by error code."""
    query = (
        select(Comparison.error_code, func.count())
        .where(Comparison.batch_id == batch_id, Comparison.status == ComparisonStatus.FAILED)
        .group_by(Comparison.error_code)
    )
    return Counter({code or "": count for code, count in (await session.execute(query)).all()})


class Batches:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        content: ContentClient,
        default_provider: str,
        budget_per_essay: int,
    ) -> None:
        self.sessions = sessions
        self.content = content
        self.default_provider = default_provider
        self.budget_per_essay = budget_per_essay

    async def submit(self, request: BatchRequest) -> tuple[BatchView, bool]:
        """Check everything, then store the batch in one transaction. (view, created)."""
        unique_essay_ids(request.essays)
        existing = await self._same_request(request)
        if existing is not None:
            return existing, False
        assignment, anchors = await self._assignment(request.assignment_id)
        prompt_id = request.prompt_storage_id or (assignment.student_prompt_storage_id if assignment else "") or ""
        rubric_id = (assignment.judge_rubric_storage_id if assignment else "") or ""
        students = {e.essay_id for e in request.essays}
        clashes = sorted(students & {a.label for a in anchors})
        if clashes:
            raise errors.FailedPrecondition(
                f"essay ids {', '.join(clashes)} are also anchor labels of {request.assignment_id!r}; rename the essays",
                field="essays",
            )
        # The caller's own references, checked as the caller sees the Content Service; the
        # assignment's (anchors, its prompt and rubric: an admin's content) as the service sees it.
        sent = [
            Reference(f"essays[{i}].text_storage_id", f"essay {e.essay_id}", e.text_storage_id, ESSAY_KINDS)
            for i, e in enumerate(request.essays)
        ]
        assigned = [
            Reference("assignment_id", f"anchor {a.label} of {request.assignment_id!r}", a.storage_id, ESSAY_KINDS)
            for a in anchors
        ]
        if request.prompt_storage_id:
            sent.append(Reference("student_prompt_ref.storage_id", "the student prompt", prompt_id, PROMPT_KINDS))
        elif prompt_id:
            assigned.append(Reference("assignment_id", "the assignment's student prompt", prompt_id, PROMPT_KINDS))
        if rubric_id:
            assigned.append(Reference("assignment_id", "the assignment's judge rubric", rubric_id, RUBRIC_KINDS))
        held = await self.content.held([r.storage_id for r in sent], request.submitted_by)
        if assigned:
            held.update(await self.content.held([r.storage_id for r in assigned]))
        references = sent + assigned
        for storage_id in (prompt_id, rubric_id):
            if storage_id and storage_id not in held:
                PROMPT_FETCH_FAILURES.labels("not_found").inc()
        check(references, held)
        prompt_text = await self._hydrate(prompt_id, "prompt")
        rubric_text = await self._hydrate(rubric_id, "rubric")
        instructions = "\n\n".join(t for t in ((assignment.instructions if assignment else ""), rubric_text) if t)
        total = len(request.essays) + len(anchors)
        now = datetime.now(UTC)
        batch = Batch(
            batch_id=new_id(),
            owner=request.owner,
            request_id=request.request_id,
            request_fingerprint=request.fingerprint,
            batch_label=request.batch_label,
            state=BatchState.PENDING,
            state_reason="",
            assignment_id=request.assignment_id or None,
            grade_scale=assignment.grade_scale if assignment else None,
            language=request.language,
            course_code=request.course_code or (assignment.course_code if assignment else ""),
            user_id=request.user_id,
            org_id=request.org_id,
            judge_provider=request.judge_provider or self.default_provider,
            judge_model=request.judge_model,
            judge_temperature=request.judge_temperature,
            judge_max_tokens=request.judge_max_tokens,
            judge_system_prompt=request.judge_system_prompt,
            judge_mode=request.judge_mode,
            prompt_storage_id=prompt_id or None,
            prompt_text=prompt_text,
            instructions=instructions,
            comparison_budget=request.comparison_budget or max(1, self.budget_per_essay * total // 2),
            seed=request.seed,
            grade_stop_share=request.grade_stop_share,
            grade_stop_probability=request.grade_stop_probability,
            grade_stop_off=request.grade_stop_off,
            max_cost_usd=request.max_cost_usd,
            no_cache=request.no_cache,
            target_reliability=request.target_reliability,
            wave=0,
            comparisons_done=0,
            comparisons_failed=0,
            correlation_id=request.correlation_id,
            created_at=now,
            updated_at=now,
        )
        # Plain rows in one executemany: ORM objects for a national cohort's essays would hold the
        # event loop for seconds.
        rows = [
            {"batch_id": batch.batch_id, "position": i, "essay_id": e.essay_id, "display_name": e.display_name,
             "text_storage_id": e.text_storage_id, "is_anchor": False, "known_grade": None, "wins": 0, "losses": 0}
            for i, e in enumerate(request.essays)
        ]  # fmt: skip
        rows += [
            {"batch_id": batch.batch_id, "position": len(request.essays) + i, "essay_id": a.label,
             "display_name": f"anchor {a.label}", "text_storage_id": a.storage_id, "is_anchor": True,
             "known_grade": a.grade, "wins": 0, "losses": 0}
            for i, a in enumerate(anchors)
        ]  # fmt: skip
        try:

            async def transaction(session: AsyncSession) -> Any:
                session.add(batch)
                await session.flush()
                await session.execute(insert(BatchEssay), rows)

            await database.write(self.sessions, transaction)
        except IntegrityError:
            existing = await self._same_request(request)  # a concurrent call with this request id won
            if existing is None:
                raise
            return existing, False
        return BatchView(batch, len(request.essays), len(anchors)), True

    async def _assignment(self, assignment_id: str) -> tuple[Assignment | None, list[Anchor]]:
        if not assignment_id:
            return None, []
        async with self.sessions() as session:
            assignment = await session.get(Assignment, assignment_id)
            if assignment is None:
                raise unknown_assignment(assignment_id)
            query = select(Anchor).where(
                Anchor.assignment_id == assignment_id, Anchor.grade_scale == assignment.grade_scale
            )
            return assignment, list((await session.execute(query.order_by(Anchor.label))).scalars())

    async def _hydrate(self, storage_id: str, what: str) -> str:
        if not storage_id:
            return ""
        try:
            text = await self.content.text(storage_id)
        except errors.FailedPrecondition:
            PROMPT_FETCH_FAILURES.labels("not_found").inc()
            raise
        except errors.DataLoss:
            PROMPT_FETCH_FAILURES.labels("damaged").inc()
            raise
        except errors.DomainError:
            PROMPT_FETCH_FAILURES.labels("unavailable").inc()
            raise
        if "\x00" in text:  # stored before the Content Service refused NUL in texts; no database takes it
            PROMPT_FETCH_FAILURES.labels("not_text").inc()
            raise errors.FailedPrecondition(
                f"the {what} {storage_id} holds NUL characters; upload it again as plain UTF-8 text and use the "
                "new storage id",
                field="student_prompt_ref" if what == "prompt" else "assignment_id",
            )
        return text

    async def _same_request(self, request: BatchRequest) -> BatchView | None:
        """The caller's batch of this request id (a retry: same batch), AlreadyExists when that id
        was used for another request, None when it is new (AIP-155)."""
        async with self.sessions() as session:
            query = select(Batch).where(Batch.owner == request.owner, Batch.request_id == request.request_id)
            batch = (await session.execute(query)).scalar_one_or_none()
            if batch is None:
                return None
            if batch.request_fingerprint != request.fingerprint:
                raise errors.AlreadyExists(
                    f"request_id {request.request_id} was already used for a different request "
                    f"(batch {batch.batch_id}); send a new request_id for a new batch",
                    field="request_id",
                    error_code=ErrorCode.INVALID_REQUEST,
                )
            return await self._view(session, batch)

    @staticmethod
    async def _view(session: AsyncSession, batch: Batch) -> BatchView:
        counts = dict(
            (
                await session.execute(
                    select(BatchEssay.is_anchor, func.count())
                    .where(BatchEssay.batch_id == batch.batch_id)
                    .group_by(BatchEssay.is_anchor)
                )
            ).all()
        )
        return BatchView(batch, counts.get(False, 0), counts.get(True, 0))

    async def get(self, batch_id: str, caller: Caller = EVERYONE) -> BatchView:
        """The batch, if the caller may see it; NotFound alike whether it is someone else's or none."""
        async with self.sessions() as session:
            batch = await session.get(Batch, batch_id)
            if batch is None or not caller.sees(batch):
                raise errors.NotFound(f"no batch {batch_id} among the batches you may see", field="batch_id")
            return await self._view(session, batch)

    async def list_batches(
        self, page_size: int, page_token: str, state: str | None, caller: Caller = EVERYONE
    ) -> tuple[list[BatchView], str]:
        size = page_size or 50
        async with self.sessions() as session:
            query = select(Batch).order_by(Batch.created_at.desc(), Batch.batch_id.desc())
            if not caller.sees_all:
                query = query.where(Batch.owner == caller.owner)
            if state:
                query = query.where(Batch.state == state)
            if after := pages.position("batches", page_token):
                anchor = await session.get(Batch, after)
                if anchor is None or not caller.sees(anchor):
                    raise errors.InvalidArgument("page_token is not one this service handed out", field="page_token")
                query = query.where(
                    (Batch.created_at < anchor.created_at)
                    | ((Batch.created_at == anchor.created_at) & (Batch.batch_id < anchor.batch_id))
                )
            rows = list((await session.execute(query.limit(size + 1))).scalars())
            views = [await self._view(session, b) for b in rows[:size]]
        return views, pages.next_token("batches", rows[size - 1].batch_id if len(rows) > size else "")

    async def cancel(
        self, batch_id: str, reason: str, caller: Caller = EVERYONE, request: RequestKey | None = None
    ) -> BatchView:
        view = await self.get(batch_id, caller)
        if not caller.may_cancel(view.batch):
            raise errors.PermissionDenied(
                f"batch {batch_id} is not yours; only its owner or an admin may cancel it", field="batch_id"
            )

        async def transaction(session: AsyncSession) -> bool:
            moved = await transition(session, batch_id, BatchState.CANCELLED, reason or "cancelled by request")
            if moved:
                remember(session, request)
            return moved

        moved = await database.write(self.sessions, transaction)
        view = await self.get(batch_id)
        if not moved and view.batch.state != BatchState.CANCELLED:
            raise errors.FailedPrecondition(
                f"batch {batch_id} is {view.batch.state} and can no longer be cancelled", field="batch_id"
            )
        return view

    async def comparisons(
        self, batch_id: str, page_size: int, page_token: str, caller: Caller = EVERYONE
    ) -> tuple[list[Comparison], str]:
        await self.get(batch_id, caller)
        size = page_size or 100
        listing = f"comparisons of {batch_id}"
        async with self.sessions() as session:
            query = select(Comparison).where(Comparison.batch_id == batch_id)
            if after := pages.position(listing, page_token):
                query = query.where(Comparison.comparison_id > after)
            rows = list((await session.execute(query.order_by(Comparison.comparison_id).limit(size + 1))).scalars())
        return rows[:size], pages.next_token(listing, rows[size - 1].comparison_id if len(rows) > size else "")

    async def results(self, batch_id: str, caller: Caller = EVERYONE) -> Results:
        view = await self.get(batch_id, caller)
        async with self.sessions() as session:
            essays = list(
                (
                    await session.execute(
                        select(BatchEssay).where(BatchEssay.batch_id == batch_id).order_by(BatchEssay.position)
                    )
                ).scalars()
            )
            result = await session.get(BatchResult, batch_id)
            projections = {
                p.essay_id: p
                for p in (
                    await session.execute(select(GradeProjection).where(GradeProjection.batch_id == batch_id))
                ).scalars()
            }
            failures = await failure_counts(session, batch_id)
            usage = (
                await session.execute(
                    select(
                        func.count(Comparison.latency_ms), func.sum(Comparison.tokens_in), func.sum(Comparison.tokens_out),
                        func.avg(Comparison.latency_ms), func.count(Comparison.cached).filter(Comparison.cached),
                        func.sum(Comparison.tokens_cached), func.sum(Comparison.tokens_cache_written),
                        func.max(Comparison.model),
                    ).where(Comparison.batch_id == batch_id)
                )
            ).one()  # fmt: skip
        return Results(
            view, essays, result, projections, failures,
            {"calls": usage[0] or 0, "tokens_in": usage[1] or 0, "tokens_out": usage[2] or 0, "latency_ms": usage[3] or 0.0,
             "cached_answers": usage[4] or 0, "tokens_cached": usage[5] or 0, "tokens_cache_written": usage[6] or 0},
            answered_by=usage[7] or "",
        )  # fmt: skip
