"""One batch's run: waves of comparisons judged concurrently, a fit after each, until the engine
says stop; then the batch is finalized (or failed, with a reason)."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cj_svc.content_client import ContentClient
from cj_svc.engine.bradley_terry import Alpha, Comparisons, Fit, fit
from cj_svc.engine.pairing import PairingState, next_wave
from cj_svc.engine.prior import PriorChoice
from cj_svc.engine.stopping import BatchProgress, StoppingRules, StopReason, affordable, decide, weighs_quality
from cj_svc.judges.base import JudgeRequest
from cj_svc.models import Batch, BatchEssay
from cj_svc.settings import CJSettings
from cj_svc.vocabulary import ANSWERED, BatchState, ComparisonStatus, JudgeMode
from cj_svc.workflow.finalize import decided, finalize
from cj_svc.workflow.jobs import Jobs
from cj_svc.workflow.judging import Judging, Texts
from cj_svc.workflow.offload import off_loop
from cj_svc.workflow.store import ComparisonRow, Recorder, RunStore, answered

log = logging.getLogger("cj_svc.workflow")

# A student's grade counts as decided at this probability unless the batch's GradeStop says otherwise.
DECIDED_PROBABILITY = 0.8


@dataclass(frozen=True)
class RunContext:
    """What every run of this process shares."""

    settings: CJSettings
    store: RunStore
    judging: Judging
    content: ContentClient
    changed: Callable[[str], None]  # tells watchers of a batch that it changed


def fitted(n: int, data: Comparisons, start: NDArray[np.float64] | None, alpha: Alpha) -> Fit | None:
    return fit(n, data, alpha, start=start) if len(data) else None


def feed_prior(prior: PriorChoice, rows: list[ComparisonRow], position: dict[str, int], fed: int) -> int:
    """Add every fully answered wave after wave `fed` to the prior choice, in order; returns the
    last wave added."""
    pending = {r.wave for r in rows if r.status == ComparisonStatus.PENDING}
    for wave in sorted({r.wave for r in rows if r.wave > fed}):
        if wave in pending:
            break
        prior.add_wave(answered([r for r in rows if r.wave == wave], position))
        fed = wave
    return fed


def occurrences(rows: Sequence[ComparisonRow], asked: Sequence[ComparisonRow]) -> dict[str, int]:
    """For each of `rows`, how many rows of `asked` (every row of the batch, these included) asked
    earlier (by wave, then id) show the same two essays in the same order: a repeated question is
    a new one, not a kept answer (see cj_svc.judgements)."""
    wanted = {(r.essay_a_id, r.essay_b_id) for r in rows}
    same = sorted((r for r in asked if (r.essay_a_id, r.essay_b_id) in wanted), key=lambda r: (r.wave, r.comparison_id))
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    counts = {}
    for row in same:
        counts[row.comparison_id] = seen[(row.essay_a_id, row.essay_b_id)]
        seen[(row.essay_a_id, row.essay_b_id)] += 1
    return counts


def planned_wave(
    is_anchor: NDArray[np.bool_],
    rows: list[ComparisonRow],
    position: dict[str, int],
    result: Fit | None,
    rng: np.random.Generator,
    remaining: int,
    busy: set[int],
) -> list[tuple[int, int]]:
    """The next pairs (positions of essays), given every comparison asked so far."""
    if remaining <= 0:
        return []
    state = PairingState.new(len(is_anchor), is_anchor)
    for row in rows:  # in wave order (see RunStore.batch_and_comparisons)
        if row.status != ComparisonStatus.CANCELLED:
            state.record(position[row.essay_a_id], position[row.essay_b_id])
    if result is not None:
        state.scores, state.standard_errors = result.scores, result.standard_errors
        state.covariance = result.covariance
    return next_wave(state, rng, max_pairs=remaining, busy=busy)


class BatchRun:
    """One batch worked by this process: its essays and their texts, the answers waiting to be
    recorded, the judge calls in flight, and the wave loop that drives them. `stop` asks it to end
    at its next safe point."""

    def __init__(self, context: RunContext, batch: Batch, essays: list[BatchEssay], stop: asyncio.Event) -> None:
        self.context = context
        self.settings = context.settings
        self.store = context.store
        self.batch_id = batch.batch_id
        self.essays = essays
        self.stop = stop
        self.position = {e.essay_id: e.position for e in essays}
        self.is_anchor = np.array([e.is_anchor for e in essays])
        self.rng = np.random.default_rng(batch.seed if batch.seed is not None else int(batch.batch_id[:8], 16))
        # Whole waves, each planned once the one before is answered: a seeded batch, so that timing
        # cannot change it, and batch mode, where a wave is one provider job.
        self.whole_waves = batch.seed is not None or batch.judge_mode == JudgeMode.BATCH
        self.recorder: Recorder = self.store.recorder(batch.batch_id)
        # Waves overlap: the next one is queued as soon as the judge slots can take more, pairing
        # only essays that are not being judged right now, so slow tails do not idle the judge.
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self.limit = asyncio.Semaphore(self.settings.batch_concurrency)
        # Keep a backlog of comparisons queued behind the judge slots, so that a slot that frees up
        # is refilled at once while this loop records, fits and plans the next wave.
        self.refill_at = max(1, self.settings.batch_concurrency + self.settings.batch_concurrency // 2)
        # Stopping for decided grades: for batches with anchors, unless the request turned it off.
        self.rules = StoppingRules(
            target_ssr=batch.target_reliability or self.settings.target_reliability,
            decided_share=batch.grade_stop_share or StoppingRules.decided_share,
        )
        self.decided_at = batch.grade_stop_probability or DECIDED_PROBABILITY
        self.by_grades = bool(batch.grade_scale) and bool(self.is_anchor.any()) and not batch.grade_stop_off

    async def work(self) -> None:
        """Waves until the engine says stop, the batch is stopped, or it leaves RUNNING."""
        texts = Texts(self.context.content, [e.text_storage_id for e in self.essays])
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await self._waves(texts, stopping)
        finally:
            stopping.cancel()
            for task in self.inflight.values():
                task.cancel()
            await asyncio.gather(*self.inflight.values(), return_exceptions=True)
            texts.close()

    async def _waves(self, texts: Texts, stopping: asyncio.Future[Any]) -> None:
        previous: NDArray[np.float64] | None = None
        # The prior's width is re-chosen each time a wave is fully answered (after a restart, the
        # waves answered before are replayed first).
        prior, fed = PriorChoice(len(self.essays), self.is_anchor), 0
        while not self.stop.is_set():
            batch, rows = await self.store.batch_and_comparisons(self.batch_id)
            if batch.state != BatchState.RUNNING:
                return
            orphans = [r for r in rows if r.status == ComparisonStatus.PENDING and r.comparison_id not in self.inflight]
            if orphans:  # sent before a restart, never answered: ask again
                self._judge(batch, orphans, texts, rows)
            fed = await off_loop(feed_prior, prior, rows, self.position, fed)
            # The answers once per wave, for the fit and the grades alike.
            data = await off_loop(answered, rows, self.position)
            result = await off_loop(fitted, len(self.essays), data, previous, prior.precision)
            change = None
            if result is not None:
                if previous is not None:
                    change = float(np.max(np.abs(result.scores - previous)))
                previous = result.scores
                await self.store.record_fit(self.batch_id, self.essays, result, change)
            attempted = sum(r.status in ANSWERED for r in rows)
            succeeded = sum(r.status == ComparisonStatus.DONE for r in rows)
            progress = BatchProgress(
                essays=len(self.essays), attempted=attempted, succeeded=succeeded, budget=batch.comparison_budget,
                max_score_change=change,
                ssr=None if result is None else result.reliability(),
                cost=batch.cost_usd, max_cost=batch.max_cost_usd,
            )  # fmt: skip
            if self.by_grades and result is not None and weighs_quality(progress, self.rules):
                share = await off_loop(decided, batch, self.essays, data, prior.final_precision, self.decided_at)
                progress = replace(progress, decided=share)
            reason = decide(progress, self.rules)
            if reason == StopReason.CONTINUE and len(self.inflight) <= (0 if self.whole_waves else self.refill_at):
                busy = {self.position[r.essay_a_id] for r in rows if r.comparison_id in self.inflight}
                busy |= {self.position[r.essay_b_id] for r in rows if r.comparison_id in self.inflight}
                remaining = batch.comparison_budget - len(rows)
                paid = affordable(batch.cost_usd, batch.max_cost_usd, attempted, len(self.inflight))
                wave = await off_loop(
                    planned_wave,
                    self.is_anchor, rows, self.position, result, self.rng,
                    remaining if paid is None else min(remaining, paid), busy,
                )  # fmt: skip
                if wave:
                    new_rows = await self.store.write_wave(batch, wave, self.essays)
                    self._judge(batch, new_rows, texts, [*rows, *new_rows])
                elif not self.inflight:
                    reason = StopReason.COST_CEILING if paid == 0 else StopReason.EXHAUSTED
            if reason != StopReason.CONTINUE and not self.inflight:
                await self._end(reason, attempted, succeeded, prior.final_precision, batch)
                return
            # Wait for at least one answer (for all of them once the batch is stopping).
            goal = (
                min(self.refill_at, len(self.inflight) - 1)
                if reason == StopReason.CONTINUE and not self.whole_waves
                else 0
            )
            while self.inflight and len(self.inflight) > goal and not self.stop.is_set():
                waiting: list[asyncio.Future[Any]] = [*self.inflight.values(), stopping]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in self.inflight.values() if t.done()]:
                    task.result()  # a judging task that crashed fails the batch
                self.inflight = {cid: t for cid, t in self.inflight.items() if not t.done()}
            await self.recorder.flush()
            self.context.changed(self.batch_id)

    async def _end(self, reason: StopReason, attempted: int, succeeded: int, alpha: Alpha, batch: Batch) -> None:
        if reason == StopReason.TOO_MANY_FAILURES:
            await self.store.fail(self.batch_id, await self.store.failure_reason(self.batch_id, attempted, succeeded))
        elif succeeded == 0:
            await self.store.fail(self.batch_id, "no comparison succeeded")
        else:
            why = reason.value
            if reason == StopReason.COST_CEILING:
                why += f" (recorded cost ${batch.cost_usd or 0:.4f}, ceiling ${batch.max_cost_usd:.4f})"
            log.info("batch %s stops: %s", self.batch_id, why)
            await finalize(self.store, self.batch_id, why, alpha)

    def _judge(self, batch: Batch, rows: Sequence[ComparisonRow], texts: Texts, asked: Sequence[ComparisonRow]) -> None:
        """Judge rows in background tasks; their answers go to the recorder. `asked` is every row
        of the batch, these included."""
        storage = {e.essay_id: e.text_storage_id for e in self.essays}
        judging = self.context.judging
        # Only a judge whose answers are kept needs to know which questions were asked before.
        occurrence = occurrences(rows, asked) if judging.reuses(batch) else {}

        async def request(row: ComparisonRow) -> JudgeRequest:
            return judging.request(
                batch, await texts.get(storage[row.essay_a_id]), await texts.get(storage[row.essay_b_id])
            )

        async def one(row: ComparisonRow) -> None:
            async with self.limit, judging.service_limit:
                self.recorder.add(
                    row.comparison_id,
                    await judging.judge(batch, row, await request(row), occurrence.get(row.comparison_id, 0)),
                )

        async def as_jobs() -> None:
            requests = {row.comparison_id: await request(row) for row in rows}
            await Jobs(judging, self.store, self.recorder, batch).judge_rows(rows, requests, occurrence)

        if batch.judge_mode == JudgeMode.BATCH:
            task = asyncio.create_task(as_jobs())
            self.inflight.update(dict.fromkeys((row.comparison_id for row in rows), task))
            return
        for row in rows:
            self.inflight[row.comparison_id] = asyncio.create_task(one(row))
