"""Load: 20 batches of 30 essays submitted at once (simulated judge, 50 ms per call) while 500 uploads
run concurrently, twice, against real services (separate processes, SQLite).

Reports: every batch completed with 30 ranked essays; latency percentiles of the unary RPCs made
during the load (SubmitBatch, GetBatch, Stat); peak memory of each service and its resident memory
after each round (bounded: the second round should not grow it much).
Run: .venv/bin/python bench/load.py [--batches 20] [--essays 30] [--uploads 500] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
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
from bench.content_upload import upload  # noqa: E402


def memory_mib(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of a process, MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Latencies:
    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    async def timed(self, name: str, call):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = await call
        self.seconds.setdefault(name, []).append(time.perf_counter() - started)
        return result

    def report(self) -> str:
        lines = []
        for name, values in sorted(self.seconds.items()):
            cuts = statistics.quantiles(values, n=100)
            lines.append(
                f"  {name:<12} n={len(values):>5}  p50 {cuts[49] * 1000:7.1f} ms  p99 {cuts[98] * 1000:7.1f} ms"
            )
        return "\n".join(lines)


async def one_round(content: str, cj: str, batches: int, essays: int, uploads: int, timing: Latencies) -> list[str]:
    problems = []
    async with grpc.aio.insecure_channel(content) as cc, grpc.aio.insecure_channel(cj) as jc:
        store = content_pb2_grpc.ContentServiceStub(cc)
        assessment = assessment_pb2_grpc.AssessmentServiceStub(jc)

        async def one_batch(number: int) -> None:
            texts = [f"batch {number} essay {i} {uuid.uuid4()} " * (4 + i % 9) for i in range(essays)]
            stored = await store.BatchUpload(
                content_pb2.BatchUploadRequest(
                    items=[
                        content_pb2.BatchUploadItem(kind=1, content_type="text/plain", content=t.encode())
                        for t in texts
                    ]  # fmt: skip
                )
            )
            request = assessment_pb2.SubmitBatchRequest(
                request_id=str(uuid.uuid4()), batch_label=f"load {number}", comparison_budget=essays * 5,
                essays=[common_pb2.EssayRef(essay_id=f"e{i}", text_storage_id=r.storage_id)
                        for i, r in enumerate(stored.results)],
            )  # fmt: skip
            batch = (await timing.timed("SubmitBatch", assessment.SubmitBatch(request))).batch
            while batch.state not in (assessment_pb2.BATCH_STATE_COMPLETED, assessment_pb2.BATCH_STATE_FAILED):
                await asyncio.sleep(0.1)
                get = assessment.GetBatch(assessment_pb2.GetBatchRequest(batch_id=batch.batch_id))
                batch = (await timing.timed("GetBatch", get)).batch
            results = (
                await assessment.GetBatchResults(assessment_pb2.GetBatchResultsRequest(batch_id=batch.batch_id))
            ).results
            if batch.state != assessment_pb2.BATCH_STATE_COMPLETED or len(results.essays) != essays:
                problems.append(f"batch {number}: {assessment_pb2.BatchState.Name(batch.state)} {batch.state_reason}")

        async def uploader(queue: asyncio.Queue[int]) -> None:
            while not queue.empty():
                number = queue.get_nowait()
                essay = os.urandom(2560).hex().encode()  # 5 KiB of text
                stored = await upload(store, essay, hashlib.sha256(essay).hexdigest(), 64 * 1024)
                stat = store.Stat(content_pb2.StatRequest(storage_ids=[stored.storage_id]))
                if not (await timing.timed("Stat", stat)).found:
                    problems.append(f"upload {number} not found after storing")

        queue: asyncio.Queue[int] = asyncio.Queue()
        for number in range(uploads):
            queue.put_nowait(number)
        await asyncio.gather(*(one_batch(n) for n in range(batches)), *(uploader(queue) for _ in range(16)))
    return problems


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--essays", type=int, default=30)
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with content_service() as content:
        extra = ["--judge-provider", "simulated", "--simulated-latency-ms", "50"]
        with cj_service(content, None, extra) as cj:
            for round_number in range(1, args.rounds + 1):
                timing = Latencies()
                started = time.perf_counter()
                problems = asyncio.run(one_round(content, cj, args.batches, args.essays, args.uploads, timing))
                seconds = time.perf_counter() - started
                print(f"round {round_number}: {args.batches} batches x {args.essays} essays and {args.uploads} uploads "
                      f"in {seconds:.1f} s; {'all correct' if not problems else 'PROBLEMS: ' + '; '.join(problems)}")  # fmt: skip
                print(timing.report())
                for name, address in (("content-svc", content), ("cj-svc", cj)):
                    now, peak = memory_mib(PIDS[address])
                    print(f"  {name:<12} resident {now:6.1f} MiB, peak {peak:6.1f} MiB")


if __name__ == "__main__":
    main()
