"""Observability: Prometheus metrics on a separate listen address (standard gRPC server metrics and
domain counters), and JSON logs."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest
from huleedu.cj.v1 import assessment_pb2, assessment_pb2_grpc
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2, content_pb2_grpc

from tests.conftest import start_cj, start_content
from tests.support.cj import store_texts, submit_request
from tests.support.content import upload
from tests.support.grpc_client import channel
from tests.support.processes import ServiceProcess


async def test_content_metrics_scraped(sqlite_url, tmp_path) -> None:
    app = await start_content(sqlite_url, tmp_path / "blobs", metrics_listen="127.0.0.1:0")
    try:
        async with channel(app.address) as ch:
            stub = content_pb2_grpc.ContentServiceStub(ch)
            await upload(stub, b"metrics essay")
            await upload(stub, b"metrics essay")  # deduplicated
            await stub.Stat(content_pb2.StatRequest(storage_ids=["0" * 32]))
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{app.metrics_port}/metrics")).text
    finally:
        await app.stop()
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Upload",grpc_service="huleedu.content.v1.ContentService",grpc_type="client_stream"}'
        in text
    )
    assert 'grpc_server_started_total{grpc_method="Stat"' in text
    assert "grpc_server_handling_seconds_bucket" in text
    assert "huleedu_content_deduplicated_uploads_total" in text and "huleedu_content_bytes_stored_total" in text


async def test_content_upload_stages_timed(sqlite_url, tmp_path) -> None:
    """A streamed upload's time by stage: a new one passes through all five, one of content stored
    already is only looked up, received and hashed (nothing made durable, no row)."""
    app = await start_content(sqlite_url, tmp_path / "blobs", metrics_listen="127.0.0.1:0")
    url = f"http://127.0.0.1:{app.metrics_port}/metrics"
    big = b"a stage-timed essay " * 20_000  # 400 KB: streamed to a blob, not group-committed
    try:
        async with channel(app.address) as ch:
            stub = content_pb2_grpc.ContentServiceStub(ch)
            before = await scrape(url)
            await upload(stub, big)
            new = await scrape(url)
            assert (await upload(stub, big)).deduplicated
            again = await scrape(url)
    finally:
        await app.stop()

    def count(samples: dict[str, float], stage: str) -> float:
        return samples.get(f'huleedu_content_upload_stage_seconds_count{{stage="{stage}"}}', 0.0)

    stages = ("lookup", "receive", "finish", "blob", "row")
    assert [count(new, s) - count(before, s) for s in stages] == [1, 1, 1, 1, 1]
    assert [count(again, s) - count(new, s) for s in stages] == [1, 1, 1, 0, 0]
    assert new['huleedu_content_upload_stage_seconds_sum{stage="receive"}'] > 0


async def test_cj_metrics_scraped(sqlite_content_app, tmp_path) -> None:
    """gRPC server metrics (a server stream included) and the CJ domain metrics: comparisons by
    outcome and error code, judge latency, batch duration, prompt fetch failures."""
    cj = await start_cj(
        f"sqlite:///{tmp_path}/cj.db", sqlite_content_app.address, metrics_listen="127.0.0.1:0",
        judge_provider="simulated", simulated_failure_rate=0.5, simulated_failure_code="AUTHENTICATION_ERROR",
    )  # fmt: skip
    scrape_url = f"http://127.0.0.1:{cj.metrics_port}/metrics"
    try:
        # the registry is per process and other tests in it count too: compare before and after
        before = await scrape(scrape_url)
        async with channel(sqlite_content_app.address) as c_channel, channel(cj.address) as j_channel:
            ids = await store_texts(
                content_pb2_grpc.ContentServiceStub(c_channel), [f"essay {i} " * (5 + i) for i in range(5)]
            )
            assessment = assessment_pb2_grpc.AssessmentServiceStub(j_channel)
            with pytest.raises(grpc.aio.AioRpcError) as missing_prompt:
                await assessment.SubmitBatch(
                    submit_request(ids, student_prompt_ref=common_pb2.StorageReference(
                        kind=common_pb2.CONTENT_KIND_STUDENT_PROMPT, storage_id="f" * 32))
                )  # fmt: skip
            assert missing_prompt.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            batch = (await assessment.SubmitBatch(submit_request(ids, comparison_budget=12))).batch
            async with asyncio.timeout(60):
                async for update in assessment.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=batch.batch_id)):
                    final = update.batch
        after = await scrape(scrape_url)
    finally:
        await cj.stop()

    def grew(sample: str) -> float:
        return after.get(sample, 0.0) - before.get(sample, 0.0)

    state = assessment_pb2.BatchState.Name(final.state).removeprefix("BATCH_STATE_")
    p = final.progress
    assert grew('huleedu_cj_comparisons_total{error_code="",outcome="done"}') == p.comparisons_done > 0
    assert grew('huleedu_cj_comparisons_total{error_code="AUTHENTICATION_ERROR",outcome="failed"}') == (
        p.comparisons_failed
    )
    assert p.comparisons_failed > 0
    assert grew('huleedu_cj_judge_seconds_count{provider="simulated"}') == p.comparisons_done
    assert grew(f'huleedu_cj_batch_duration_seconds_count{{state="{state}"}}') == 1
    assert grew('huleedu_cj_prompt_fetch_failures_total{reason="not_found"}') == 1
    watch = 'grpc_method="WatchBatch",grpc_service="huleedu.cj.v1.AssessmentService",grpc_type="server_stream"'
    assert grew(f'grpc_server_handled_total{{grpc_code="OK",{watch}}}') == 1
    assert grew(f"grpc_server_handling_seconds_count{{{watch}}}") == 1


async def scrape(url: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value}."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(url)).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_json_logs_carry_correlation_id_rpc_code_and_duration(tmp_path) -> None:
    service = ServiceProcess(
        "content-svc", ["--listen", "127.0.0.1:0", "--database-url", f"sqlite:///{tmp_path}/c.db",
                        "--storage-dir", str(tmp_path / "blobs"), "--migrate", "--log-json"], tmp_path,
    )  # fmt: skip
    await service.start()
    try:
        async with channel(service.address) as ch:
            stub = content_pb2_grpc.ContentServiceStub(ch)
            await stub.Stat(content_pb2.StatRequest(storage_ids=["0" * 32]), metadata=(("x-correlation-id", "log-me"),))
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Get(content_pb2.GetRequest(storage_id="1" * 32), metadata=(("x-correlation-id", "log-me"),))
    finally:
        await service.stop()
    entries = [
        json.loads(line) for line in (tmp_path / "content-svc.log").read_text().splitlines() if line.startswith("{")
    ]
    calls = {e["rpc"]: e for e in entries if e.get("correlation_id") == "log-me" and "rpc" in e}
    assert calls["huleedu.content.v1.ContentService/Stat"]["code"] == "OK"
    assert calls["huleedu.content.v1.ContentService/Get"]["code"] == "NOT_FOUND"
    assert all(isinstance(e["duration_ms"], float) and e["level"] for e in calls.values())
