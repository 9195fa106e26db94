"""One batch of the contract's maximum size (9,999 essays, simulated judge) while another client
reads its own small batch: does the CJ Service stay responsive to everyone else?

Separate processes on SQLite. Reports: how long BatchUpload and SubmitBatch of the big batch took;
the other client's GetBatch latency (p50, p99, max) polled every 50 ms for `--seconds`; the big
batch's progress in that time; the peak resident memory of cj-svc; how long CancelBatch took.
Run: .venv/bin/python bench/big_batch.py [--essays 9999] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from huleedu.cj.v1 import assessment_pb2, assessment_pb2_grpc  # noqa: E402
from huleedu.common.v1 import common_pb2  # noqa: E402
from huleedu.content.v1 import content_pb2, content_pb2_grpc  # noqa: E402

from bench._servers import PIDS, cj_service, content_service  # noqa: E402
from bench.load import memory_mib  # noqa: E402


async def store(stub, texts: list[str]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(texts), 1000):
        items = [
            content_pb2.BatchUploadItem(kind=common_pb2.CONTENT_KIND_ESSAY_TEXT, content_type="text/plain",
                                        content=t.encode())
            for t in texts[start : start + 1000]
        ]  # fmt: skip
        response = await stub.BatchUpload(content_pb2.BatchUploadRequest(items=items), timeout=120)
        ids += [r.storage_id for r in response.results]
    return ids


def request(ids: list[str], label: str, budget: int) -> assessment_pb2.SubmitBatchRequest:
    return assessment_pb2.SubmitBatchRequest(
        request_id=str(uuid.uuid4()),
        batch_label=label,
        comparison_budget=budget,
        essays=[common_pb2.EssayRef(essay_id=f"e{i}", text_storage_id=s) for i, s in enumerate(ids)],
    )


async def main(essays: int, seconds: float) -> None:
    with (
        content_service() as content,
        cj_service(content, extra=["--judge-provider", "simulated", "--simulated-latency-ms", "20"]) as cj,
    ):
        async with grpc.aio.insecure_channel(content) as cc, grpc.aio.insecure_channel(cj) as jc:
            store_stub = content_pb2_grpc.ContentServiceStub(cc)
            assessment = assessment_pb2_grpc.AssessmentServiceStub(jc)
            texts = [f"Essay {i} {uuid.uuid4()}: " + "words about the topic " * (20 + i % 40) for i in range(essays)]
            started = time.perf_counter()
            big_ids = await store(store_stub, texts)
            uploaded = time.perf_counter() - started
            small_ids = await store(store_stub, [f"small essay {i} " * 30 for i in range(10)])
            small = (await assessment.SubmitBatch(request(small_ids, "other client", 10))).batch

            started = time.perf_counter()
            big = (await assessment.SubmitBatch(request(big_ids, "national cohort", essays * 3), timeout=300)).batch
            submitted = time.perf_counter() - started

            latencies: list[float] = []
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                began = time.perf_counter()
                await assessment.GetBatch(assessment_pb2.GetBatchRequest(batch_id=small.batch_id), timeout=120)
                latencies.append(time.perf_counter() - began)
                await asyncio.sleep(0.05)
            progress = (await assessment.GetBatch(assessment_pb2.GetBatchRequest(batch_id=big.batch_id))).batch
            started = time.perf_counter()
            try:
                await assessment.CancelBatch(
                    assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=big.batch_id), timeout=120
                )
                cancelled = f"{time.perf_counter() - started:.2f} s"
            except grpc.aio.AioRpcError as error:  # it finished within the time measured
                cancelled = f"not needed ({error.details()})"
            _, peak = memory_mib(PIDS[cj])

    cuts = statistics.quantiles(latencies, n=100)
    print(f"big batch: {essays} essays; BatchUpload {uploaded:.1f} s; SubmitBatch {submitted:.2f} s")
    print(
        f"other client's GetBatch over {seconds:.0f} s: n={len(latencies)} p50 {cuts[49] * 1000:.1f} ms, "
        f"p99 {cuts[98] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms (target p99 < 200 ms)"
    )
    print(
        f"big batch after {seconds:.0f} s: {assessment_pb2.BatchState.Name(progress.state)}, wave "
        f"{progress.progress.wave}, {progress.progress.comparisons_done} comparisons answered"
    )
    print(f"CancelBatch of the big batch: {cancelled}; cj-svc peak resident memory {peak:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--essays", type=int, default=9999)
    parser.add_argument("--seconds", type=float, default=60.0)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.essays, arguments.seconds))
