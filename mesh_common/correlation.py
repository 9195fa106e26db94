"""Correlation id: read from or added to gRPC metadata, logged, passed on to the next service."""

from __future__ import annotations

import contextvars
import re
from collections.abc import Sequence

import grpc

from mesh_common.ids import new_id
from mesh_common.tokens import AUTHORIZATION_KEY, bearer_metadata

METADATA_KEY = "x-correlation-id"
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")

current: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")


def from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The caller's correlation id when it is usable, else a fresh one."""
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str) and _ACCEPTABLE.match(value):
            return value
    return new_id()


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata that passes the current correlation id on to another service."""
    value = current.get()
    return ((METADATA_KEY, value),) if value else ()


class PropagatingClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
    """Adds the current correlation id, and the service's own bearer token when it has one, to every
    call a service makes to another."""

    def __init__(self, token: str = "") -> None:
        self.authorization = next(iter(bearer_metadata(token)), None)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        extra = outgoing_metadata()
        if not extra and self.authorization is None:
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if extra and METADATA_KEY not in metadata:
            metadata.add(*extra[0])
        if self.authorization is not None and AUTHORIZATION_KEY not in metadata:
            metadata.add(*self.authorization)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)
