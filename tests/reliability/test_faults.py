"""Faults, each against real services: the Content Service gone during a batch, PostgreSQL restarted
mid-batch, the CJ Service killed at random points, the Content Service killed mid-upload, a full disk."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random

import grpc
import pytest
from huleedu.cj.v1 import assessment_pb2, assessment_pb2_grpc
from huleedu.content.v1 import content_pb2, content_pb2_grpc
from sqlalchemy import text

from mesh_server import database
from runner.client import write_all
from tests.conftest import start_content
from tests.support.cj import store_texts, submit_request, wait_until_done
from tests.support.content import BINARY_KIND, upload, upload_requests
from tests.support.processes import ServiceProcess
from tests.support.tools import run

pytestmark = pytest.mark.timeout(240)


async def watch(address: str, batch_id: str, timeout: float = 90) -> assessment_pb2.Batch:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = assessment_pb2_grpc.AssessmentServiceStub(channel)
        async with asyncio.timeout(timeout):
            async for update in stub.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=batch_id)):
                final = update.batch
    return final


async def exactly_once(database_url: str, batch_id: str, final: assessment_pb2.Batch) -> None:
    """Every comparison of the batch answered or failed once, counted once, results written once."""
    engine = database.create_engine(database_url)
    try:
        async with engine.connect() as connection:
            statuses = dict(
                (
                    await connection.execute(
                        text("SELECT status, count(*) FROM comparisons WHERE batch_id = :b GROUP BY status"),
                        {"b": batch_id},
                    )
                ).all()
            )
            results = (
                await connection.execute(
                    text("SELECT count(*) FROM batch_results WHERE batch_id = :b"), {"b": batch_id}
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert "PENDING" not in statuses, statuses
    assert statuses.get("DONE", 0) == final.progress.comparisons_done
    assert statuses.get("FAILED", 0) == final.progress.comparisons_failed
    assert results == 1


def cj_process(database_url: str, content_address: str, workdir, *extra: str) -> ServiceProcess:
    return ServiceProcess(
        "cj-svc",
        ["--listen", "127.0.0.1:0", "--database-url", database_url, "--content-address", content_address,
         "--migrate", "--judge-provider", "simulated", "--simulated-latency-ms", "40", "--batch-concurrency", "6",
         *extra],
        workdir,
    )  # fmt: skip


async def test_content_service_stopped_during_a_batch(sqlite_url, tmp_path) -> None:
    content = await start_content(sqlite_url, tmp_path / "blobs")
    port = content.address.rsplit(":", 1)[1]
    cj = cj_process(f"sqlite:///{tmp_path}/cj.db", content.address, tmp_path)
    try:
        async with grpc.aio.insecure_channel(content.address) as channel:
            ids = await store_texts(
                content_pb2_grpc.ContentServiceStub(channel), [f"essay {i} " * 9 for i in range(10)]
            )
        address = await cj.start()
        async with grpc.aio.insecure_channel(address) as channel:
            stub = assessment_pb2_grpc.AssessmentServiceStub(channel)
            batch = (await stub.SubmitBatch(submit_request(ids, comparison_budget=40))).batch
        await content.stop()  # before the texts are fetched: hydration must wait and retry
        await asyncio.sleep(1.5)
        content = await start_content(sqlite_url, tmp_path / "blobs", listen=f"127.0.0.1:{port}")
        final = await watch(address, batch.batch_id)
        assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason
        await exactly_once(f"sqlite:///{tmp_path}/cj.db", batch.batch_id, final)
    finally:
        await cj.stop()
        await content.stop()


async def test_postgresql_restarted_mid_batch(pg_cluster, sqlite_content_app, tmp_path) -> None:
    url = pg_cluster.new_database("cj_pg_restart")
    cj = cj_process(url, sqlite_content_app.address, tmp_path)
    async with grpc.aio.insecure_channel(sqlite_content_app.address) as channel:
        ids = await store_texts(content_pb2_grpc.ContentServiceStub(channel), [f"pg essay {i} " * 9 for i in range(12)])
    address = await cj.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = assessment_pb2_grpc.AssessmentServiceStub(channel)
            batch = (await stub.SubmitBatch(submit_request(ids, comparison_budget=120))).batch
            await wait_until_done(stub, batch.batch_id, 20)
        await asyncio.to_thread(pg_cluster.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(pg_cluster.start)
        final = await watch(address, batch.batch_id)
        assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason
        await exactly_once(url, batch.batch_id, final)
    finally:
        await cj.stop()


async def test_cj_killed_at_random_points_in_ten_runs(sqlite_content_app, tmp_path) -> None:
    async with grpc.aio.insecure_channel(sqlite_content_app.address) as channel:
        ids = await store_texts(
            content_pb2_grpc.ContentServiceStub(channel), [f"kill essay {i} " * 9 for i in range(10)]
        )
    url = f"sqlite:///{tmp_path}/cj.db"
    cj = cj_process(url, sqlite_content_app.address, tmp_path)
    chance = random.Random(20261129)
    try:
        for run in range(10):
            address = await cj.start()
            async with grpc.aio.insecure_channel(address) as channel:
                stub = assessment_pb2_grpc.AssessmentServiceStub(channel)
                batch = (await stub.SubmitBatch(submit_request(ids, comparison_budget=50))).batch
            await asyncio.sleep(chance.uniform(0.0, 0.8))  # anywhere: submitting, judging, finalizing
            await cj.kill()
            address = await cj.start()
            final = await watch(address, batch.batch_id)
            assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, (run, final.state_reason)
            await exactly_once(url, batch.batch_id, final)
            await cj.stop()
    finally:
        await cj.stop()


async def test_content_service_killed_mid_upload_leaves_nothing(tmp_path) -> None:
    args = ["--listen", "127.0.0.1:0", "--database-url", f"sqlite:///{tmp_path}/content.db",
            "--storage-dir", str(tmp_path / "blobs"), "--migrate"]  # fmt: skip
    service = ServiceProcess("content-svc", args, tmp_path)
    address = await service.start()
    data = os.urandom(20 * 1024 * 1024)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            call = content_pb2_grpc.ContentServiceStub(channel).Upload()
            requests = upload_requests(data, chunk=256 * 1024, kind=BINARY_KIND)
            for _ in range(30):  # header and about 7 MiB, then the server dies
                await call.write(next(requests))
            await asyncio.sleep(0.2)
            await service.kill()
            with pytest.raises(grpc.aio.AioRpcError):
                await write_all(call, requests)
                await call
        temp_files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
        assert temp_files and all(p.name.endswith(".tmp") for p in temp_files)  # the half-written blob, as a temp
        address = await service.start()  # start-up removes it
        assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()] == []
        async with grpc.aio.insecure_channel(address) as channel:
            stat = await content_pb2_grpc.ContentServiceStub(channel).FindByChecksum(
                content_pb2.FindByChecksumRequest(sha256s=[hashlib.sha256(data).hexdigest()])
            )
        assert list(stat.matches) == []
    finally:
        await service.stop()


async def test_full_disk_gives_resource_exhausted_and_recovers(sqlite_url, tmp_path) -> None:
    storage = tmp_path / "small-disk"
    storage.mkdir()
    mounted = await run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(storage))
    if mounted.code != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a small tmpfs here ({mounted.stderr.strip()})")
    app = await start_content(sqlite_url, storage)
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stub = content_pb2_grpc.ContentServiceStub(channel)
            await upload(stub, os.urandom(1024 * 1024), kind=BINARY_KIND)
            with pytest.raises(grpc.aio.AioRpcError) as full:
                await upload(stub, os.urandom(1536 * 1024), kind=BINARY_KIND)
            assert full.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
            assert "space" in full.value.details().lower() or "full" in full.value.details().lower()
            many = await stub.BatchUpload(
                content_pb2.BatchUploadRequest(
                    items=[
                        content_pb2.BatchUploadItem(kind=BINARY_KIND, content_type="a/b", content=os.urandom(40_000))
                        for _ in range(40)
                    ]  # fmt: skip
                )
            )
            assert all("storage is full" in r.error.message and not r.storage_id for r in many.results)
            blobs = [p for p in storage.rglob("*") if p.is_file()]
            assert len(blobs) == 1 and not blobs[0].name.endswith(".tmp")  # nothing half-written stays
            assert (await run("mount", "-o", "remount,size=8m", str(storage))).code == 0  # space returns
            again = await upload(stub, os.urandom(1536 * 1024), kind=BINARY_KIND)
            assert len(again.storage_id) == 32
            texts = [os.urandom(40_000) for _ in range(40)]  # enough blobs for the one-flush path
            stored = await stub.BatchUpload(
                content_pb2.BatchUploadRequest(
                    items=[content_pb2.BatchUploadItem(kind=BINARY_KIND, content_type="a/b", content=t) for t in texts]
                )
            )
            got = await stub.BatchGet(content_pb2.BatchGetRequest(storage_ids=[r.storage_id for r in stored.results]))
            assert [i.content for i in got.items] == texts
    finally:
        await app.stop()
        await run("umount", "-l", str(storage))
