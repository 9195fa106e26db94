"""Batch mode: each wave goes as one job of the provider's batch API (a local server speaking the
OpenAI Batch and Anthropic Message Batches protocols). A job running while the CJ Service restarts
is polled again, not paid for again; a job with failed items sends only those again; answers are
priced at the batch rate."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import grpc
import pytest
from huleedu.cj.v1 import assessment_pb2
from sqlalchemy import text

from mesh_common.pricing import PriceTable, Usage, cost
from mesh_server import database
from tests.support.cj import store_texts, submit_request, watch_to_end
from tests.support.providers import provider_server

ESSAYS = [
    "The sea was calm. " * (4 + i) + "We walked along the shore and talked about what we had learnt." * (i % 3)
    for i in range(8)
]


async def jobs_on_rows(url: str, batch_id: str) -> Counter[str | None]:
    engine = database.create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT provider_batch_id FROM comparisons WHERE batch_id = :b"), {"b": batch_id}
            )
            return Counter(row[0] for row in rows)
    finally:
        await engine.dispose()


async def submit_held_job(mesh, url: str, provider, storage_ids: list[str], budget: int) -> assessment_pb2.Batch:
    """Submit a batch through the provider's batch API while the provider holds its jobs; return once
    the first wave went as one job and its id is remembered on the wave's rows."""
    provider.hold = True
    request = submit_request(storage_ids, comparison_budget=budget)
    request.judge.mode = assessment_pb2.JUDGE_MODE_BATCH
    batch = (await mesh.assessment.SubmitBatch(request)).batch
    async with asyncio.timeout(20):
        while not provider.jobs or None in await jobs_on_rows(url, batch.batch_id):  # noqa: ASYNC110 - another thread
            await asyncio.sleep(0.05)
    return batch


@pytest.mark.timeout(120)
@pytest.mark.parametrize("provider_name", ["openai", "anthropic"])
async def test_a_wave_job_survives_a_restart_and_only_its_failures_are_sent_again(
    mesh, cj_database_url, provider_name
) -> None:
    with provider_server() as provider:
        settings = {"judge_provider": provider_name, f"{provider_name}_base_url": provider.url,
                    "batch_poll_seconds": 0.05}  # fmt: skip
        await mesh.restart_cj(**settings)
        storage_ids = await store_texts(mesh.content, ESSAYS)
        # the first wave is sent as one job, and remembered on its rows
        batch = await submit_held_job(mesh, cj_database_url, provider, storage_ids, budget=24)
        (first_job, wave) = next(iter(provider.jobs.items()))
        assert len(wave) >= 4 and provider.calls == 0

        await mesh.restart_cj(**settings)  # while the provider's job is running
        await asyncio.sleep(0.5)  # ten polls
        assert list(provider.jobs) == [first_job]  # polled again, not sent again

        provider.fail_once = set(wave[:2])
        provider.hold = False
        final = await watch_to_end(mesh, batch.batch_id, timeout=60)
        assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason

        jobs = list(provider.jobs.values())
        assert sorted(jobs[1]) == sorted(wave[:2])  # the failed items alone, in a job of their own
        assert len(jobs) >= 3  # later waves: one job each
        comparisons = (
            await mesh.assessment.ListComparisons(
                assessment_pb2.ListComparisonsRequest(batch_id=batch.batch_id, page_size=1000)
            )
        ).comparisons
        sent = [i for job in jobs for i in job]
        # Each comparison answered once: every item the provider answered is one recorded comparison.
        assert sorted(c.comparison_id for c in comparisons) == sorted(set(sent))
        assert len(sent) == len(comparisons) + 2 and provider.calls == len(comparisons)
        assert all(c.winner != assessment_pb2.WINNER_UNSPECIFIED for c in comparisons)
        retried = {c.comparison_id: c.attempts for c in comparisons if c.comparison_id in wave[:2]}
        assert set(retried.values()) == {2}
        # Priced at the batch API's rate: half the direct price of the same tokens.
        price = PriceTable.load().price(
            provider_name, "gpt-4o-mini" if provider_name == "openai" else "claude-3-5-haiku"
        )
        for c in comparisons:  # (the shared prefix is too short here for the prompt cache)
            assert c.tokens_in > 0 and c.tokens_cached == 0
            assert c.cost_usd == pytest.approx(cost(price, Usage(c.tokens_in, c.tokens_out)) / 2)
        results = (await mesh.assessment.GetBatchResults(
            assessment_pb2.GetBatchResultsRequest(batch_id=batch.batch_id))).results  # fmt: skip
        assert results.judge_usage.calls == len(comparisons)
        assert results.judge_usage.cost_usd == pytest.approx(sum(c.cost_usd for c in comparisons))


@pytest.mark.parametrize("provider_name", ["openai", "anthropic"])
async def test_cancelling_a_batch_cancels_the_job_it_waits_on(mesh, cj_database_url, provider_name) -> None:
    with provider_server() as provider:
        await mesh.restart_cj(judge_provider=provider_name, batch_poll_seconds=0.05,
                              **{f"{provider_name}_base_url": provider.url})  # fmt: skip
        storage_ids = await store_texts(mesh.content, ESSAYS)
        batch = await submit_held_job(mesh, cj_database_url, provider, storage_ids, budget=24)
        await mesh.assessment.CancelBatch(
            assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=batch.batch_id)
        )
        final = await watch_to_end(mesh, batch.batch_id, timeout=20)
        assert final.state == assessment_pb2.BATCH_STATE_CANCELLED
        async with asyncio.timeout(10):
            while not provider.cancelled:  # noqa: ASYNC110 - another thread
                await asyncio.sleep(0.05)
        assert provider.cancelled == list(provider.jobs)  # the one job it waited on, asked to stop
        assert provider.calls == 0


async def test_a_provider_outage_while_its_job_runs_is_waited_out(mesh, cj_database_url) -> None:
    with provider_server() as provider:
        await mesh.restart_cj(judge_provider="openai", openai_base_url=provider.url, batch_poll_seconds=0.05)
        storage_ids = await store_texts(mesh.content, ESSAYS)
        batch = await submit_held_job(mesh, cj_database_url, provider, storage_ids, budget=12)
        provider.down = True  # polls fail with 503 for a while
        await asyncio.sleep(0.5)
        provider.down, provider.hold = False, False
        final = await watch_to_end(mesh, batch.batch_id, timeout=30)
        assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason
        assert final.progress.comparisons_failed == 0
        assert sum(len(job) for job in provider.jobs.values()) == final.progress.comparisons_done  # none sent twice


async def test_batch_mode_needs_a_judge_with_a_batch_api(mesh) -> None:
    storage_ids = await store_texts(mesh.content, ESSAYS[:3])
    request = submit_request(storage_ids)
    request.judge.mode = assessment_pb2.JUDGE_MODE_BATCH
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.assessment.SubmitBatch(request)  # the mesh fixture's judge is the simulated one
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "JUDGE_MODE_BATCH" in caught.value.details() and "simulated" in caught.value.details()
