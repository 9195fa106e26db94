"""Content Service replicas on one database (`--blob-store database`): any replica serves what
another stored, and one channel given both addresses spreads calls over them and, when one stops,
goes on with the other without a retry loop of its own (grpc's retry policy)."""

from __future__ import annotations

from huleedu.content.v1 import content_pb2, content_pb2_grpc

from mesh_common.tls import open_channel
from tests.conftest import start_content
from tests.support.content import upload

ESSAY = b"An essay stored once, served by every replica. " * 20


def count_reads(app, counts: dict[str, int], name: str) -> None:
    original = app.store.read

    async def counted(*args, **kwargs):
        counts[name] = counts.get(name, 0) + 1
        return await original(*args, **kwargs)

    app.store.read = counted


async def test_replicas_share_the_store_and_one_channel_spreads_over_them_and_fails_over(
    database_url, tmp_path
) -> None:
    first = await start_content(database_url, tmp_path / "unused-a", blob_store="database")
    second = await start_content(database_url, tmp_path / "unused-b", blob_store="database")
    counts: dict[str, int] = {}
    count_reads(first, counts, "first")
    count_reads(second, counts, "second")
    try:
        async with open_channel(f"{first.address},{second.address}") as channel:
            stub = content_pb2_grpc.ContentServiceStub(channel)
            stored = await upload(stub, ESSAY)
            for _ in range(20):
                got = await stub.Get(content_pb2.GetRequest(storage_id=stored.storage_id))
                assert got.content == ESSAY
            assert counts.get("first", 0) >= 5 and counts.get("second", 0) >= 5, counts
            await first.stop()
            before = counts["second"]
            for _ in range(10):  # no retry loop here: the channel's policy sends them to the second
                got = await stub.Get(content_pb2.GetRequest(storage_id=stored.storage_id), timeout=10)
                assert got.content == ESSAY
            assert counts["second"] == before + 10
    finally:
        await second.stop()
        await first.stop()
