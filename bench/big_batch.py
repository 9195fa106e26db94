"""One big batch (simulated judge) while another client reads its own small batch: does the CJ
Service stay responsive to everyone else, and does a national cohort run to the end?

Separate processes on SQLite. Reports: how long BatchUpload and SubmitBatch of the big batch took;
the other client's GetBatch latency (p50, p99, max) polled every 50 ms for `--seconds`; the big
batch's progress in that time; the peak resident memory of cj-svc; how long CancelBatch took.
With `--to-end` the big batch is not cancelled but run to COMPLETED (5 comparisons per essay), and
its served SSR and ranks are checked against the engine run alone on the comparisons it recorded.
Run: .venv/bin/python bench/big_batch.py [--essays 9999] [--seconds 60] [--to-end]
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
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from huleedu.cj.v1 import assessment_pb2, assessment_pb2_grpc  # noqa: E402
from huleedu.common.v1 import common_pb2  # noqa: E402
from huleedu.content.v1 import content_pb2, content_pb2_grpc  # noqa: E402

from bench._servers import PIDS, cj_service, content_service  # noqa: E402
from bench.load import memory_mib  # noqa: E402
from cj_svc.engine.bradley_terry import Comparisons, scale_separation_reliability  # noqa: E402
from cj_svc.engine.population import final_fit  # noqa: E402
from cj_svc.engine.prior import PriorChoice  # noqa: E402


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


async def all_comparisons(assessment, batch_id: str) -> list:
    rows, token = [], ""
    while True:
        page = await assessment.ListComparisons(
            assessment_pb2.ListComparisonsRequest(batch_id=batch_id, page_size=1000, page_token=token), timeout=120
        )
        rows += page.comparisons
        token = page.next_page_token
        if not token:
            return rows


def engine_alone(results, comparisons) -> str:
    """The served SSR and ranks against a fit of the recorded answers by the engine in this process."""
    position = {e.essay_id: i for i, e in enumerate(results.essays)}
    done = [c for c in comparisons if c.winner != assessment_pb2.WINNER_UNSPECIFIED]
    data = Comparisons.from_lists(
        [position[c.essay_a_id] for c in done],
        [position[c.essay_b_id] for c in done],
        [c.winner == assessment_pb2.WINNER_ESSAY_A for c in done],
    )
    n = len(results.essays)
    alpha = PriorChoice.replay(n, data, np.array([c.wave for c in done], np.int64)).final_precision
    alone = final_fit(n, data, alpha)  # as the workflow's final numbers (no anchors here)
    ssr = scale_separation_reliability(alone.scores, alone.standard_errors)
    rank = np.empty(n, int)
    rank[np.argsort(-alone.scores, kind="stable")] = np.arange(1, n + 1)
    served = np.array([e.rank for e in results.essays])
    return (
        f"served SSR {results.scale_separation_reliability:.6f}, engine alone {ssr:.6f}; ranks equal for "
        f"{int(np.sum(served == rank))} of {n} essays; {len(done)} comparisons"
    )


async def main(essays: int, seconds: float, to_end: bool) -> None:
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
            budget = essays * (5 if to_end else 3)
            big = (await assessment.SubmitBatch(request(big_ids, "national cohort", budget), timeout=300)).batch
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
            if to_end:
                async for update in assessment.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=big.batch_id)):
                    final = update.batch
                ran = time.perf_counter() - started + seconds
                results = (
                    await assessment.GetBatchResults(
                        assessment_pb2.GetBatchResultsRequest(batch_id=big.batch_id), timeout=300
                    )
                ).results
                comparisons = await all_comparisons(assessment, big.batch_id)
                cancelled = (
                    f"not cancelled: {assessment_pb2.BatchState.Name(final.state)} ({final.state_reason}) after "
                    f"{ran:.0f} s in all; {engine_alone(results, comparisons)}"
                )
            else:
                try:
                    await assessment.CancelBatch(
                        assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=big.batch_id),
                        timeout=120,
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
    parser.add_argument("--to-end", action="store_true")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.essays, arguments.seconds, arguments.to_end))
