"""Two `cj-svc` replicas on one PostgreSQL: each batch is worked by one replica at a time (leases), and
the batches of a replica killed with SIGKILL are taken over by the other and finished."""

from __future__ import annotations

import asyncio

import grpc
from huleedu.cj.v1 import assessment_pb2, assessment_pb2_grpc
from huleedu.content.v1 import content_pb2_grpc
from sqlalchemy import text

from mesh_server import database
from tests.support.cj import store_texts, submit_request
from tests.support.processes import ServiceProcess


def replica(name: str, database_url: str, content_address: str, tmp_path) -> ServiceProcess:
    workdir = tmp_path / name
    workdir.mkdir()
    return ServiceProcess(
        "cj-svc",
        ["--listen", "127.0.0.1:0", "--database-url", database_url, "--content-address", content_address,
         "--migrate", "--judge-provider", "simulated", "--simulated-latency-ms", "50", "--batch-concurrency", "4",
         "--replica-id", name, "--lease-seconds", "3"],
        workdir,
    )  # fmt: skip


async def rows(engine, query: str, **params) -> list:
    async with engine.connect() as connection:
        return list((await connection.execute(text(query), params)).all())


async def test_one_replica_per_batch_and_takeover_after_sigkill(pg_cluster, sqlite_content_app, tmp_path) -> None:
    url = pg_cluster.new_database("cj_replicas")
    async with grpc.aio.insecure_channel(sqlite_content_app.address) as channel:
        storage_ids = await store_texts(
            content_pb2_grpc.ContentServiceStub(channel), [f"replica essay {i} " * (3 + i) for i in range(12)]
        )
    first, second = (replica(n, url, sqlite_content_app.address, tmp_path) for n in ("replica-a", "replica-b"))
    first_address = await first.start()
    second_address = await second.start()
    engine = database.create_engine(url)
    try:
        batches: dict[str, str] = {}  # batch id -> replica it was submitted to
        for address, name, count in ((first_address, "replica-a", 3), (second_address, "replica-b", 2)):
            async with grpc.aio.insecure_channel(address) as channel:
                stub = assessment_pb2_grpc.AssessmentServiceStub(channel)
                for _ in range(count):
                    batch = (await stub.SubmitBatch(submit_request(storage_ids, comparison_budget=70))).batch
                    batches[batch.batch_id] = name
        async with asyncio.timeout(30):  # both replicas at work
            while min(n for (n,) in await rows(engine, "SELECT comparisons_done FROM batches")) < 8:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        owners = dict(await rows(engine, "SELECT batch_id, lease_owner FROM batches"))
        assert owners == batches  # each batch leased by the replica it was submitted to, none stolen
        senders = await rows(engine, "SELECT batch_id, replica_id FROM comparisons GROUP BY batch_id, replica_id")
        assert sorted(senders) == sorted(batches.items())

        await first.kill()  # SIGKILL: its leases are not released, they expire
        async with grpc.aio.insecure_channel(second_address) as channel:
            stub = assessment_pb2_grpc.AssessmentServiceStub(channel)
            async with asyncio.timeout(90):
                for batch_id in batches:
                    async for update in stub.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=batch_id)):
                        final = update.batch
                    assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason

        for batch_id, submitted_to in batches.items():
            statuses = dict(await rows(engine, "SELECT status, count(*) FROM comparisons WHERE batch_id = :b "
                                               "GROUP BY status", b=batch_id))  # fmt: skip
            (done,) = (await rows(engine, "SELECT comparisons_done FROM batches WHERE batch_id = :b", b=batch_id))[0]
            assert "PENDING" not in statuses and statuses["DONE"] == done  # every answer recorded exactly once
            spans = dict(
                (name, (first_at, last_at))
                for name, first_at, last_at in await rows(
                    engine, "SELECT replica_id, min(created_at), max(created_at) FROM comparisons WHERE batch_id = :b "
                    "GROUP BY replica_id", b=batch_id,
                )
            )  # fmt: skip
            if submitted_to == "replica-a":
                # worked by A, then by B once A's lease had expired: never by both at once
                assert set(spans) == {"replica-a", "replica-b"}
                assert spans["replica-a"][1] < spans["replica-b"][0]
            else:
                assert set(spans) == {"replica-b"}
        assert await rows(engine, "SELECT count(*) FROM batch_results") == [(len(batches),)]
    finally:
        await engine.dispose()
        await second.stop()
        await first.stop()
