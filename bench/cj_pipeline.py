"""CJ pipeline throughput: comparisons persisted per second, and waves against the ideal wall time.

1. Zero-latency simulated judge, 200 essays, budget 2,000: comparisons written (PENDING), judged
   and recorded per second, on SQLite and (with --postgres) on a throwaway PostgreSQL.
2. 100 essays x 10 comparisons each (budget 500) with a 200 ms judge at concurrency 32: wall time
   of the batch beside the ideal (calls x latency / concurrency).
Targets: >= 300 comparisons/s; <= 1.25 x the ideal.
Run: .venv/bin/python bench/cj_pipeline.py [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from huleedu.cj.v1 import assessment_pb2, assessment_pb2_grpc  # noqa: E402
from huleedu.common.v1 import common_pb2  # noqa: E402
from huleedu.content.v1 import content_pb2, content_pb2_grpc  # noqa: E402

from bench._servers import cj_service, content_service  # noqa: E402


async def run_batch(content: str, cj: str, essays: int, budget: int) -> tuple[float, assessment_pb2.Batch]:
    async with grpc.aio.insecure_channel(content) as cc, grpc.aio.insecure_channel(cj) as jc:
        items = [
            content_pb2.BatchUploadItem(kind=1, content_type="text/plain", content=f"essay {i} {uuid.uuid4()}".encode())
            for i in range(essays)
        ]
        stored = await content_pb2_grpc.ContentServiceStub(cc).BatchUpload(content_pb2.BatchUploadRequest(items=items))
        stub = assessment_pb2_grpc.AssessmentServiceStub(jc)
        request = assessment_pb2.SubmitBatchRequest(
            request_id=str(uuid.uuid4()), batch_label="bench", comparison_budget=budget,
            essays=[common_pb2.EssayRef(essay_id=f"e{i}", text_storage_id=r.storage_id) for i, r in enumerate(stored.results)],
        )  # fmt: skip
        started = time.perf_counter()
        batch = (await stub.SubmitBatch(request)).batch
        async for update in stub.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=batch.batch_id)):
            batch = update.batch
        return time.perf_counter() - started, batch


def measure(database: str, cj_url: str | None, content_url: str | None) -> None:
    with content_service(content_url) as content:
        extra = ["--judge-provider", "simulated", "--batch-concurrency", "64"]
        with cj_service(content, cj_url, extra) as cj:
            seconds, batch = asyncio.run(run_batch(content, cj, 200, 2000))
            done = batch.progress.comparisons_done + batch.progress.comparisons_failed
            print(f"{database:<10} zero-latency judge: {done} comparisons in {seconds:.2f} s = {done / seconds:.0f}/s "
                  f"(state {assessment_pb2.BatchState.Name(batch.state)})")  # fmt: skip
        extra = ["--judge-provider", "simulated", "--simulated-latency-ms", "200", "--batch-concurrency", "32"]
        with cj_service(content, cj_url, extra) as cj:
            seconds, batch = asyncio.run(run_batch(content, cj, 100, 500))
            calls = batch.progress.comparisons_done + batch.progress.comparisons_failed
            ideal = calls * 0.2 / 32
            print(f"{database:<10} 200 ms judge, concurrency 32: {calls} calls in {seconds:.2f} s; ideal {ideal:.2f} s; "
                  f"ratio {seconds / ideal:.2f} ({batch.progress.wave} waves)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL")
    args = parser.parse_args()
    measure("SQLite", None, None)
    if args.postgres:
        from tests.support import postgres

        cluster = postgres.start_cluster()
        try:
            cluster.psql("CREATE DATABASE bench_content")
            cluster.psql("CREATE DATABASE bench_cj")
            measure("PostgreSQL", cluster.url("bench_cj"), cluster.url("bench_content"))
        finally:
            postgres.remove(cluster)


if __name__ == "__main__":
    main()
