"""Cancels and stops at any moment leave the CJ Service's database clean and writable: no PENDING
comparison of a cancelled batch, no lease, no transaction left open; SIGTERM ends the process within
its grace, and every batch resumes after a restart."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid

import grpc
import pytest
from huleedu.cj.v1 import assessment_pb2, assessment_pb2_grpc
from huleedu.content.v1 import content_pb2_grpc
from sqlalchemy import event, text, update
from sqlalchemy.orm import ORMExecuteState, Session

from cj_svc.leases import Leases
from cj_svc.models import Batch
from cj_svc.vocabulary import BatchState
from mesh_server import database
from tests.support.cj import store_texts, submit_request, watch_to_end
from tests.support.processes import ServiceProcess

FINAL = (assessment_pb2.BATCH_STATE_CANCELLED, assessment_pb2.BATCH_STATE_COMPLETED, assessment_pb2.BATCH_STATE_FAILED)


async def pending_and_leases(url: str, batch_id: str) -> tuple[int, str | None]:
    engine = database.create_engine(url)
    try:
        async with engine.connect() as connection:
            pending = (
                await connection.execute(
                    text("SELECT count(*) FROM comparisons WHERE batch_id = :b AND status = 'PENDING'"), {"b": batch_id}
                )
            ).scalar_one()
            lease = (
                await connection.execute(text("SELECT lease_owner FROM batches WHERE batch_id = :b"), {"b": batch_id})
            ).scalar_one()
    finally:
        await engine.dispose()
    return pending, lease


async def test_cancel_at_random_moments_leaves_no_pending_row_no_lease_and_a_writable_database(
    mesh, cj_database_url
) -> None:
    # A batch runs for well over a second (16 essays, 10 ms a judgement), so nearly every cancel lands
    # mid-way even on a loaded machine, where the cancel itself may take a few hundred milliseconds.
    await mesh.restart_cj(judge_provider="simulated", simulated_latency_ms=10, batch_concurrency=3)
    storage_ids = await store_texts(mesh.content, [f"essay {i} about the sea and the shore" for i in range(16)])
    rng = random.Random(11)
    slowest = 0.0
    outcomes: dict[int, int] = {}
    for attempt in range(30):
        batch = (await mesh.assessment.SubmitBatch(submit_request(storage_ids, comparison_budget=400))).batch
        await asyncio.sleep(rng.random() * 0.4)  # anywhere in its waves: judging, recording, fitting, planning
        started = time.monotonic()
        # Half of the calls give up early themselves: a cancelled RPC must not leave a write half done.
        timeout = 0.01 if attempt % 2 else 10
        for attempt_timeout in (timeout, 10):  # a call that gave up may not have reached the database: again
            try:
                await mesh.assessment.CancelBatch(
                    assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=batch.batch_id),
                    timeout=attempt_timeout,
                )
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.FAILED_PRECONDITION)
                if error.code() == grpc.StatusCode.FAILED_PRECONDITION:  # it had finished already
                    break
        slowest = max(slowest, time.monotonic() - started)
        async with asyncio.timeout(10):  # the batch's task settles
            while True:
                got = (await mesh.assessment.GetBatch(assessment_pb2.GetBatchRequest(batch_id=batch.batch_id))).batch
                pending, lease = await pending_and_leases(cj_database_url, batch.batch_id)
                if got.state in FINAL and pending == 0 and lease is None:
                    break
                await asyncio.sleep(0.05)
        assert got.state in (assessment_pb2.BATCH_STATE_CANCELLED, assessment_pb2.BATCH_STATE_COMPLETED)
        outcomes[got.state] = outcomes.get(got.state, 0) + 1
    print(f"cancelled mid-way: {outcomes}; slowest cancel {slowest:.2f} s")
    assert slowest < 5.0
    assert outcomes.get(assessment_pb2.BATCH_STATE_CANCELLED, 0) >= 20  # most were cancelled mid-way
    # The database still takes writes at once: a new batch is accepted and completes.
    started = time.monotonic()
    last = (await mesh.assessment.SubmitBatch(submit_request(storage_ids, comparison_budget=10))).batch
    assert time.monotonic() - started < 2.0
    async with asyncio.timeout(30):
        async for update in mesh.assessment.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=last.batch_id)):
            final = update.batch
    assert final.state == assessment_pb2.BATCH_STATE_COMPLETED


@pytest.mark.timeout(180)
async def test_sigterm_with_twenty_batches_running_exits_within_grace_and_all_resume(
    content_app, cj_database_url, tmp_path
) -> None:
    grace = 5.0
    # 300 ms a judgement, 4 in flight: no batch can finish (36 comparisons at least, 2.7 s) before the signal
    # 1 s after the submissions, so every watcher is still watching when the service stops.
    args = ["--listen", "127.0.0.1:0", "--database-url", cj_database_url, "--content-address", content_app.address,
            "--migrate", "--judge-provider", "simulated", "--simulated-latency-ms", "300", "--batch-concurrency", "4"]  # fmt: skip
    cj = ServiceProcess("cj-svc", args, tmp_path)
    async with grpc.aio.insecure_channel(content_app.address) as content_channel:
        storage_ids = await store_texts(
            content_pb2_grpc.ContentServiceStub(content_channel), [f"essay {i} on rivers" for i in range(12)]
        )
    address = await cj.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = assessment_pb2_grpc.AssessmentServiceStub(channel)
            batches = [
                (await stub.SubmitBatch(submit_request(storage_ids, comparison_budget=60))).batch.batch_id
                for _ in range(20)
            ]
            watchers = [  # clients watching while the service stops
                asyncio.ensure_future(drain(stub.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=b))))
                for b in batches[:5]
            ]
            await asyncio.sleep(1.0)
            started = time.monotonic()
            cj.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(cj.process.wait(), grace + 10)
            stopped_in = time.monotonic() - started
            ended = await asyncio.gather(*watchers, return_exceptions=True)
        # Watchers are told at once that the service stops (and go on watching after the restart).
        assert all(isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.UNAVAILABLE for e in ended)
        assert all("stopping" in e.details() for e in ended)
        print(f"SIGTERM with 20 batches running: stopped in {stopped_in:.2f} s")
        assert stopped_in < grace + 2.0, f"SIGTERM took {stopped_in:.1f} s"
        assert cj.process.returncode == 0

        address = await cj.start()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = assessment_pb2_grpc.AssessmentServiceStub(channel)
            async with asyncio.timeout(120):
                for batch_id in batches:
                    async for update in stub.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=batch_id)):
                        final = update.batch
                    assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason
        engine = database.create_engine(cj_database_url)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text(
                        "SELECT b.batch_id, b.comparisons_done, b.lease_owner,"
                        " (SELECT count(*) FROM comparisons c WHERE c.batch_id = b.batch_id AND c.status = 'DONE'),"
                        " (SELECT count(*) FROM comparisons c WHERE c.batch_id = b.batch_id AND c.status = 'PENDING')"
                        " FROM batches b"
                    )
                )
            ).all()
        await engine.dispose()
        for batch_id, counted, lease, done, pending in rows:
            assert counted == done and pending == 0, batch_id  # every answer recorded exactly once
            assert lease is None, batch_id
    finally:
        await cj.stop()


async def drain(stream) -> None:
    async for _ in stream:
        pass


async def test_health_not_serving_while_the_cj_database_cannot_be_written(mesh, cj_database_url, request) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.support.readonly import database_read_only

    mesh.cj_app.server.readiness_interval = 0.2
    health = health_pb2_grpc.HealthStub(mesh.channels[0])

    async def becomes(status: int) -> None:
        async with asyncio.timeout(8):
            while (await health.Check(health_pb2.HealthCheckRequest())).status != status:  # noqa: ASYNC110 - polling a server
                await asyncio.sleep(0.1)

    await becomes(health_pb2.HealthCheckResponse.SERVING)
    cluster = None if cj_database_url.startswith("sqlite") else request.getfixturevalue("pg_cluster")
    async with database_read_only(cj_database_url, cluster):
        await becomes(health_pb2.HealthCheckResponse.NOT_SERVING)
    await becomes(health_pb2.HealthCheckResponse.SERVING)


async def test_a_batch_that_completes_while_another_replica_looks_for_free_ones_keeps_no_lease(mesh) -> None:
    """Another replica's scan for free batches reads a batch as unfinished, then the batch completes
    (and lets its lease go) before the scan writes its leases: the completed batch is not leased."""
    storage_ids = await store_texts(mesh.content, [f"essay {i} on rivers" for i in range(4)])
    batch_id = (await mesh.assessment.SubmitBatch(submit_request(storage_ids))).batch.batch_id
    assert (await watch_to_end(mesh, batch_id)).state == assessment_pb2.BATCH_STATE_COMPLETED
    raced = []

    def complete_after_the_scan_reads(state: ORMExecuteState):
        if raced or not state.is_select:
            return None
        raced.append(batch_id)
        # as the scan reads, the batch is still running; it completes before the scan writes
        state.session.execute(update(Batch).where(Batch.batch_id == batch_id).values(state=BatchState.RUNNING))
        rows = state.invoke_statement().freeze()
        state.session.execute(update(Batch).where(Batch.batch_id == batch_id).values(state=BatchState.COMPLETED))
        return rows()

    other = Leases(mesh.cj_app.workflow.sessions, "another-replica", 30.0)
    event.listen(Session, "do_orm_execute", complete_after_the_scan_reads)
    try:
        claimed = await other.claim_free()
    finally:
        event.remove(Session, "do_orm_execute", complete_after_the_scan_reads)
    assert raced == [batch_id] and claimed == []
    assert await pending_and_leases(mesh.cj_database_url, batch_id) == (0, None)
