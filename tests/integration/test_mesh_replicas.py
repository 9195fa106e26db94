"""The whole mesh past one machine: two content-svc replicas (content in the database) and two
cj-svc replicas on one throwaway PostgreSQL, the runner given both addresses of each. One content
replica is killed (SIGKILL) while the runner uploads, and the cj replica working the batch while it
is judged: the run completes, every essay is readable from the surviving content replica, and every
comparison is recorded once."""

from __future__ import annotations

import asyncio
import json

import grpc
from huleedu.content.v1 import content_pb2, content_pb2_grpc
from sqlalchemy import text

from mesh_server import database
from tests.support.processes import ServiceProcess
from tests.support.tools import tool


async def scalar(engine, query: str):
    async with engine.connect() as connection:
        return (await connection.execute(text(query))).scalar()


async def test_run_completes_through_replicas_while_one_of_each_is_killed(pg_cluster, tmp_path) -> None:
    content_url, cj_url = pg_cluster.new_database("content"), pg_cluster.new_database("cj")
    contents = []
    for name in ("content-a", "content-b"):
        (tmp_path / name).mkdir()
        contents.append(
            ServiceProcess(
                "content-svc",
                ["--listen", "127.0.0.1:0", "--database-url", content_url, "--migrate", "--blob-store", "database"],
                tmp_path / name,
            )
        )
    content_addresses = [await c.start() for c in contents]
    both_contents = ",".join(content_addresses)
    judges = []
    for name in ("cj-a", "cj-b"):
        (tmp_path / name).mkdir()
        judges.append(
            ServiceProcess(
                "cj-svc",
                [
                    "--listen",
                    "127.0.0.1:0",
                    "--database-url",
                    cj_url,
                    "--content-address",
                    both_contents,
                    "--migrate",
                    "--judge-provider",
                    "simulated",
                    "--simulated-latency-ms",
                    "20",
                    "--batch-concurrency",
                    "8",
                    "--replica-id",
                    name,
                    "--lease-seconds",
                    "3",
                ],
                tmp_path / name,
            )  # fmt: skip
        )
    cj_addresses = [await j.start() for j in judges]
    content_engine, cj_engine = database.create_engine(content_url), database.create_engine(cj_url)
    folder = tmp_path / "cohort"
    (folder / "students").mkdir(parents=True)
    for i in range(500):  # small files go up in BatchUpload calls of 200
        (folder / "students" / f"student {i:04d}.txt").write_text(f"Essay {i} about rivers and towns. " * (20 + i % 40))
    for i in range(4):  # these stream
        (folder / "students" / f"long {i}.txt").write_text(f"A long essay {i}, one journey. " * 9000)
    runner = await asyncio.create_subprocess_exec(
        tool("cj-runner"), "--content-address", both_contents, "--cj-address", ",".join(cj_addresses),
        "run", str(folder), "--budget", "1000", "--max-words", "60000", "--runs-dir", str(tmp_path / "runs"),
        "--cache-dir", str(tmp_path / "cache"), "--timeout", "300",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):  # the upload is under way: kill a content replica
            while not await scalar(content_engine, "SELECT count(*) FROM content_objects"):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await contents[0].kill()
        async with asyncio.timeout(120):  # the batch is being judged: kill the cj replica working it
            while (await scalar(cj_engine, "SELECT coalesce(max(comparisons_done), 0) FROM batches") or 0) < 200:  # noqa: ASYNC110
                if runner.returncode is not None:
                    output = b"".join(await asyncio.gather(runner.stdout.read(), runner.stderr.read())).decode()
                    raise AssertionError(f"the runner ended before its batch was judged: {output}")
                await asyncio.sleep(0.05)
        owner = await scalar(cj_engine, "SELECT lease_owner FROM batches")
        killed = judges[0] if owner == "cj-a" else judges[1]
        await killed.kill()
        stdout, stderr = await asyncio.wait_for(runner.communicate(), 300)
        output = stdout.decode() + stderr.decode()
        assert runner.returncode == 0, output
        assert "Traceback" not in output

        batches = await scalar(cj_engine, "SELECT count(*) FROM batches")
        state = await scalar(cj_engine, "SELECT state FROM batches")
        done = await scalar(cj_engine, "SELECT comparisons_done FROM batches")
        recorded = await scalar(cj_engine, "SELECT count(*) FROM comparisons WHERE status = 'DONE'")
        pending = await scalar(cj_engine, "SELECT count(*) FROM comparisons WHERE status = 'PENDING'")
        replicas = await scalar(cj_engine, "SELECT count(DISTINCT replica_id) FROM comparisons")
        assert (batches, state, pending) == (1, "COMPLETED", 0)
        assert recorded == done >= 200  # every answer recorded exactly once
        assert replicas == 2  # both replicas judged: the survivor took the batch over

        (run_dir,) = (tmp_path / "runs").iterdir()
        results = json.loads((run_dir / "results.json").read_text())
        assert len(results["essays"]) == 504
        storage_ids = [row[0] for row in await rows(cj_engine, "SELECT text_storage_id FROM batch_essays")]
        async with grpc.aio.insecure_channel(content_addresses[1]) as channel:  # the survivor alone
            stub = content_pb2_grpc.ContentServiceStub(channel)
            stat = await stub.Stat(content_pb2.StatRequest(storage_ids=storage_ids, verify=True))
            assert list(stat.missing_storage_ids) == [] and list(stat.damaged) == []
            assert len(stat.found) == 504
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()
        for service in (*contents, *judges):
            await service.stop()
        await content_engine.dispose()
        await cj_engine.dispose()


async def rows(engine, query: str) -> list:
    async with engine.connect() as connection:
        return list((await connection.execute(text(query))).all())
