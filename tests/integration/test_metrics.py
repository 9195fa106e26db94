"""Prometheus metrics on a separate listen address: standard gRPC server metrics and domain counters."""

from __future__ import annotations

import httpx
from huleedu.content.v1 import content_pb2, content_pb2_grpc

from tests.conftest import start_content
from tests.support.content import upload
from tests.support.grpc_client import channel


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
