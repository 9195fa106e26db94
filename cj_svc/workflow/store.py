"""The SQL of a batch's run: its rows read, its answers, fits and waves written, its ends recorded.

Every write is one short transaction (`database.write`), so a run cut off anywhere leaves the
database consistent: a comparison is written PENDING before it is judged and updated once, while
still PENDING, when its answer comes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from prometheus_client import Histogram
from sqlalchemy import ScalarSelect, Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cj_svc.batches import failure_counts, transition
from cj_svc.engine.bradley_terry import Comparisons, Fit
from cj_svc.leases import LeaseLost
from cj_svc.models import Batch, BatchEssay, Comparison, Judgement
from cj_svc.vocabulary import BatchState, ComparisonStatus, Winner
from mesh_common.ids import new_id
from mesh_server import database

BATCH_SECONDS = Histogram(
    "huleedu_cj_batch_duration_seconds",
    "Submission to end of a batch.",
    ["state"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 14400),
)

ANSWER_COLUMNS = (
    "status", "winner", "confidence", "justification", "model", "tokens_in", "tokens_out", "tokens_cached",
    "tokens_cache_written", "cost_usd", "cached", "latency_ms", "error_code", "error_message", "attempts",
    "completed_at",
)  # fmt: skip

# The columns of a comparison that the wave loop reads (rows carry them as attributes).
WAVE_COLUMNS = (
    Comparison.comparison_id, Comparison.wave, Comparison.essay_a_id, Comparison.essay_b_id,
    Comparison.status, Comparison.winner, Comparison.attempts, Comparison.model, Comparison.provider_batch_id,
)  # fmt: skip


class ComparisonRow(Protocol):
    """A comparison as the wave loop reads it: the columns of WAVE_COLUMNS."""

    @property
    def comparison_id(self) -> str: ...
    @property
    def wave(self) -> int: ...
    @property
    def essay_a_id(self) -> str: ...
    @property
    def essay_b_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def winner(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def model(self) -> str | None: ...
    @property
    def provider_batch_id(self) -> str | None: ...


@dataclass(frozen=True)
class NewComparison:
    """A comparison just written (a ComparisonRow)."""

    comparison_id: str
    wave: int
    essay_a_id: str
    essay_b_id: str
    status: str
    attempts: int
    model: str | None
    winner: str | None = None
    provider_batch_id: str | None = None


def score_rows(essays: list[BatchEssay], result: Fit) -> list[dict[str, Any]]:
    """Each essay's row update (by primary key): its score, standard error and 95 % interval."""
    low, high = result.interval_95()
    return [
        {
            "id": e.id,
            "score": float(result.scores[e.position]),
            "standard_error": float(result.standard_errors[e.position]),
            "score_low_95": float(low[e.position]),
            "score_high_95": float(high[e.position]),
        }
        for e in essays
    ]


def answered(rows: list[ComparisonRow], position: dict[str, int]) -> Comparisons:
    """The answered comparisons of `rows`, as the engine takes them (essays by position)."""
    done = [r for r in rows if r.status == ComparisonStatus.DONE]
    return Comparisons.from_lists(
        [position[r.essay_a_id] for r in done],
        [position[r.essay_b_id] for r in done],
        [r.winner == Winner.ESSAY_A for r in done],
    )


class Recorder:
    """Writes judged comparisons in groups (one transaction each time the batch loop wakes).

    A row is updated only while still PENDING, and the batch's counters are recounted from the rows
    in the same transaction, so an answer is counted exactly once. Answers not yet written when the
    process dies leave their rows PENDING: they are asked again on resume.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], batch_id: str) -> None:
        self.sessions = sessions
        self.batch_id = batch_id
        self.waiting: list[tuple[str, dict[str, Any]]] = []

    def add(self, comparison_id: str, values: dict[str, Any]) -> None:
        self.waiting.append((comparison_id, values))

    async def flush(self) -> None:
        taken, self.waiting = self.waiting, []
        if not taken:
            return
        rows = [
            {"cid": comparison_id, **{f"new_{c}": values.get(c) for c in ANSWER_COLUMNS},
             "new_cached": bool(values.get("cached"))}
            for comparison_id, values in taken
        ]  # fmt: skip
        # Answers the judge was paid for, kept for reuse in the same transaction as their rows.
        now = datetime.now(UTC)
        kept = [
            {"judgement_key": values["judgement_key"], "winner": values["winner"], "confidence": values["confidence"],
             "justification": values["justification"], "model": values["model"] or "", "created_at": now}
            for _, values in taken
            if values.get("judgement_key") and values["status"] == ComparisonStatus.DONE
        ]  # fmt: skip
        table = cast("Table", Comparison.__table__)  # Core, not the ORM's bulk update by primary key

        async def transaction(session: AsyncSession) -> None:
            await session.execute(  # one executemany for the whole group
                update(table)
                .where(table.c.comparison_id == bindparam("cid"), table.c.status == ComparisonStatus.PENDING)
                .values({c: bindparam(f"new_{c}") for c in ANSWER_COLUMNS}),
                rows,
            )
            if kept:
                await database.insert_new(session, Judgement, kept)

            def counted(status: str) -> ScalarSelect[int]:
                return (
                    select(func.count())
                    .select_from(Comparison)
                    .where(Comparison.batch_id == self.batch_id, Comparison.status == status)
                    .scalar_subquery()
                )

            await session.execute(
                update(Batch)
                .where(Batch.batch_id == self.batch_id)
                .values(
                    comparisons_done=counted(ComparisonStatus.DONE),
                    comparisons_failed=counted(ComparisonStatus.FAILED),
                    cost_usd=select(func.sum(Comparison.cost_usd))
                    .where(Comparison.batch_id == self.batch_id)
                    .scalar_subquery(),
                    updated_at=now,
                )
            )

        await database.write(self.sessions, transaction)


@dataclass(frozen=True)
class RunStore:
    sessions: async_sessionmaker[AsyncSession]
    replica_id: str

    def recorder(self, batch_id: str) -> Recorder:
        return Recorder(self.sessions, batch_id)

    async def move(self, batch_id: str, state: BatchState, reason: str | None = None) -> None:
        """The batch to `state`, if its state allows it (see vocabulary.ALLOWED_FROM)."""

        async def change(session: AsyncSession) -> None:
            await transition(session, batch_id, state, reason)

        await database.write(self.sessions, change)

    async def load(self, batch_id: str) -> tuple[Batch, list[BatchEssay]]:
        async with self.sessions() as session:
            batch = await session.get(Batch, batch_id)
            if batch is None:
                raise LookupError(f"batch {batch_id} is not in the database")
            query = select(BatchEssay).where(BatchEssay.batch_id == batch_id).order_by(BatchEssay.position)
            return batch, list((await session.execute(query)).scalars())

    async def batch_and_comparisons(self, batch_id: str) -> tuple[Batch, list[ComparisonRow]]:
        """The batch and what the wave loop needs of its comparisons, as plain rows: building ORM
        objects for tens of thousands of rows would hold the event loop for every other client."""
        async with self.sessions() as session:
            batch = await session.get(Batch, batch_id)
            if batch is None:
                raise LookupError(f"batch {batch_id} is not in the database")
            # In a fixed order (one pair per essay and wave): sums over the rows, and so the fits, do
            # not depend on the order the database returns them in.
            query = (
                select(*WAVE_COLUMNS)
                .where(Comparison.batch_id == batch_id)
                .order_by(Comparison.wave, Comparison.essay_a_id, Comparison.essay_b_id)
            )
            rows = list((await session.execute(query)).all())
        # Result rows carry WAVE_COLUMNS as attributes; the ORM types them as plain rows.
        return batch, cast("list[ComparisonRow]", rows)

    async def record_fit(self, batch_id: str, essays: list[BatchEssay], result: Fit, change: float | None) -> None:
        ssr = result.reliability()
        scores = score_rows(essays, result)

        async def transaction(session: AsyncSession) -> None:
            await session.execute(update(BatchEssay), scores)  # one executemany by primary key
            await session.execute(
                update(Batch)
                .where(Batch.batch_id == batch_id)
                .values(current_ssr=ssr, max_score_change=change, updated_at=datetime.now(UTC))
            )

        await database.write(self.sessions, transaction)

    async def write_wave(
        self, batch: Batch, wave: list[tuple[int, int]], essays: list[BatchEssay]
    ) -> list[ComparisonRow]:
        """Store a wave's comparisons as PENDING (one executemany, no ORM objects: a wave of a
        national cohort has thousands); returns them as rows like those the wave loop reads."""
        now = datetime.now(UTC)
        number = batch.wave + 1
        rows = [
            NewComparison(new_id(), number, essays[a].essay_id, essays[b].essay_id, ComparisonStatus.PENDING, 0,
                          batch.judge_model)
            for a, b in wave
        ]  # fmt: skip
        values = [
            {**asdict(row), "batch_id": batch.batch_id, "request_correlation_id": batch.correlation_id,
             "provider": batch.judge_provider, "created_at": now, "replica_id": self.replica_id}
            for row in rows
        ]  # fmt: skip

        async def transaction(session: AsyncSession) -> None:
            await session.execute(insert(Comparison), values)
            # Fenced by the lease: a replica that lost the batch writes no new comparisons.
            owned = await session.execute(
                update(Batch)
                .where(Batch.batch_id == batch.batch_id, Batch.lease_owner == self.replica_id)
                .values(wave=number, updated_at=now)
            )
            if database.changed_rows(owned) != 1:
                raise LeaseLost(f"batch {batch.batch_id} is no longer leased to {self.replica_id}")  # rolls back

        await database.write(self.sessions, transaction)
        return list(rows)

    async def sent_in_job(self, job_id: str, attempts: dict[str, int]) -> None:
        """Remember the provider's batch job that PENDING comparisons (id -> attempts so far) were
        sent in, so that after a restart the job is polled again, not paid for again."""
        table = cast("Table", Comparison.__table__)

        async def transaction(session: AsyncSession) -> None:
            await session.execute(
                update(table)
                .where(table.c.comparison_id == bindparam("cid"), table.c.status == ComparisonStatus.PENDING)
                .values(provider_batch_id=job_id, attempts=bindparam("sent")),
                [{"cid": cid, "sent": sent} for cid, sent in attempts.items()],
            )

        await database.write(self.sessions, transaction)

    async def failure_reason(self, batch_id: str, attempted: int, succeeded: int) -> str:
        async with self.sessions() as session:
            failures = await failure_counts(session, batch_id)
        codes = ", ".join(f"{code} x{count}" for code, count in failures.most_common())
        return (
            f"too few comparisons succeeded: {succeeded} of {attempted} (errors: {codes}); check the judge's "
            "configuration (provider, model, API key) and retry with a new request"
        )

    async def fail(self, batch_id: str, reason: str) -> None:
        """The batch FAILED with `reason`, its lease let go in the same write."""

        async def transaction(session: AsyncSession) -> None:
            if await transition(session, batch_id, BatchState.FAILED, reason, release=True):
                await observe_duration(session, batch_id, BatchState.FAILED)

        await database.write(self.sessions, transaction)

    async def settle_cancelled(self, batch_id: str) -> tuple[str, set[str]]:
        """Comparisons sent but unanswered when a batch was cancelled are marked CANCELLED; the
        batch's judge provider and the provider batch jobs those comparisons were waiting on."""

        async def transaction(session: AsyncSession) -> tuple[str, set[str]]:
            batch = await session.get(Batch, batch_id)
            if batch is None or batch.state != BatchState.CANCELLED:
                return "", set()
            pending = (Comparison.batch_id == batch_id, Comparison.status == ComparisonStatus.PENDING)
            jobs = await session.execute(
                select(Comparison.provider_batch_id)
                .distinct()
                .where(*pending, Comparison.provider_batch_id.is_not(None))
            )
            waited_on = {str(job) for job in jobs.scalars()}
            await session.execute(
                update(Comparison)
                .where(*pending)
                .values(status=ComparisonStatus.CANCELLED, completed_at=datetime.now(UTC))
            )
            await observe_duration(session, batch_id, BatchState.CANCELLED)
            return batch.judge_provider, waited_on

        return await database.write(self.sessions, transaction)


async def observe_duration(session: AsyncSession, batch_id: str, state: BatchState) -> None:
    """Submission to end of the batch, into BATCH_SECONDS."""
    batch = await session.get(Batch, batch_id)
    if batch is None:
        return
    created = batch.created_at if batch.created_at.tzinfo else batch.created_at.replace(tzinfo=UTC)
    BATCH_SECONDS.labels(state).observe((datetime.now(UTC) - created).total_seconds())
