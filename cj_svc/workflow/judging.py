"""Judging a batch's comparisons: its texts fetched ahead, each pair asked with retries, and the
answer turned into the values its row is updated with."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from cj_svc.content_client import ContentClient
from cj_svc.judgements import REUSED_PROVIDERS, Judgements, judgement_key
from cj_svc.judges.base import JudgeError, JudgeRequest, Verdict
from cj_svc.judges.factory import Judges
from cj_svc.models import Batch
from cj_svc.settings import CJSettings
from cj_svc.vocabulary import ComparisonStatus, JudgeMode
from cj_svc.workflow.store import ComparisonRow
from mesh_common.pricing import Price, PriceTable, priced
from mesh_server import errors

COMPARISONS = Counter(
    "huleedu_cj_comparisons_total", "Comparisons answered, by outcome and error code.", ["outcome", "error_code"]
)
JUDGE_SECONDS = Histogram("huleedu_cj_judge_seconds", "Latency of one judge call.", ["provider"])
CONTENT_ATTEMPTS = 6
log = logging.getLogger("cj.judging")


class Texts:
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


class Judging:
    """This process's judges, the calls in flight across all its batches, how they retry, what
    they cost, and the answers kept for reuse."""

    def __init__(self, settings: CJSettings, judgements: Judgements) -> None:
        self.settings = settings
        self.judges = Judges(settings)
        self.service_limit = asyncio.Semaphore(settings.service_concurrency)
        self.prices = PriceTable.load(settings.price_table)
        self.judgements = judgements

    def price_of(self, provider: str, batch_model: str) -> Price | None:
        """The price of the model a batch of `provider` asks, None when the price table has none."""
        return self.prices.price(provider, self.judges.model(provider, batch_model))

    def unpriced(self, provider: str, batch_model: str) -> str | None:
        """Why a cost ceiling cannot be kept for this judge (None when it can)."""
        if self.price_of(provider, batch_model) is not None:
            return None
        model = self.judges.model(provider, batch_model)
        return (
            f"max_cost_usd needs the price of the {provider} model {model!r}, and the price table "
            f"{self.prices.source} has none; add it (cj-svc serve --price-table FILE) or drop max_cost_usd"
        )

    def request(self, batch: Batch, essay_a: str, essay_b: str) -> JudgeRequest:
        """The judge's request for a pair of the batch, with the batch's overrides of the service's judge."""
        temperature = batch.judge_temperature
        return JudgeRequest(
            essay_a=essay_a, essay_b=essay_b, prompt=batch.prompt_text, instructions=batch.instructions,
            model=self.judges.model(batch.judge_provider, batch.judge_model),
            temperature=self.settings.judge_temperature if temperature is None else temperature,
            max_tokens=batch.judge_max_tokens or self.settings.judge_max_tokens,
            system_prompt=batch.judge_system_prompt,
        )  # fmt: skip

    @staticmethod
    def reuses(batch: Batch) -> bool:
        """Whether the batch's answers are kept and reused (see cj_svc.judgements)."""
        return batch.judge_provider in REUSED_PROVIDERS and not batch.no_cache

    def reuse_key(self, batch: Batch, request: JudgeRequest, occurrence: int) -> str | None:
        """The key its answer is kept under, when the batch's answers are kept."""
        if self.reuses(batch):
            return judgement_key(batch.judge_provider, request, occurrence, batch.owner)
        return None

    async def reused(self, key: str | None, row: ComparisonRow) -> dict[str, Any] | None:
        """The row's new values from an answer kept from before, if there is one."""
        kept = None if key is None else await self.judgements.find(key)
        if kept is None:
            return None
        COMPARISONS.labels("reused", "").inc()
        return {"status": ComparisonStatus.DONE, "winner": kept.winner, "confidence": kept.confidence,
                "justification": kept.justification, "model": kept.model, "cached": True, "cost_usd": 0.0,
                "attempts": row.attempts, "completed_at": datetime.now(UTC)}  # fmt: skip

    def answered(
        self, batch: Batch, verdict: Verdict, attempts: int, latency_ms: float | None, key: str | None
    ) -> dict[str, Any]:
        """The row's new values from the judge's answer, priced (at the batch API's rate in batch mode)."""
        COMPARISONS.labels("done", "").inc()
        usage = verdict.usage
        return {
            "status": ComparisonStatus.DONE, "winner": verdict.winner,
            "confidence": verdict.confidence, "justification": verdict.justification, "model": verdict.model,
            "tokens_in": usage and usage.tokens_in, "tokens_out": usage and usage.tokens_out,
            "tokens_cached": usage and usage.tokens_cached, "tokens_cache_written": usage and usage.tokens_cache_written,
            "cost_usd": priced(self.price_of(batch.judge_provider, batch.judge_model), usage, batch=batch.judge_mode == JudgeMode.BATCH),
            "cached": False, "judgement_key": key, "latency_ms": latency_ms, "attempts": attempts,
            "completed_at": datetime.now(UTC),
        }  # fmt: skip

    @staticmethod
    def failed(error: JudgeError, model: str | None, attempts: int) -> dict[str, Any]:
        """The row's new values when it failed for good."""
        COMPARISONS.labels("failed", error.error_code).inc()
        return {"status": ComparisonStatus.FAILED, "error_code": error.error_code,
                "error_message": error.message[:2000], "model": model, "attempts": attempts,
                "completed_at": datetime.now(UTC)}  # fmt: skip

    async def backoff(self, attempts: int) -> None:
        await asyncio.sleep(self.settings.retry_base_seconds * 2 ** (attempts - 1) * (0.5 + random.random()))

    async def judge(self, batch: Batch, row: ComparisonRow, request: JudgeRequest, occurrence: int) -> dict[str, Any]:
        """The row's new values: an answer kept from before when there is one, else the judge's,
        retrying retryable failures with backoff."""
        key = self.reuse_key(batch, request, occurrence)
        kept = await self.reused(key, row)
        if kept is not None:
            return kept
        judge = self.judges.get(batch.judge_provider)
        attempts = row.attempts
        while True:
            attempts += 1
            started = time.perf_counter()
            try:
                verdict = await judge.compare(request)
            except JudgeError as error:
                if error.retryable and attempts < self.settings.max_attempts:
                    await self.backoff(attempts)
                    continue
                return self.failed(error, row.model, attempts)
            latency = (time.perf_counter() - started) * 1000
            JUDGE_SECONDS.labels(judge.provider).observe(latency / 1000)
            return self.answered(batch, verdict, attempts, latency, key)

    async def cancel_jobs(self, provider: str, job_ids: set[str]) -> None:
        """Ask the provider to stop batch jobs of a cancelled batch (best effort: a job the
        provider cannot stop is billed as the provider bills it)."""
        judge = self.judges.batch_api(provider)
        for job_id in sorted(job_ids):
            try:
                await judge.cancel_job(job_id)
            except JudgeError as error:
                log.warning("could not cancel the provider's batch job %s: %s", job_id, error.message)

    async def close(self) -> None:
        await self.judges.close()
