"""A batch's comparisons through its provider's batch API (JudgeMode.BATCH): a wave goes as one job.

The job's id is written on its comparisons before the job is polled, so a restarted service (or
another replica taking the batch over) polls the same job instead of paying for the wave again.
When the job ends, each answer is recorded like a direct call's; items that failed with an error
worth retrying (expired, overloaded, rate limited) are sent again, alone, in a new job, until the
comparison's attempts are used up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from cj_svc.judges.base import BatchJudge, JudgeError, JudgeRequest, Verdict
from cj_svc.models import Batch
from cj_svc.workflow.judging import Judging
from cj_svc.workflow.store import ComparisonRow, Recorder, RunStore
from mesh_common.error_codes import ErrorCode

log = logging.getLogger("cj.jobs")


class Jobs:
    """One batch run's comparisons sent as provider batch jobs, polled to their end."""

    def __init__(self, judging: Judging, store: RunStore, recorder: Recorder, batch: Batch) -> None:
        self.judging = judging
        self.store = store
        self.recorder = recorder
        self.batch = batch
        self.judge: BatchJudge = judging.judges.batch_api(batch.judge_provider)
        self.model = judging.judges.model(batch.judge_provider, batch.judge_model)
        self.poll_seconds = judging.settings.batch_poll_seconds
        self.max_attempts = judging.settings.max_attempts

    async def judge_rows(
        self, rows: Sequence[ComparisonRow], requests: dict[str, JudgeRequest], occurrence: dict[str, int]
    ) -> None:
        """Judge `rows` (their requests by comparison id): answers kept from before are reused,
        jobs sent before a restart are polled again, the rest go in one new job."""
        keys = {r.comparison_id: self.judging.reuse_key(self.batch, requests[r.comparison_id],
                                                          occurrence.get(r.comparison_id, 0)) for r in rows}  # fmt: skip
        attempts = {r.comparison_id: r.attempts for r in rows}
        jobs: dict[str, list[str]] = {}
        fresh = []
        for row in rows:
            if row.provider_batch_id:
                jobs.setdefault(row.provider_batch_id, []).append(row.comparison_id)
                continue
            kept = await self.judging.reused(keys[row.comparison_id], row)
            if kept is not None:
                self.recorder.add(row.comparison_id, kept)
            else:
                fresh.append(row.comparison_id)
        sent_at = {job_id: time.monotonic() for job_id in jobs}  # resumed: timed from now
        if fresh:
            job_id = await self._submit(fresh, requests, attempts)
            if job_id:
                jobs[job_id], sent_at[job_id] = fresh, time.monotonic()
        while jobs:
            await asyncio.sleep(self.poll_seconds)
            for job_id, ids in list(jobs.items()):
                try:
                    results = await self.judge.job_results(job_id, self.model)
                except JudgeError as error:
                    if error.retryable:  # the provider is briefly unreachable: poll again later
                        log.warning("batch %s: cannot poll job %s: %s", self.batch.batch_id, job_id, error.message)
                        continue
                    self._record(dict.fromkeys(ids, error), ids, attempts, keys, None)
                    del jobs[job_id]
                    continue
                if results.answers is None:
                    continue
                del jobs[job_id]
                latency = (time.monotonic() - sent_at.pop(job_id)) * 1000
                again = self._record(results.answers, ids, attempts, keys, latency)
                await self.recorder.flush()
                if again:
                    log.info("batch %s: job %s left %d of %d unanswered; sending them again",
                             self.batch.batch_id, job_id, len(again), len(ids))  # fmt: skip
                    retry = await self._submit(again, requests, attempts)
                    if retry:
                        jobs[retry], sent_at[retry] = again, time.monotonic()

    def _record(
        self,
        answers: dict[str, Verdict | JudgeError],
        ids: list[str],
        attempts: dict[str, int],
        keys: dict[str, str | None],
        latency_ms: float | None,
    ) -> list[str]:
        """Record a job's answers and final failures; the ids worth asking again."""
        again = []
        for comparison_id in ids:
            outcome = answers.get(comparison_id) or JudgeError(
                ErrorCode.TIMEOUT, "the provider's batch job ended without answering it", retryable=True
            )
            if isinstance(outcome, Verdict):
                values = self.judging.answered(self.batch, outcome, attempts[comparison_id], latency_ms,
                                               keys[comparison_id])  # fmt: skip
                self.recorder.add(comparison_id, values)
            elif outcome.retryable and attempts[comparison_id] < self.max_attempts:
                again.append(comparison_id)
            else:
                self.recorder.add(comparison_id, self.judging.failed(outcome, self.model, attempts[comparison_id]))
        return again

    async def _submit(self, ids: list[str], requests: dict[str, JudgeRequest], attempts: dict[str, int]) -> str | None:
        """Send `ids` as one job and write its id on their rows; None when it could not be sent
        (the comparisons are then recorded as failed)."""
        while True:
            for comparison_id in ids:
                attempts[comparison_id] += 1
            try:
                job_id = await self.judge.submit_job([(i, requests[i]) for i in ids])
            except JudgeError as error:
                tries = max(attempts[i] for i in ids)
                if error.retryable and tries < self.max_attempts:
                    await self.judging.backoff(tries)
                    continue
                for comparison_id in ids:
                    self.recorder.add(comparison_id, self.judging.failed(error, self.model, attempts[comparison_id]))
                return None
            await self.store.sent_in_job(job_id, {i: attempts[i] for i in ids})
            log.info("batch %s: %d comparisons sent as job %s", self.batch.batch_id, len(ids), job_id)
            return job_id
