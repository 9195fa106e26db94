"""The Content Service against a real server, on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os

import grpc
import pytest
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2, content_pb2_grpc

from content_svc.blobs import BlobDirectory
from content_svc.store import MiB
from runner.client import write_all
from tests.conftest import start_content
from tests.support.blobs import add_unfinished, blobs_of, unfinished
from tests.support.content import download, upload
from tests.support.grpc_client import channel, error_reason, field_violations
from tests.support.readonly import read_only

ESSAY_5K = (
    ("Åsa skrev om vädret – «il fait beau», 天気がいい. " * 120).encode()[: 5 * 1024].decode(errors="ignore").encode()
)
# Random bytes are no text: they are uploaded as the one binary kind.
BINARY = {"kind": common_pb2.CONTENT_KIND_SOURCE_DOCUMENT, "content_type": "application/octet-stream"}


@pytest.fixture(params=["filesystem", "database"])
def blob_store(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both blob stores (files, database rows) unless it names one."""
    return request.param


async def blob_files(app) -> list[str]:
    """Every blob, finished or not."""
    return sorted([*await blobs_of(app), *await unfinished(app)])


async def row_count(app) -> int:
    async with app.store.engine.connect() as connection:
        return (await connection.exec_driver_sql("SELECT count(*) FROM content_objects")).scalar_one()


@pytest.mark.parametrize("data", [b"x", ESSAY_5K], ids=["1 byte", "5 KiB UTF-8 essay"])
async def test_round_trip(content_app, data: bytes) -> None:
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        stored = await upload(stub, data, filename="ess\u00e4y.txt")
        assert len(stored.storage_id) == 32 and stored.size == len(data)
        assert stored.sha256 == hashlib.sha256(data).hexdigest() and not stored.deduplicated
        got = await stub.Get(content_pb2.GetRequest(storage_id=stored.storage_id))
        assert got.content == data
        assert got.metadata.filename == "ess\u00e4y.txt" and got.metadata.kind == common_pb2.CONTENT_KIND_ESSAY_TEXT
        metadata, downloaded = await download(stub, stored.storage_id)
        assert downloaded == data and metadata.size == len(data)


async def test_50_mib_stream_round_trip_in_64_kib_download_chunks(content_app) -> None:
    data = os.urandom(50 * MiB)
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        stored = await upload(stub, data, chunk=1 * MiB, **BINARY)
        assert stored.size == len(data)
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await stub.Get(content_pb2.GetRequest(storage_id=stored.storage_id))
        assert too_big.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "Download" in too_big.value.details()
        sizes = []
        parts = []
        async for message in stub.Download(content_pb2.DownloadRequest(storage_id=stored.storage_id)):
            sizes.append(len(message.chunk))
            parts.append(message.chunk)
        assert b"".join(parts) == data
        assert max(sizes) == 64 * 1024


async def test_deduplication_sequential_and_concurrent(content_app) -> None:
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        first = await upload(stub, ESSAY_5K)
        again = await upload(stub, ESSAY_5K)
        assert again.storage_id == first.storage_id and again.deduplicated
        # Twins small enough to be committed together, and twins streamed to their own blobs: each
        # upload declares the sha256, which none has stored when it starts.
        for size in (200 * 1024, 2 * MiB):
            twins = os.urandom(size)
            results = await asyncio.gather(*(upload(stub, twins, chunk=64 * 1024, **BINARY) for _ in range(10)))
            assert len({r.storage_id for r in results}) == 1
            assert sum(not r.deduplicated for r in results) == 1
    assert len(await blob_files(content_app)) == 3
    assert await row_count(content_app) == 3


@pytest.mark.parametrize("blob_store", ["filesystem"])  # the blob folders made read-only
async def test_stored_content_sent_with_its_sha256_is_checked_not_written_again(content_app) -> None:
    data = os.urandom(3 * MiB)
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        first = await upload(stub, data, chunk=MiB, **BINARY)
        # From here on nothing can be written to the blob folders; the stored blob can still be read.
        root = content_app.store.blobs.root
        with read_only(root, *root.iterdir()):
            again = await upload(stub, data, chunk=MiB, **BINARY)
            assert again.storage_id == first.storage_id and again.deduplicated and not again.repaired
            # Without the checksum the service cannot know the content before it has it all: it stores it.
            with pytest.raises(grpc.aio.AioRpcError) as undeclared:
                await upload(stub, data, chunk=MiB, sha256="", **BINARY)
            assert undeclared.value.code() == grpc.StatusCode.UNAVAILABLE
            # A stored checksum with other bytes is still refused: the stream is hashed, not trusted.
            with pytest.raises(grpc.aio.AioRpcError) as forged:
                await upload(stub, os.urandom(3 * MiB), chunk=MiB, sha256=first.sha256, **BINARY)
            assert forged.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "header.sha256" in field_violations(forged.value)
    assert await row_count(content_app) == 1


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ({"declared_size": 10}, "header.declared_size"),
        ({"declared_size": 3}, "header.declared_size"),
        ({"sha256": "0" * 64}, "header.sha256"),
    ],
    ids=["fewer bytes than declared", "more bytes than declared", "sha256 mismatch"],
)
async def test_mismatch_leaves_nothing(content_app, header: dict, field: str) -> None:
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await upload(stub, b"hello", **header)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value)
    assert await blob_files(content_app) == [] and await row_count(content_app) == 0


async def test_missing_and_repeated_header_refused(content_app) -> None:
    async def chunk_first():
        yield content_pb2.UploadRequest(chunk=b"data")

    async def header_twice():
        header = content_pb2.UploadHeader(kind=1, content_type="text/plain", declared_size=4)
        yield content_pb2.UploadRequest(header=header)
        yield content_pb2.UploadRequest(header=header)

    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        for requests in (chunk_first(), header_twice()):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Upload(requests)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "header" in caught.value.details()
    assert await blob_files(content_app) == [] and await row_count(content_app) == 0


async def test_oversize_refused_as_soon_as_exceeded(database_url, tmp_path, blob_store) -> None:
    app = await start_content(database_url, tmp_path / "blobs", max_object_bytes=1 * MiB, blob_store=blob_store)
    sent = 0
    try:
        async with channel(app.address) as ch:
            stub = content_pb2_grpc.ContentServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as declared:
                await upload(stub, b"z" * (2 * MiB))
            assert declared.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "maximum" in declared.value.details()

            # no declared size: refused at the first chunk past the maximum, not at the end
            def endless():
                nonlocal sent
                yield content_pb2.UploadRequest(
                    header=content_pb2.UploadHeader(kind=1, content_type="a/b", declared_size=0)
                )
                while sent < 100 * MiB:
                    yield content_pb2.UploadRequest(chunk=b"z" * 256 * 1024)
                    sent += 256 * 1024

            call = stub.Upload()
            await write_all(call, endless())
            with pytest.raises(grpc.aio.AioRpcError):
                await call
        # The server stops reading soon after the maximum (it drains at most 16 MiB so that
        # well-behaved clients see its status); the client could not send its 100 MiB.
        assert sent < 40 * MiB
        assert await blob_files(app) == [] and await row_count(app) == 0
    finally:
        await app.stop()


@pytest.mark.parametrize("stored_before", [False, True], ids=["new content", "content stored before"])
async def test_client_cancel_mid_stream_leaves_nothing(content_app, stored_before: bool) -> None:
    started = asyncio.Event()
    content = b"c" * 10 * MiB
    # Content stored before, with its sha256 declared, is only hashed: the cancel must end that too.
    sha256 = hashlib.sha256(content).hexdigest() if stored_before else ""

    async def slow():
        yield content_pb2.UploadRequest(
            header=content_pb2.UploadHeader(kind=5, content_type="a/b", declared_size=len(content), sha256=sha256)
        )
        for _ in range(5):
            yield content_pb2.UploadRequest(chunk=content[:MiB])
        started.set()
        await asyncio.sleep(30)

    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        before = []
        if stored_before:
            await upload(stub, content, chunk=MiB, **BINARY)
            before = await blob_files(content_app)
        call = stub.Upload(slow())
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.sleep(0.3)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    for _ in range(50):  # the server notices the cancel asynchronously
        if await blob_files(content_app) == before:
            break
        await asyncio.sleep(0.1)
    assert await blob_files(content_app) == before and await row_count(content_app) == len(before)


async def test_a_failed_write_back_fails_the_upload(tmp_path, monkeypatch) -> None:
    from content_svc import blobs

    calls = []

    def fail_first(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "simulated write-back failure")

    monkeypatch.setattr(blobs, "_sync_and_release", fail_first)
    writer = BlobDirectory(tmp_path).writer("b" * 32)
    with pytest.raises(OSError, match="simulated write-back failure"):
        for _ in range(20):  # write-backs start at 8 and 16 MiB; only the first fails
            await writer.write(b"w" * MiB)
        await writer.finish()
    await writer.discard()


async def test_a_discarded_writer_leaves_no_file(tmp_path) -> None:
    writer = BlobDirectory(tmp_path).writer("a" * 32)
    assert not (tmp_path / "aa").exists()  # nothing is created before the first chunk
    for _ in range(2):
        await writer.write(b"w" * MiB)
    await asyncio.sleep(0.1)
    assert writer.temp_path.exists()
    await writer.discard()  # mid-stream: no finish() came
    assert list(tmp_path.rglob("*")) == [tmp_path / "aa"]


async def test_batch_upload_status_per_item(content_app) -> None:
    items = [
        content_pb2.BatchUploadItem(kind=1, content_type="text/plain", content=f"essay {i}".encode()) for i in range(20)
    ]
    items.append(content_pb2.BatchUploadItem(kind=1, content_type="text/plain", content=b"essay 3"))  # duplicate
    items.append(content_pb2.BatchUploadItem(kind=1, content_type="text/plain", content=b"bad", sha256="1" * 64))
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        response = await stub.BatchUpload(content_pb2.BatchUploadRequest(items=items))
        assert [r.index for r in response.results] == list(range(22))
        assert all(r.storage_id and not r.HasField("error") for r in response.results[:21])
        assert response.results[20].storage_id == response.results[3].storage_id
        assert response.results[20].deduplicated
        bad = response.results[21]
        assert bad.storage_id == "" and bad.error.error_code == common_pb2.ERROR_CODE_VALIDATION_ERROR
        assert "sha256" in bad.error.message
        got = await stub.Get(content_pb2.GetRequest(storage_id=response.results[7].storage_id))
        assert got.content == b"essay 7"
    assert await row_count(content_app) == 20


async def test_stat_find_by_checksum_and_not_found(content_app) -> None:
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        stored = await upload(stub, ESSAY_5K)
        missing_id = "f" * 32
        stat = await stub.Stat(content_pb2.StatRequest(storage_ids=[stored.storage_id, missing_id]))
        assert [m.storage_id for m in stat.found] == [stored.storage_id]
        assert stat.found[0].sha256 == stored.sha256 and stat.found[0].size == len(ESSAY_5K)
        assert list(stat.missing_storage_ids) == [missing_id]
        unknown_sha = "e" * 64
        found = await stub.FindByChecksum(content_pb2.FindByChecksumRequest(sha256s=[stored.sha256, unknown_sha]))
        assert [(m.sha256, m.storage_id) for m in found.matches] == [(stored.sha256, stored.storage_id)]
        assert list(found.missing_sha256s) == [unknown_sha]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Get(content_pb2.GetRequest(storage_id=missing_id))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing_id in caught.value.details()
        assert error_reason(caught.value) == "RESOURCE_NOT_FOUND"


async def test_batch_get_in_order_with_missing_and_deferred(content_app) -> None:
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        small = await upload(stub, ESSAY_5K)
        big_bytes = os.urandom(3 * MiB)
        big = await upload(stub, big_bytes, **BINARY)
        second_big = await upload(stub, os.urandom(2 * MiB), **BINARY)
        missing_id = "f" * 32
        response = await stub.BatchGet(
            content_pb2.BatchGetRequest(
                storage_ids=[big.storage_id, missing_id, small.storage_id, second_big.storage_id, small.storage_id]
            )
        )
        # request order, each id once; 3 MiB + 5 KiB fit in 4 MiB, the 2 MiB one is deferred
        assert [(i.metadata.storage_id, len(i.content)) for i in response.items] == [
            (big.storage_id, len(big_bytes)), (small.storage_id, len(ESSAY_5K))
        ]  # fmt: skip
        assert response.items[0].content == big_bytes and response.items[1].metadata.sha256 == small.sha256
        assert list(response.missing_storage_ids) == [missing_id]
        assert list(response.deferred_storage_ids) == [second_big.storage_id]
        again = await stub.BatchGet(content_pb2.BatchGetRequest(storage_ids=list(response.deferred_storage_ids)))
        assert [i.metadata.storage_id for i in again.items] == [second_big.storage_id]
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.BatchGet(content_pb2.BatchGetRequest(storage_ids=["a" * 64]))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "storage_ids[0]" in field_violations(bad.value)


async def test_everything_still_there_after_restart_and_what_a_crash_left_is_removed(
    database_url, tmp_path, blob_store
) -> None:
    app = await start_content(database_url, tmp_path / "blobs", blob_store=blob_store)
    async with channel(app.address) as ch:
        stored = await upload(content_pb2_grpc.ContentServiceStub(ch), ESSAY_5K)
    kept = await add_unfinished(app)
    await app.stop()
    app = await start_content(database_url, tmp_path / "blobs", blob_store=blob_store)
    try:
        assert await unfinished(app) == kept
        async with channel(app.address) as ch:
            got = await content_pb2_grpc.ContentServiceStub(ch).Get(
                content_pb2.GetRequest(storage_id=stored.storage_id)
            )
        assert got.content == ESSAY_5K
    finally:
        await app.stop()


async def test_unmigrated_database_refused_with_instructions(sqlite_url, tmp_path) -> None:
    from content_svc.app import start
    from content_svc.settings import ContentSettings
    from mesh_server.database import NotMigrated

    with pytest.raises(NotMigrated, match="content-svc migrate"):
        await start(ContentSettings(listen="127.0.0.1:0", database_url=sqlite_url, storage_dir=tmp_path / "b"))


async def test_health_not_serving_while_storage_unusable(sqlite_url, tmp_path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    app = await start_content(sqlite_url, tmp_path / "blobs")
    app.server.readiness_interval = 0.1  # read by the watcher before its first sleep
    try:
        async with channel(app.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            name = "huleedu.content.v1.ContentService"
            (tmp_path / "blobs").rename(tmp_path / "moved")
            await asyncio.sleep(2.5)
            status = (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            (tmp_path / "moved").rename(tmp_path / "blobs")
            await asyncio.sleep(2.5)
            status = (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
            assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await app.stop()


async def test_concurrent_small_uploads_are_committed_together(content_app) -> None:
    """Group commit: uploads that finish while a commit is under way share the next one (one
    durable write of their blobs, one transaction for their rows), each still its own result."""
    writes: list[int] = []
    original = content_app.store.blobs.write_small

    async def counted(contents: dict[str, bytes]) -> None:
        writes.append(len(contents))
        await original(contents)

    content_app.store.blobs.write_small = counted
    essays = [f"Essay {i}: ".encode() + ESSAY_5K for i in range(32)] + [ESSAY_5K]
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        stored = await asyncio.gather(*(upload(stub, essay) for essay in essays + [ESSAY_5K]))
        assert len({s.storage_id for s in stored}) == 33  # the repeated essay once
        assert sum(s.deduplicated for s in stored) == 1
        for essay, result in zip(essays, stored, strict=False):
            got = await stub.Get(content_pb2.GetRequest(storage_id=result.storage_id))
            assert got.content == essay
    assert sum(writes) == 33 and len(writes) <= 8, writes
    assert await row_count(content_app) == 33
