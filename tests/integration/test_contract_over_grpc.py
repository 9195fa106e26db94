"""Contract enforcement through a real server on 127.0.0.1: rich INVALID_ARGUMENT, health, correlation."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from huleedu.content.v1 import content_pb2, content_pb2_grpc

from tests.support.grpc_client import channel, details, error_reason, field_violations
from tests.support.messages import SHA256


async def test_invalid_request_is_invalid_argument_with_field_violations(content_app) -> None:
    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Get(content_pb2.GetRequest(storage_id=SHA256))
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(error)
    assert "storage_id" in violations
    assert "^[0-9a-f]{32}$" in violations["storage_id"]
    assert "Violations" in details(error)
    assert error_reason(error) == "VALIDATION_ERROR"
    assert "storage_id" in error.details()


async def test_every_streamed_message_is_validated(content_app) -> None:
    async def requests():
        yield content_pb2.UploadRequest(
            header=content_pb2.UploadHeader(kind=1, content_type="text/plain", declared_size=4)
        )
        yield content_pb2.UploadRequest(chunk=b"ok")
        yield content_pb2.UploadRequest()  # neither header nor chunk

    async with channel(content_app.address) as ch:
        stub = content_pb2_grpc.ContentServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Upload(requests())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "payload" in field_violations(caught.value)


async def test_health_serving_and_correlation_id_echoed(content_app) -> None:
    async with channel(content_app.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        response = await health.Check(health_pb2.HealthCheckRequest(service="huleedu.content.v1.ContentService"))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        stub = content_pb2_grpc.ContentServiceStub(ch)
        call = stub.Stat(content_pb2.StatRequest(storage_ids=["0" * 32]), metadata=(("x-correlation-id", "trace-123"),))
        await call
        assert ("x-correlation-id", "trace-123") in list(await call.initial_metadata())
        fresh = stub.Stat(content_pb2.StatRequest(storage_ids=["0" * 32]))
        await fresh
        echoed = dict(await fresh.initial_metadata())["x-correlation-id"]
        assert len(echoed) == 32
