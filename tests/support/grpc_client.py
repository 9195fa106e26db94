"""Client helpers for tests: channels and decoding of rich error details."""

from __future__ import annotations

import grpc
from buf.validate import validate_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address)


def details(error: grpc.aio.AioRpcError) -> dict[str, object]:
    """The error's details by type: BadRequest, ErrorInfo, Violations."""
    found: dict[str, object] = {}
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        for cls in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo, validate_pb2.Violations):
            if detail.Is(cls.DESCRIPTOR):
                message = cls()
                detail.Unpack(message)
                found[cls.DESCRIPTOR.name] = message
    return found


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    bad = details(error).get("BadRequest")
    return {v.field: v.description for v in bad.field_violations} if bad else {}


def error_reason(error: grpc.aio.AioRpcError) -> str:
    info = details(error).get("ErrorInfo")
    return info.reason if info else ""
