"""The content store never serves or keeps a lie: damaged content is DATA_LOSS and repairable,
cancellation never leaves a row without its blob, idle uploads hold nothing, text is text, and
health says when the store cannot be written. On SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import statistics
import threading
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2, content_pb2_grpc
from prometheus_client import REGISTRY
from sqlalchemy import select

from content_svc.blobs import PROBE_NAME
from content_svc.models import ContentObject
from content_svc.store import Description, MiB
from runner.client import write_all
from tests.conftest import start_content
from tests.support.blobs import add_orphan, blobs_of, damage, unfinished
from tests.support.content import BINARY_KIND, download, upload
from tests.support.grpc_client import channel, error_reason, field_violations
from tests.support.readonly import database_read_only, read_only
from tests.support.tools import VENV_BIN, run

ESSAY = ("A coherent essay about the sea, with a beginning, a middle and an end. " * 12).encode()


@pytest.fixture(params=["filesystem", "database"])
def blob_store(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both blob stores (files, database rows) unless it names one."""
    return request.param


def state_of(how: str) -> int:
    return content_pb2.CONTENT_STATE_MISSING if how == "deleted" else content_pb2.CONTENT_STATE_DAMAGED


async def invariants(app) -> tuple[int, list[str]]:
    """(rows, what breaks the store's promise): every row's blob holds its bytes, every blob has its row."""
    async with app.store.sessions() as session:
        rows = list((await session.execute(select(ContentObject))).scalars())
    blobs = await blobs_of(app)
    broken = [f"unfinished blob left: {leftover}" for leftover in await unfinished(app)]
    for row in rows:
        blob = blobs.pop(row.storage_id, None)
        if blob is None:
            broken.append(f"row {row.storage_id} has no blob")
        elif hashlib.sha256(blob).hexdigest() != row.sha256:
            broken.append(f"blob {row.storage_id} does not match its row")
    broken += [f"blob {name} has no row" for name in blobs]
    return len(rows), broken


@pytest.mark.parametrize("repair_with", ["Upload", "BatchUpload"])
@pytest.mark.parametrize("how", ["flipped byte", "truncated", "deleted"])
async def test_damaged_content_is_data_loss_until_an_upload_repairs_it(content_app, how: str, repair_with: str) -> None:
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        stored = await upload(stub, ESSAY)
        await damage(content_app, stored.storage_id, how)
        state_name = "MISSING" if how == "deleted" else "DAMAGED"
        counted = REGISTRY.get_sample_value("huleedu_content_integrity_failures_total", {"state": state_name}) or 0

        stat = await stub.Stat(content_pb2.StatRequest(storage_ids=[stored.storage_id], verify=True))
        assert list(stat.found) == [] and list(stat.missing_storage_ids) == []
        assert [(m.storage_id, m.state) for m in stat.damaged] == [(stored.storage_id, state_of(how))]
        for read in (
            lambda: stub.Get(content_pb2.GetRequest(storage_id=stored.storage_id)),
            lambda: stub.BatchGet(content_pb2.BatchGetRequest(storage_ids=[stored.storage_id])),
            lambda: download(stub, stored.storage_id),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as lost:
                await read()
            assert lost.value.code() == grpc.StatusCode.DATA_LOSS, lost.value.details()
            assert stored.storage_id in lost.value.details() and "upload the same file again" in lost.value.details()
            assert error_reason(lost.value) == "CONTENT_DAMAGED"
        # Found once and counted once (reads after that know it already).
        assert (
            REGISTRY.get_sample_value("huleedu_content_integrity_failures_total", {"state": state_name}) == counted + 1
        )
        # Once a read found it, Stat says so without being asked to hash; FindByChecksum does not
        # offer it as a match (a runner would then skip the upload that repairs it).
        stat = await stub.Stat(content_pb2.StatRequest(storage_ids=[stored.storage_id]))
        assert [m.state for m in stat.damaged] == [state_of(how)]
        found = await stub.FindByChecksum(content_pb2.FindByChecksumRequest(sha256s=[stored.sha256]))
        assert list(found.matches) == [] and [m.storage_id for m in found.damaged] == [stored.storage_id]

        if repair_with == "Upload":
            again = await upload(stub, ESSAY)
            assert (again.storage_id, again.repaired, again.deduplicated) == (stored.storage_id, True, False)
        else:
            item = content_pb2.BatchUploadItem(kind=1, content_type="text/plain", content=ESSAY)
            (again,) = (await stub.BatchUpload(content_pb2.BatchUploadRequest(items=[item]))).results
            assert (again.storage_id, again.repaired, again.deduplicated) == (stored.storage_id, True, False)
        got = await stub.Get(content_pb2.GetRequest(storage_id=stored.storage_id))
        assert got.content == ESSAY and got.metadata.state == content_pb2.CONTENT_STATE_INTACT
        stat = await stub.Stat(content_pb2.StatRequest(storage_ids=[stored.storage_id], verify=True))
        assert [m.storage_id for m in stat.found] == [stored.storage_id] and list(stat.damaged) == []
        twice = await upload(stub, ESSAY)
        assert twice.deduplicated and not twice.repaired
    assert await invariants(content_app) == (1, [])


async def test_download_of_a_large_blob_damaged_in_the_middle_ends_in_data_loss(content_app) -> None:
    data = os.urandom(3 * MiB)
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        stored = await upload(stub, data, chunk=MiB, kind=BINARY_KIND)
        await damage(content_app, stored.storage_id, "flipped byte")  # same size: only the hash tells
        received = 0
        with pytest.raises(grpc.aio.AioRpcError) as lost:
            async for message in stub.Download(content_pb2.DownloadRequest(storage_id=stored.storage_id)):
                received += len(message.chunk)
        assert lost.value.code() == grpc.StatusCode.DATA_LOSS
        assert received == len(data)  # streamed, then refused at the end instead of OK


async def test_content_svc_check_finds_each_case_and_repair_removes_orphans(
    content_app, database_url, blob_store
) -> None:
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        texts = [ESSAY + f" {name}".encode() for name in ("intact", "flipped", "truncated", "deleted")]
        ids = [(await upload(stub, text)).storage_id for text in texts]
    for storage_id, how in zip(ids[1:], ("flipped byte", "truncated", "deleted"), strict=True):
        await damage(content_app, storage_id, how)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    await add_orphan(content_app, "ab" * 16, b"a blob that no row points at", an_hour_ago)
    command = [str(VENV_BIN / "content-svc"), "check", "--database-url", database_url, "--blob-store", blob_store,
               "--storage-dir", str(content_app.settings.storage_dir)]  # fmt: skip

    found = await run(*command)
    assert found.code == 1, found.output
    assert f"damaged: {ids[1]}" in found.stdout and f"damaged: {ids[2]}" in found.stdout
    assert f"missing: {ids[3]}" in found.stdout and f"no row: blob {'ab' * 16}" in found.stdout
    assert ids[0] not in found.stdout
    assert "3 damaged or missing, 1 blobs without a row" in found.stdout

    repaired = await run(*command, "--repair")
    assert repaired.code == 1 and f"removed: blob {'ab' * 16}" in repaired.stdout  # damaged rows remain
    assert "ab" * 16 not in await blobs_of(content_app)
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        stat = await stub.Stat(content_pb2.StatRequest(storage_ids=ids))  # check marked them
        assert [m.storage_id for m in stat.damaged] == ids[1:]
        for text in texts[1:]:
            assert (await upload(stub, text)).repaired
    clean = await run(*command)
    assert clean.code == 0, clean.output
    assert "0 damaged or missing, 0 blobs without a row" in clean.stdout


async def test_start_marks_rows_whose_blob_is_gone(database_url, tmp_path, blob_store) -> None:
    app = await start_content(database_url, tmp_path / "blobs", blob_store=blob_store)
    async with channel(app.address) as ch:
        stored = await upload(content_pb2_grpc.ContentServiceStub(ch), ESSAY)
    await damage(app, stored.storage_id, "deleted")
    await app.stop()
    app = await start_content(database_url, tmp_path / "blobs", blob_store=blob_store)
    try:
        async with channel(app.address) as ch:
            found = await content_pb2_grpc.ContentServiceStub(ch).FindByChecksum(
                content_pb2.FindByChecksumRequest(sha256s=[stored.sha256])
            )
        assert list(found.matches) == [] and [m.storage_id for m in found.damaged] == [stored.storage_id]
    finally:
        await app.stop()


# -- cancellation ---------------------------------------------------------------------------


async def test_cancellation_at_random_points_never_leaves_a_row_without_its_blob(content_app) -> None:
    """200 uploads cancelled after a random number of event-loop steps, which lands on every await
    of the upload path: reading the stream, storing chunks, fsync, rename, and the row's commit."""
    store = content_app.store
    rng = random.Random(17)
    outcomes = {"cancelled": 0, "stored": 0}

    async def chunks(data: bytes, size: int):
        for start in range(0, len(data), size):
            await asyncio.sleep(0)
            yield data[start : start + size]

    def upload(attempt: int, data: bytes) -> Awaitable[object]:
        description = Description(kind="CONTENT_KIND_ESSAY_TEXT", content_type="text/plain", filename=f"{attempt}.txt")
        if attempt % 3 == 2:
            return store.put_many([(description, data), (description, data + b" twin")])
        return store.put_stream(description, chunks(data, rng.choice([512, 4096, 65536])))

    # How long whole uploads take here (PostgreSQL on a busy machine is several times slower than
    # SQLite), so that the cancellations below land all along them, the commit included.
    timings = []
    for attempt in range(-6, 0):
        started = time.perf_counter()
        await upload(attempt, f"timing {attempt} ".encode() * 3000)
        timings.append(time.perf_counter() - started)
    typical = statistics.median(timings)
    timing_rows, _ = await invariants(content_app)
    for attempt in range(200):
        task = asyncio.ensure_future(upload(attempt, f"essay {attempt} ".encode() * rng.randint(1, 3000)))
        for _ in range(rng.randint(0, 40)):
            await asyncio.sleep(0)
        if rng.random() < 0.5:
            await asyncio.sleep(rng.random() * 1.5 * typical)  # lands inside threads' work: fsync, commit
        task.cancel()
        try:
            await task
            outcomes["stored"] += 1
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
    await store.close()
    rows, broken = await invariants(content_app)
    assert broken == []
    # Cancellations landed both before and after the commit began: rows exist that their cancelled
    # callers never saw (the case that used to lose the blob and keep the row).
    rows -= timing_rows
    assert outcomes["cancelled"] > 50 and rows > outcomes["stored"] * 2, (outcomes, rows, typical)


async def test_client_cancels_at_random_points_over_grpc(content_app) -> None:
    rng = random.Random(5)
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        for attempt in range(40):
            data = f"essay {attempt} ".encode() * rng.randint(100, 20000)
            call = stub.Upload()
            writing = asyncio.ensure_future(write_all(call, iter_upload(data, 16 * 1024)))
            await asyncio.sleep(rng.random() * 0.02)
            call.cancel()
            try:
                await asyncio.wait_for(asyncio.gather(writing, return_exceptions=True), 10)
            except TimeoutError:
                raise AssertionError("HANG-IN-CLIENT-WRITE") from None
    await asyncio.sleep(0.5)  # the server sees the cancels asynchronously
    try:
        await asyncio.wait_for(content_app.store.close(), 10)
    except TimeoutError:
        raise AssertionError(f"HANG-IN-STORE-CLOSE {content_app.store._committing}") from None
    assert (await invariants(content_app))[1] == []


def iter_upload(data: bytes, chunk: int):
    from tests.support.content import upload_requests

    return upload_requests(data, chunk)


# -- bounded resources ----------------------------------------------------------------------


def disk_bytes(root: Path) -> int:
    """Disk the blobs take (the health check's probe file, written and removed every 2 s, left out)."""
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file() and p.name != PROBE_NAME)


async def test_idle_uploads_take_no_disk_and_no_thread_and_are_closed(database_url, tmp_path) -> None:
    app = await start_content(database_url, tmp_path / "blobs", upload_idle_seconds=2.0)
    try:
        async with channel(app.address) as ch:
            stub = content_pb2_grpc.ContentServiceStub(ch)
            threads_before, disk_before = threading.active_count(), disk_bytes(tmp_path / "blobs")
            idle = []
            for _ in range(50):
                call = stub.Upload()
                header = content_pb2.UploadHeader(kind=BINARY_KIND, content_type="a/b", declared_size=64 * MiB)
                await call.write(content_pb2.UploadRequest(header=header))
                idle.append(call)
            await asyncio.sleep(0.5)
            assert disk_bytes(tmp_path / "blobs") == disk_before  # nothing reserved for what never came
            assert threading.active_count() <= threads_before + 10
            real = await upload(stub, ESSAY)  # meanwhile a real upload goes through
            assert len(real.storage_id) == 32
            started = time.monotonic()
            codes = await asyncio.gather(*(closed_with(call) for call in idle))
            assert time.monotonic() - started < 10
            assert {code for code, _ in codes} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert all("--upload-idle-seconds" in details for _, details in codes)
            assert threading.active_count() <= threads_before + 10
        assert await invariants(app) == (1, [])
    finally:
        await app.stop()


async def closed_with(call) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize(
    ("limits", "named"),
    [({"max_uploads": 3}, "--max-uploads)"), ({"max_uploads_per_connection": 3}, "--max-uploads-per-connection")],
    ids=["per server", "per connection"],
)
async def test_concurrent_upload_limits_say_which(sqlite_url, tmp_path, limits: dict, named: str) -> None:
    app = await start_content(sqlite_url, tmp_path / "blobs", **limits)
    try:
        async with channel(app.address) as ch:
            stub = content_pb2_grpc.ContentServiceStub(ch)
            header = content_pb2.UploadHeader(kind=1, content_type="text/plain", declared_size=len(ESSAY))
            open_calls = []
            for _ in range(3):
                call = stub.Upload()
                await call.write(content_pb2.UploadRequest(header=header))
                open_calls.append(call)
            await asyncio.sleep(0.2)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await upload(stub, ESSAY)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert named in refused.value.details()
            for call in open_calls:  # the open ones finish normally, and the slots come back
                await call.write(content_pb2.UploadRequest(chunk=ESSAY))
                await call.done_writing()
                assert (await call).size == len(ESSAY)
            assert (await upload(stub, ESSAY)).deduplicated
    finally:
        await app.stop()


# -- text rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"an essay\x00with a NUL", "NUL byte at offset 8"), (b"caf\xe9 in latin-1", "invalid UTF-8 at offset 3"),
     (b"ends inside \xe2\x82", "ends inside a UTF-8 character")],
    ids=["NUL", "latin-1", "cut UTF-8"],
)  # fmt: skip
async def test_text_kinds_must_be_utf8_without_nul(content_app, content: bytes, why: str) -> None:
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            await upload(stub, content, filename="bad.txt")
        assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert why in streamed.value.details() and "bad.txt" in streamed.value.details()
        assert "chunk" in field_violations(streamed.value)
        item = content_pb2.BatchUploadItem(kind=1, content_type="text/plain", filename="bad.txt", content=content)
        (result,) = (await stub.BatchUpload(content_pb2.BatchUploadRequest(items=[item]))).results
        assert result.error.error_code == common_pb2.ERROR_CODE_VALIDATION_ERROR and why in result.error.message
        assert result.error.details["field"] == "items[0].content"
        # The same bytes as a source document are fine: that kind is not text.
        assert len((await upload(stub, content, kind=BINARY_KIND)).storage_id) == 32
    assert await invariants(content_app) == (1, [])


async def test_nul_in_string_fields_is_invalid_argument_on_the_server(content_app) -> None:
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        for header in ({"filename": "a\x00.txt"}, {"content_type": "text/plain\x00"}):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await upload(stub, ESSAY, **header)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"header.{next(iter(header))}" in field_violations(refused.value)
            assert "\x00" not in refused.value.details()  # the message shows it escaped
    assert await invariants(content_app) == (0, [])


async def test_a_2_mib_essay_is_refused_at_upload_naming_the_limit(content_app) -> None:
    essay = b"word " * (2 * MiB // 5)
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as declared:
            await upload(stub, essay, filename="long.txt")
        assert declared.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "--max-text-bytes" in declared.value.details() and "long.txt" in declared.value.details()
    assert await invariants(content_app) == (0, [])


# -- health ---------------------------------------------------------------------------------


async def serving(app, service: str = "huleedu.content.v1.ContentService") -> int:
    async with channel(app.address) as ch:
        return (await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service))).status


async def wait_for_health(app, wanted: int, seconds: float = 8.0) -> float:
    started = time.monotonic()
    while await serving(app) != wanted:
        assert time.monotonic() - started < seconds, f"health did not become {wanted} within {seconds} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_health_not_serving_while_the_database_cannot_be_written(database_url, tmp_path, request) -> None:
    app = await start_content(database_url, tmp_path / "blobs")
    app.server.readiness_interval = 0.2
    try:
        await wait_for_health(app, health_pb2.HealthCheckResponse.SERVING)
        cluster = None if database_url.startswith("sqlite") else request.getfixturevalue("pg_cluster")
        async with database_read_only(database_url, cluster):
            await wait_for_health(app, health_pb2.HealthCheckResponse.NOT_SERVING)
        await wait_for_health(app, health_pb2.HealthCheckResponse.SERVING)
        async with channel(app.address) as ch:  # and it takes writes again
            assert len((await upload(content_pb2_grpc.ContentServiceStub(ch), ESSAY)).storage_id) == 32
    finally:
        await app.stop()


async def test_health_not_serving_while_the_blob_folder_cannot_be_written(sqlite_url, tmp_path) -> None:
    app = await start_content(sqlite_url, tmp_path / "blobs")
    app.server.readiness_interval = 0.2
    try:
        with read_only(tmp_path / "blobs"):
            await wait_for_health(app, health_pb2.HealthCheckResponse.NOT_SERVING)
        await wait_for_health(app, health_pb2.HealthCheckResponse.SERVING)
    finally:
        await app.stop()
