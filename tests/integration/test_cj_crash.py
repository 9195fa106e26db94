"""SIGKILL the CJ Service mid-batch, start it again: the batch completes, nothing lost or duplicated."""

from __future__ import annotations

import asyncio

import grpc
from huleedu.cj.v1 import assessment_pb2, assessment_pb2_grpc
from huleedu.content.v1 import content_pb2_grpc
from sqlalchemy import text

from mesh_server import database
from tests.support.cj import store_texts, submit_request, wait_until_done
from tests.support.processes import ServiceProcess


async def test_killed_mid_batch_resumes_without_losing_or_repeating(content_app, cj_database_url, tmp_path) -> None:
    cj = ServiceProcess(
        "cj-svc",
        ["--listen", "127.0.0.1:0", "--database-url", cj_database_url, "--content-address", content_app.address,
         "--migrate", "--judge-provider", "simulated", "--simulated-latency-ms", "30", "--batch-concurrency", "4"],
        tmp_path,
    )  # fmt: skip
    async with grpc.aio.insecure_channel(content_app.address) as content_channel:
        storage_ids = await store_texts(
            content_pb2_grpc.ContentServiceStub(content_channel), [f"essay {i}" for i in range(16)]
        )
    address = await cj.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = assessment_pb2_grpc.AssessmentServiceStub(channel)
            batch = (await stub.SubmitBatch(submit_request(storage_ids, comparison_budget=80))).batch
            await wait_until_done(stub, batch.batch_id, 20)
        engine = database.create_engine(cj_database_url)
        async with asyncio.timeout(30):  # kill while comparisons are in flight
            while True:
                async with engine.connect() as connection:
                    query = text("SELECT count(*) FROM comparisons WHERE status = 'PENDING'")
                    if (await connection.execute(query)).scalar_one() > 0:
                        break
                await asyncio.sleep(0.005)
        await cj.kill()
        address = await cj.start()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = assessment_pb2_grpc.AssessmentServiceStub(channel)
            async with asyncio.timeout(60):
                async for update in stub.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=batch.batch_id)):
                    final = update.batch
        assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason
        async with engine.connect() as connection:
            statuses = dict(
                (await connection.execute(text("SELECT status, count(*) FROM comparisons GROUP BY status"))).all()
            )
            distinct_ids = (
                await connection.execute(text("SELECT count(DISTINCT comparison_id) FROM comparisons"))
            ).scalar_one()
            results = (await connection.execute(text("SELECT count(*) FROM batch_results"))).scalar_one()
        await engine.dispose()
        assert "PENDING" not in statuses
        assert statuses.get("DONE", 0) == final.progress.comparisons_done  # every answer counted exactly once
        assert distinct_ids == sum(statuses.values())
        assert results == 1
    finally:
        await cj.stop()
