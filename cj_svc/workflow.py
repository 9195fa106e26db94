"""The durable assessment workflow: waves of comparisons, judged concurrently, until the engine stops.

Everything that matters is in the database, so a restart resumes every unfinished batch:
- a comparison row is written (PENDING) before its pair is sent to the judge, and updated when the
  answer comes (only while still PENDING, so an answer is recorded once);
- after each wave the engine fits scores and decides whether to go on;
- finalization writes the results and moves FINALIZING -> COMPLETED in one transaction, so it
  happens exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import json
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from prometheus_client import Counter, Histogram
from sqlalchemy import ScalarSelect, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cj_svc.batches import EVERYONE, Batches, BatchView, Caller, failure_counts, transition
from cj_svc.content_client import ContentClient
from cj_svc.engine.bradley_terry import (
    Comparisons,
    Fit,
    fit,
    judge_position_bias,
    scale_separation_reliability,
    self_consistency,
)
from cj_svc.engine.diagnostics import Diagnostics
from cj_svc.engine.grading import Grades, decided_share, grade
from cj_svc.engine.pairing import PairingState, next_wave
from cj_svc.engine.prior import PriorChoice
from cj_svc.engine.scales import get_scale
from cj_svc.engine.stopping import BatchProgress, StoppingRules, StopReason, decide
from cj_svc.judges.base import JudgeError, JudgeRequest
from cj_svc.judges.factory import Judges
from cj_svc.leases import LeaseLost, Leases
from cj_svc.models import Batch, BatchEssay, BatchResult, Comparison, GradeProjection
from cj_svc.requests import RequestKey
from cj_svc.settings import CJSettings
from cj_svc.vocabulary import ANSWERED, BatchState, ComparisonStatus, Winner
from mesh_common import correlation
from mesh_common.ids import new_id
from mesh_server import database, errors

log = logging.getLogger("cj_svc.workflow")
T = TypeVar("T")

# How long CancelBatch waits for the batch's task to settle (its PENDING rows marked, its lease let go).
CANCEL_WAIT_SECONDS = 3.0
# A student's grade counts as decided at this probability unless the batch's GradeStop says otherwise.
DECIDED_PROBABILITY = 0.8
# How long a stopping service lets its batches reach a safe point before cutting them off.
STOP_GRACE_SECONDS = 2.0

COMPARISONS = Counter(
    "huleedu_cj_comparisons_total", "Comparisons answered, by outcome and error code.", ["outcome", "error_code"]
)
JUDGE_SECONDS = Histogram("huleedu_cj_judge_seconds", "Latency of one judge call.", ["provider"])
BATCH_SECONDS = Histogram(
    "huleedu_cj_batch_duration_seconds",
    "Submission to end of a batch.",
    ["state"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 14400),
)
CONTENT_ATTEMPTS = 6


ANSWER_COLUMNS = (
    "status", "winner", "confidence", "justification", "model", "tokens_in", "tokens_out", "latency_ms",
    "error_code", "error_message", "attempts", "completed_at",
)  # fmt: skip


# CPU-heavy engine work (fits, pairing, the prior's choice, projection) runs in this pool, off the
# event loop, so that no RPC of another client waits on it. Two threads: numpy's linear algebra
# releases the GIL, and each batch hands over one piece of work at a time, so the queue is bounded
# by the batches being worked.
_ENGINE = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="cj-engine")


async def off_loop(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_ENGINE, functools.partial(function, *args))


# The columns of a comparison that the wave loop reads (rows carry them as attributes).
WAVE_COLUMNS = (
    Comparison.comparison_id, Comparison.wave, Comparison.essay_a_id, Comparison.essay_b_id,
    Comparison.status, Comparison.winner, Comparison.attempts, Comparison.model,
)  # fmt: skip


@dataclass(frozen=True)
class _NewComparison:
    """A comparison just written, with the columns of WAVE_COLUMNS."""

    comparison_id: str
    wave: int
    essay_a_id: str
    essay_b_id: str
    status: str
    attempts: int
    model: str
    winner: str | None = None


@dataclass
class _Grades:
    projections: list[GradeProjection]
    note: str  # why there are none, when there are none
    bands: list[tuple[str, float | None, float | None]]
    diagnostics: Diagnostics | None  # None: a guest run, or no anchors to diagnose

    def stored_diagnostics(self) -> str | None:
        """The JSON kept with the results: the anchor diagnostics, warnings and whether grades are reliable."""
        if self.diagnostics is None:
            return None
        return json.dumps(
            {**asdict(self.diagnostics), "reliable": bool(self.projections) and self.diagnostics.reliable}
        )


@dataclass
class _Final:
    fit: Fit
    rank: np.ndarray
    wins: np.ndarray
    losses: np.ndarray
    grades: _Grades
    position_bias: float
    position_bias_se: float


class _Recorder:
    """Writes judged comparisons in groups (one transaction each time the batch loop wakes).

    A row is updated only while still PENDING, and the batch's counters are recounted from the rows
    in the same transaction, so an answer is counted exactly once. Answers not yet written when the
    process dies leave their rows PENDING: they are asked again on resume.
    """

    def __init__(self, sessions: async_sessionmaker, batch_id: str) -> None:
        self.sessions = sessions
        self.batch_id = batch_id
        self.waiting: list[tuple[str, dict]] = []

    def add(self, comparison_id: str, values: dict) -> None:
        self.waiting.append((comparison_id, values))

    async def flush(self) -> None:
        taken, self.waiting = self.waiting, []
        if not taken:
            return
        rows = [
            {"cid": comparison_id, **{f"new_{c}": values.get(c) for c in ANSWER_COLUMNS}}
            for comparison_id, values in taken
        ]
        table = Comparison.__table__

        async def transaction(session: AsyncSession) -> Any:
            await session.execute(  # one executemany for the whole group
                update(table)
                .where(table.c.comparison_id == bindparam("cid"), table.c.status == ComparisonStatus.PENDING)
                .values({c: bindparam(f"new_{c}") for c in ANSWER_COLUMNS}),
                rows,
            )

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
                    updated_at=datetime.now(UTC),
                )
            )

        await database.write(self.sessions, transaction)


class _Texts:
    """Essay texts fetched in the background, a group per BatchGet, and awaited by the comparisons
    that need them, so judging starts as soon as the first group has arrived. Retries while the
    Content Service is unavailable."""

    GROUP = 100

    def __init__(self, content: ContentClient, storage_ids: list[str]) -> None:
        self.content = content
        loop = asyncio.get_running_loop()
        self.fetches: dict[str, asyncio.Future[str]] = {i: loop.create_future() for i in storage_ids}
        wanted = list(self.fetches)
        self.task = asyncio.ensure_future(
            self._fetch_all([wanted[start : start + self.GROUP] for start in range(0, len(wanted), self.GROUP)])
        )

    def get(self, storage_id: str) -> asyncio.Future[str]:
        return self.fetches[storage_id]

    async def _fetch_all(self, groups: list[list[str]]) -> None:
        pending = collections.deque(groups)
        while pending:
            group = pending.popleft()
            try:
                for attempt in range(CONTENT_ATTEMPTS):
                    try:
                        found = await self.content.texts(group)
                        break
                    except errors.Unavailable:
                        if attempt == CONTENT_ATTEMPTS - 1:
                            raise
                        await asyncio.sleep(0.5 * 2**attempt)
            except errors.DataLoss as error:
                if len(group) == 1:
                    self.fetches[group[0]].set_exception(error)
                    continue
                # One damaged text fails the whole BatchGet: ask for each alone, so only it fails.
                pending.extendleft([storage_id] for storage_id in reversed(group))
                continue
            except errors.DomainError as error:
                for storage_id in group:
                    self.fetches[storage_id].set_exception(error)
                continue
            for storage_id in group:
                self.fetches[storage_id].set_result(found[storage_id])

    def close(self) -> None:
        self.task.cancel()
        for fetch in self.fetches.values():
            if fetch.done() and not fetch.cancelled():
                fetch.exception()  # retrieved: no "never retrieved" warning for texts nobody awaited
            fetch.cancel()


def _grade(batch: Batch, essays: list[BatchEssay], result: Fit, data: Comparisons) -> Grades:
    """What `grading.grade` finds for a batch with a grade scale, from a fit of its essays."""
    return grade(
        get_scale(batch.grade_scale or ""),
        [e.essay_id for e in essays],
        [(e.known_grade or "") if e.is_anchor else None for e in essays],
        result,
        data,
    )


class Workflow:
    def __init__(
        self, settings: CJSettings, sessions: async_sessionmaker, content: ContentClient, batches: Batches
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.content = content
        self.batches = batches
        self.judges = Judges(settings)
        self.service_limit = asyncio.Semaphore(settings.service_concurrency)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Set to ask a batch's task to stop at its next safe point (cancelled, lease lost, shutdown):
        # a task is never cut off in the middle of its work.
        self._stops: dict[str, asyncio.Event] = {}
        self._changes: dict[str, asyncio.Event] = {}
        # Replicas sharing a database must have distinct ids; a restarted process with the same id
        # takes its own leases back at once.
        self.replica_id = settings.replica_id or socket.gethostname()
        self.leases = Leases(sessions, self.replica_id, settings.lease_seconds)
        self._claimer: asyncio.Task[None] | None = None
        self.closing = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every unfinished batch that no other replica holds; from then on, look for batches
        whose lease expired (their replica died) a few times per lease period."""
        for batch_id in await self.leases.claim_free(limit=10_000):
            log.info("resuming batch %s", batch_id)
            self.launch(batch_id)
        self._claimer = asyncio.create_task(self._claim_expired(), name="claim-expired-batches")

    async def _claim_expired(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                claimed = await self.leases.claim_free()
            except (SQLAlchemyError, OSError) as error:
                log.warning("could not look for batches to take over: %s", error)
                continue
            for batch_id in claimed:
                if self.launch(batch_id):
                    log.info("taking over batch %s", batch_id)

    def launch(self, batch_id: str) -> bool:
        """Start working a batch unless this process already does; True when started."""
        if self.closing or (batch_id in self.tasks and not self.tasks[batch_id].done()):
            return False  # while stopping, a new batch waits for the next start (it stays PENDING)
        self._stops[batch_id] = asyncio.Event()
        self.tasks[batch_id] = asyncio.create_task(self._run(batch_id), name=f"batch-{batch_id}")
        return True

    def _ask_to_stop(self, batch_id: str) -> None:
        stop = self._stops.get(batch_id)
        if stop is not None:
            stop.set()

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Ask every batch to stop where it stands (answers already received are written, the
        judge calls in flight are dropped and asked again on resume); cut off what is still
        running after `grace`: its writes end first (see database.write)."""
        self.closing = True
        for change in self._changes.values():  # watchers wake up and end their streams
            change.set()
        if self._claimer is not None:
            self._claimer.cancel()
        for batch_id in self.tasks:
            self._ask_to_stop(batch_id)
        running = [task for task in self.tasks.values() if not task.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        await self.judges.close()

    async def cancel(
        self, batch_id: str, reason: str, caller: Caller = EVERYONE, request: RequestKey | None = None
    ) -> BatchView:
        """Cancel the batch (one short transaction) and ask its task to stop; wait a little for it
        to settle, without ever cutting it off (a cancelled RPC leaves the task to finish)."""
        view = await self.batches.cancel(batch_id, reason, caller, request)
        self._ask_to_stop(batch_id)
        task = self.tasks.get(batch_id)
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=CANCEL_WAIT_SECONDS)
        return view

    async def wait_for_change(self, batch_id: str, timeout: float) -> None:
        """Return when this process has changed the batch (progress or state), or after `timeout`
        (changes made by another replica are seen by looking again)."""
        change = self._changes.setdefault(batch_id, asyncio.Event())
        try:
            await asyncio.wait_for(change.wait(), timeout)
        except TimeoutError:
            pass

    def _changed(self, batch_id: str) -> None:
        change = self._changes.pop(batch_id, None)
        if change is not None:
            change.set()

    # -- one batch ---------------------------------------------------------------------------

    async def _run(self, batch_id: str) -> None:
        if not await self.leases.claim(batch_id):
            return  # another replica works it
        renewing = asyncio.create_task(self._renew(batch_id))
        try:
            async with self.sessions() as session:
                batch = await session.get(Batch, batch_id)
            if batch is not None:
                correlation.current.set(batch.correlation_id)
            await self._work_through_outages(batch_id)
            await self._settle_cancelled(batch_id)
        except asyncio.CancelledError:
            await self._settle_cancelled(batch_id)
            raise
        except LeaseLost as lost:
            log.warning("stopped working on batch %s: %s", batch_id, lost)
        except Exception as error:  # noqa: BLE001 - a batch that cannot go on fails with a reason
            log.exception("batch %s failed", batch_id)
            await self._fail(batch_id, f"{type(error).__name__}: {error}")
        finally:
            renewing.cancel()
            self._changed(batch_id)
            try:
                await self.leases.release(batch_id)
            except (SQLAlchemyError, OSError):
                pass  # the lease expires on its own

    async def _work_through_outages(self, batch_id: str) -> None:
        """Work the batch; when the database goes away, wait and resume (answers not yet written are
        asked again), instead of failing a batch that did nothing wrong."""
        delay = 0.5
        while True:
            try:
                await self._work(batch_id)
                return
            except (OperationalError, InterfaceError, OSError) as error:
                log.warning("batch %s: database unavailable (%s); resuming in %.1f s", batch_id, error, delay)
            except DBAPIError as error:
                if not error.connection_invalidated:
                    raise
                log.warning("batch %s: database connection lost; resuming in %.1f s", batch_id, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _renew(self, batch_id: str) -> None:
        """Keep the lease while the batch is worked; stop the work when another replica has it."""
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                await self.leases.renew(batch_id)
            except LeaseLost as lost:
                log.warning("%s; stopping here", lost)
                self._ask_to_stop(batch_id)
                return
            except (SQLAlchemyError, OSError) as error:
                log.warning("could not renew the lease of batch %s: %s", batch_id, error)

    async def _fail(self, batch_id: str, reason: str) -> None:
        async def transaction(session: AsyncSession) -> Any:
            if await transition(session, batch_id, BatchState.FAILED, reason, release=True):
                await self._observe_duration(session, batch_id, BatchState.FAILED)

        await database.write(self.sessions, transaction)

    async def _settle_cancelled(self, batch_id: str) -> None:
        """Comparisons sent but unanswered when a batch was cancelled are marked CANCELLED."""

        async def transaction(session: AsyncSession) -> Any:
            batch = await session.get(Batch, batch_id)
            if batch is not None and batch.state == BatchState.CANCELLED:
                await session.execute(
                    update(Comparison)
                    .where(Comparison.batch_id == batch_id, Comparison.status == ComparisonStatus.PENDING)
                    .values(status=ComparisonStatus.CANCELLED, completed_at=datetime.now(UTC))
                )
                await self._observe_duration(session, batch_id, BatchState.CANCELLED)

        await database.write(self.sessions, transaction)

    async def _observe_duration(self, session: AsyncSession, batch_id: str, state: BatchState) -> None:
        batch = await session.get(Batch, batch_id)
        created = batch.created_at if batch.created_at.tzinfo else batch.created_at.replace(tzinfo=UTC)
        BATCH_SECONDS.labels(state).observe((datetime.now(UTC) - created).total_seconds())

    async def _work(self, batch_id: str) -> None:
        async def transaction(session: AsyncSession) -> Any:
            await transition(session, batch_id, BatchState.RUNNING)

        await database.write(self.sessions, transaction)
        batch, essays = await self._load(batch_id)
        if batch.state == BatchState.FINALIZING:
            await self._finalize(batch_id)
            return
        if batch.state != BatchState.RUNNING:
            return
        texts = _Texts(self.content, [e.text_storage_id for e in essays])
        position = {e.essay_id: e.position for e in essays}
        is_anchor = np.array([e.is_anchor for e in essays])
        rng = np.random.default_rng(batch.seed if batch.seed is not None else int(batch_id[:8], 16))
        # A seeded batch plans each wave from complete waves only, so that timing cannot change it.
        reproducible = batch.seed is not None
        recorder = _Recorder(self.sessions, batch_id)
        # Waves overlap: the next one is queued as soon as the judge slots can take more, pairing
        # only essays that are not being judged right now, so slow tails do not idle the judge.
        inflight: dict[str, asyncio.Task[None]] = {}
        limit = asyncio.Semaphore(self.settings.batch_concurrency)
        # Keep a backlog of comparisons queued behind the judge slots, so that a slot that frees up
        # is refilled at once while this loop records, fits and plans the next wave.
        refill_at = max(1, self.settings.batch_concurrency + self.settings.batch_concurrency // 2)
        previous: np.ndarray | None = None
        # The prior's width is re-chosen each time a wave is fully answered (after a restart, the
        # waves answered before are replayed first).
        prior, fed = PriorChoice(len(essays)), 0
        # Stopping for decided grades: for batches with anchors, unless the request turned it off.
        rules = StoppingRules(decided_share=batch.grade_stop_share or StoppingRules.decided_share)
        decided_at = batch.grade_stop_probability or DECIDED_PROBABILITY
        by_grades = bool(batch.grade_scale) and bool(is_anchor.any()) and not batch.grade_stop_off
        stop = self._stops.setdefault(batch_id, asyncio.Event())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                if stop.is_set():
                    return
                batch, rows = await self._batch_and_comparisons(batch_id)
                if batch.state != BatchState.RUNNING:
                    return
                orphans = [r for r in rows if r.status == ComparisonStatus.PENDING and r.comparison_id not in inflight]
                if orphans:  # sent before a restart, never answered: ask again
                    self._start(batch, orphans, texts, essays, limit, recorder, inflight)
                fed = await off_loop(self._feed_prior, prior, rows, position, fed)
                # The answers once per wave, for the fit and the grades alike.
                data = await off_loop(self._comparisons, rows, position)
                result = await off_loop(self._fit, len(essays), data, previous, prior.alpha)
                change = None
                if result is not None:
                    if previous is not None:
                        change = float(np.max(np.abs(result.scores - previous)))
                    previous = result.scores
                    await self._record_fit(batch_id, essays, result, change)
                decided = None
                if by_grades and result is not None:
                    decided = await off_loop(self._decided, batch, essays, result, data, decided_at)
                attempted = sum(r.status in ANSWERED for r in rows)
                succeeded = sum(r.status == ComparisonStatus.DONE for r in rows)
                reason = decide(
                    BatchProgress(
                        essays=len(essays), attempted=attempted, succeeded=succeeded, budget=batch.comparison_budget,
                        max_score_change=change,
                        ssr=None if result is None else scale_separation_reliability(result.scores, result.standard_errors),
                        decided=decided,
                    ),
                    rules,
                )  # fmt: skip
                if reason == StopReason.CONTINUE and len(inflight) <= (0 if reproducible else refill_at):
                    busy = {position[r.essay_a_id] for r in rows if r.comparison_id in inflight}
                    busy |= {position[r.essay_b_id] for r in rows if r.comparison_id in inflight}
                    wave = await off_loop(
                        self._next_wave,
                        len(essays), is_anchor, rows, position, result, rng, batch.comparison_budget - len(rows), busy,
                    )  # fmt: skip
                    if wave:
                        new_rows = await self._write_wave(batch, wave, essays)
                        self._start(batch, new_rows, texts, essays, limit, recorder, inflight)
                    elif not inflight:
                        reason = StopReason.EXHAUSTED
                if reason != StopReason.CONTINUE and not inflight:
                    if reason == StopReason.TOO_MANY_FAILURES:
                        await self._fail(batch_id, await self._failure_reason(batch_id, attempted, succeeded))
                    elif succeeded == 0:
                        await self._fail(batch_id, "no comparison succeeded")
                    else:
                        log.info("batch %s stops: %s", batch_id, reason.value)
                        await self._finalize(batch_id, reason.value, prior.alpha)
                    return
                # Wait for at least one answer (for all of them once the batch is stopping).
                goal = min(refill_at, len(inflight) - 1) if reason == StopReason.CONTINUE and not reproducible else 0
                while inflight and len(inflight) > goal and not stop.is_set():
                    await asyncio.wait([*inflight.values(), stopping], return_when=asyncio.FIRST_COMPLETED)
                    for task in [t for t in inflight.values() if t.done()]:
                        task.result()  # a judging task that crashed fails the batch
                    inflight = {cid: t for cid, t in inflight.items() if not t.done()}
                await recorder.flush()
                self._changed(batch_id)
        finally:
            stopping.cancel()
            for task in inflight.values():
                task.cancel()
            await asyncio.gather(*inflight.values(), return_exceptions=True)
            texts.close()

    def _start(
        self,
        batch: Batch,
        rows: Sequence[Comparison | _NewComparison],
        texts: _Texts,
        essays: list[BatchEssay],
        limit: asyncio.Semaphore,
        recorder: _Recorder,
        inflight: dict[str, asyncio.Task[None]],
    ) -> None:
        """Judge rows in background tasks; their answers go to the recorder."""
        storage = {e.essay_id: e.text_storage_id for e in essays}

        async def one(row: Comparison) -> None:
            async with limit, self.service_limit:
                temperature = batch.judge_temperature
                request = JudgeRequest(
                    essay_a=await texts.get(storage[row.essay_a_id]), essay_b=await texts.get(storage[row.essay_b_id]),
                    prompt=batch.prompt_text, instructions=batch.instructions, model=batch.judge_model,
                    temperature=self.settings.judge_temperature if temperature is None else temperature,
                    max_tokens=batch.judge_max_tokens or self.settings.judge_max_tokens,
                    system_prompt=batch.judge_system_prompt,
                )  # fmt: skip
                recorder.add(row.comparison_id, await self._judge(batch, row, request))

        for row in rows:
            inflight[row.comparison_id] = asyncio.create_task(one(row))

    async def _load(self, batch_id: str) -> tuple[Batch, list[BatchEssay]]:
        async with self.sessions() as session:
            batch = await session.get(Batch, batch_id)
            query = select(BatchEssay).where(BatchEssay.batch_id == batch_id).order_by(BatchEssay.position)
            return batch, list((await session.execute(query)).scalars())

    async def _batch_and_comparisons(self, batch_id: str) -> tuple[Batch, list[Comparison]]:
        """The batch and what the wave loop needs of its comparisons, as plain rows: building ORM
        objects for tens of thousands of rows would hold the event loop for every other client."""
        async with self.sessions() as session:
            batch = await session.get(Batch, batch_id)
            # In a fixed order (one pair per essay and wave): sums over the rows, and so the fits, do
            # not depend on the order the database returns them in.
            query = (
                select(*WAVE_COLUMNS)
                .where(Comparison.batch_id == batch_id)
                .order_by(Comparison.wave, Comparison.essay_a_id, Comparison.essay_b_id)
            )
            rows = list((await session.execute(query)).all())
        return batch, rows  # type: ignore[return-value]

    @staticmethod
    def _comparisons(rows: list[Comparison], position: dict[str, int]) -> Comparisons:
        done = [r for r in rows if r.status == ComparisonStatus.DONE]
        return Comparisons.from_lists(
            [position[r.essay_a_id] for r in done],
            [position[r.essay_b_id] for r in done],
            [r.winner == Winner.ESSAY_A for r in done],
        )

    @staticmethod
    def _fit(n: int, data: Comparisons, start: np.ndarray | None, alpha: float) -> Fit | None:
        return fit(n, data, alpha, start=start) if len(data) else None

    @classmethod
    def _feed_prior(cls, prior: PriorChoice, rows: list[Comparison], position: dict[str, int], fed: int) -> int:
        """Add every fully answered wave after wave `fed` to the prior choice, in order; returns the
        last wave added."""
        pending = {r.wave for r in rows if r.status == ComparisonStatus.PENDING}
        for wave in sorted({r.wave for r in rows if r.wave > fed}):
            if wave in pending:
                break
            prior.add_wave(cls._comparisons([r for r in rows if r.wave == wave], position))
            fed = wave
        return fed

    def _next_wave(
        self,
        n: int,
        is_anchor: np.ndarray,
        rows: list[Comparison],
        position: dict[str, int],
        result: Fit | None,
        rng: np.random.Generator,
        remaining: int,
        busy: set[int],
    ) -> list[tuple[int, int]]:
        if remaining <= 0:
            return []
        state = PairingState.new(n, is_anchor)
        for row in rows:  # in wave order (see _batch_and_comparisons)
            if row.status != ComparisonStatus.CANCELLED:
                state.record(position[row.essay_a_id], position[row.essay_b_id])
        if result is not None:
            state.scores, state.standard_errors = result.scores, result.standard_errors
            state.covariance = result.covariance
        return next_wave(state, rng, max_pairs=remaining, busy=busy)

    async def _record_fit(self, batch_id: str, essays: list[BatchEssay], result: Fit, change: float | None) -> None:
        ssr = scale_separation_reliability(result.scores, result.standard_errors)
        scores = [
            {
                "id": e.id,
                "score": float(result.scores[e.position]),
                "standard_error": float(result.standard_errors[e.position]),
            }
            for e in essays
        ]

        async def transaction(session: AsyncSession) -> Any:
            await session.execute(update(BatchEssay), scores)  # one executemany by primary key
            await session.execute(
                update(Batch)
                .where(Batch.batch_id == batch_id)
                .values(current_ssr=ssr, max_score_change=change, updated_at=datetime.now(UTC))
            )

        await database.write(self.sessions, transaction)

    async def _write_wave(self, batch: Batch, wave: list[tuple[int, int]], essays: list[BatchEssay]) -> list[Any]:
        """Store a wave's comparisons as PENDING (one executemany, no ORM objects: a wave of a
        national cohort has thousands); returns them as rows like those the wave loop reads."""
        now = datetime.now(UTC)
        number = batch.wave + 1
        values = [
            {"comparison_id": new_id(), "batch_id": batch.batch_id, "wave": number, "essay_a_id": essays[a].essay_id,
             "essay_b_id": essays[b].essay_id, "status": ComparisonStatus.PENDING, "attempts": 0,
             "request_correlation_id": batch.correlation_id, "provider": batch.judge_provider,
             "model": batch.judge_model, "created_at": now, "replica_id": self.replica_id}
            for a, b in wave
        ]  # fmt: skip

        async def transaction(session: AsyncSession) -> Any:
            await session.execute(insert(Comparison), values)
            # Fenced by the lease: a replica that lost the batch writes no new comparisons.
            owned = await session.execute(
                update(Batch)
                .where(Batch.batch_id == batch.batch_id, Batch.lease_owner == self.replica_id)
                .values(wave=number, updated_at=now)
            )
            if owned.rowcount != 1:
                raise LeaseLost(f"batch {batch.batch_id} is no longer leased to {self.replica_id}")  # rolls back

        await database.write(self.sessions, transaction)
        return [_NewComparison(**{c.key: v[c.key] for c in WAVE_COLUMNS if c.key in v}) for v in values]

    async def _judge(self, batch: Batch, row: Comparison, request: JudgeRequest) -> dict:
        """Ask the judge, retrying retryable failures with backoff; the row's new values."""
        judge = self.judges.get(batch.judge_provider)
        attempts = row.attempts
        while True:
            attempts += 1
            started = time.perf_counter()
            try:
                verdict = await judge.compare(request)
            except JudgeError as error:
                if error.retryable and attempts < self.settings.max_attempts:
                    await asyncio.sleep(
                        self.settings.retry_base_seconds * 2 ** (attempts - 1) * (0.5 + random.random())
                    )
                    continue
                COMPARISONS.labels("failed", error.error_code).inc()
                return {"status": ComparisonStatus.FAILED, "error_code": error.error_code, "error_message": error.message[:2000],
                        "model": row.model, "attempts": attempts, "completed_at": datetime.now(UTC)}  # fmt: skip
            latency = (time.perf_counter() - started) * 1000
            JUDGE_SECONDS.labels(judge.provider).observe(latency / 1000)
            COMPARISONS.labels("done", "").inc()
            return {
                "status": ComparisonStatus.DONE, "winner": verdict.winner,
                "confidence": verdict.confidence, "justification": verdict.justification, "model": verdict.model,
                "tokens_in": verdict.tokens_in, "tokens_out": verdict.tokens_out, "latency_ms": latency,
                "attempts": attempts, "completed_at": datetime.now(UTC),
            }  # fmt: skip

    async def _failure_reason(self, batch_id: str, attempted: int, succeeded: int) -> str:
        async with self.sessions() as session:
            failures = await failure_counts(session, batch_id)
        codes = ", ".join(f"{code} x{count}" for code, count in failures.most_common())
        return (
            f"too few comparisons succeeded: {succeeded} of {attempted} (errors: {codes}); check the judge's "
            "configuration (provider, model, API key) and retry with a new request"
        )

    # -- finalization --------------------------------------------------------------------------

    async def _finalize(self, batch_id: str, why: str = "", alpha: float | None = None) -> None:
        """Final scores, ranks and grades; `alpha` is the prior the workflow chose (after a restart,
        the choice is replayed from the stored answers)."""

        async def transaction(session: AsyncSession) -> Any:
            await transition(session, batch_id, BatchState.FINALIZING, f"stopped: {why}" if why else None)

        await database.write(self.sessions, transaction)
        batch, essays = await self._load(batch_id)
        if batch.state != BatchState.FINALIZING:
            return
        _, rows = await self._batch_and_comparisons(batch_id)
        position = {e.essay_id: e.position for e in essays}
        data = self._comparisons(rows, position)
        if alpha is None:
            waves = np.array([r.wave for r in rows if r.status == ComparisonStatus.DONE], np.int64)
            alpha = (await off_loop(PriorChoice.replay, len(essays), data, waves)).alpha
        final = await off_loop(self._final_numbers, batch, essays, data, alpha)
        result, rank, wins, losses = final.fit, final.rank, final.wins, final.losses
        projections, note = final.grades.projections, final.grades.note
        position_bias, position_bias_se = final.position_bias, final.position_bias_se
        now = datetime.now(UTC)

        async def store_results(session: AsyncSession) -> Any:
            await session.execute(delete(GradeProjection).where(GradeProjection.batch_id == batch_id))
            await session.execute(delete(BatchResult).where(BatchResult.batch_id == batch_id))
            await session.execute(  # one executemany by primary key
                update(BatchEssay),
                [
                    {"id": e.id, "score": float(result.scores[e.position]),
                     "standard_error": float(result.standard_errors[e.position]), "rank": int(rank[e.position]),
                     "wins": int(wins[e.position]), "losses": int(losses[e.position])}
                    for e in essays
                ],
            )  # fmt: skip
            session.add(
                BatchResult(
                    batch_id=batch_id,
                    scale_separation_reliability=scale_separation_reliability(result.scores, result.standard_errors),
                    position_bias=position_bias, position_bias_se=position_bias_se,
                    self_consistency=self_consistency(data), grade_scale=batch.grade_scale,
                    grades_projected=bool(projections), projection_note=note, created_at=now,
                    grade_bands=json.dumps(final.grades.bands) if projections else None,
                    diagnostics=final.grades.stored_diagnostics(),
                )
            )  # fmt: skip
            session.add_all(projections)
            await session.execute(
                update(Batch).where(Batch.batch_id == batch_id).values(
                    current_ssr=scale_separation_reliability(result.scores, result.standard_errors)
                )
            )  # fmt: skip
            if not await transition(session, batch_id, BatchState.COMPLETED, release=True):
                raise RuntimeError("batch left FINALIZING while its results were computed")  # rolls back
            await self._observe_duration(session, batch_id, BatchState.COMPLETED)

        await database.write(self.sessions, store_results)

    @classmethod
    def _final_numbers(cls, batch: Batch, essays: list[BatchEssay], data: Comparisons, alpha: float) -> _Final:
        """The final fit and all that follows from it (CPU-heavy: run off the event loop)."""
        result = fit(len(essays), data, alpha)
        order = np.argsort(-result.scores, kind="stable")
        rank = np.empty(len(essays), int)
        rank[order] = np.arange(1, len(essays) + 1)
        grades = cls._projections(batch, essays, result, data)
        position_bias, position_bias_se = judge_position_bias(result, data)
        return _Final(
            grades=grades,
            fit=result,
            rank=rank,
            wins=np.bincount(np.where(data.first_won, data.first, data.second), minlength=len(essays)),
            losses=np.bincount(np.where(data.first_won, data.second, data.first), minlength=len(essays)),
            position_bias=position_bias,
            position_bias_se=position_bias_se,
        )

    @staticmethod
    def _decided(
        batch: Batch, essays: list[BatchEssay], result: Fit, data: Comparisons, probability: float
    ) -> float | None:
        """Share of the students whose grade is decided at `probability` now (see stopping.py)."""
        return decided_share(_grade(batch, essays, result, data), probability)

    @staticmethod
    def _projections(batch: Batch, essays: list[BatchEssay], result: Fit, data: Comparisons) -> _Grades:
        """Students' grades as rows to store, with what `grading.grade` found (bands, diagnostics)."""
        if not batch.grade_scale:
            return _Grades([], "guest run: no assignment, so no grades are projected", [], None)
        found = _grade(batch, essays, result, data)
        rows = [
            GradeProjection(
                batch_id=batch.batch_id, essay_id=essays[position].essay_id, grade=projection.grade,
                probabilities=json.dumps(projection.probabilities), confidence=projection.confidence,
                confidence_label=projection.label,
            )
            for position, projection in found.projections.items()
        ]  # fmt: skip
        return _Grades(rows, found.note, found.bands, found.diagnostics)
