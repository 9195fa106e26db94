"""The one server interceptor: correlation id, request validation, error mapping, metrics, access log.

Every request message, unary or streamed, is checked with protovalidate before the handler sees it.
Exceptions leave a handler only through `status.py`'s mapper.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import protovalidate

from mesh_common import correlation
from mesh_common.error_codes import ErrorCode
from mesh_server import metrics, status
from mesh_server.auth import Authorizer, Principal, identify, peer_subject
from mesh_server.errors import DomainError, InvalidArgument

log = logging.getLogger("mesh.rpc")

_validator = protovalidate.Validator()

# Who is calling, when tokens are configured (None on an open server).
principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


class RequestInvalid(Exception):
    """A request message broke its contract; carries protovalidate's error."""

    def __init__(self, error: protovalidate.ValidationError) -> None:
        super().__init__(str(error))
        self.error = error


class Undecodable:
    """Bytes that are not a message of the method's request type (grpc would answer UNKNOWN)."""

    def __init__(self, type_name: str, error: Exception) -> None:
        self.type_name = type_name
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    type_name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = type_name.full_name if type_name is not None else "request"

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # noqa: BLE001 - refused in the handler with INVALID_ARGUMENT
            return Undecodable(name, error)

    return deserialize


def validate(message: Any) -> None:
    if isinstance(message, Undecodable):
        raise InvalidArgument(
            f"the request is not a valid {message.type_name} message ({message.error}); "
            f"send a serialized {message.type_name}"
        )
    try:
        _validator.validate(message)
    except protovalidate.ValidationError as error:
        raise RequestInvalid(error) from None
    except protovalidate.EvaluationError as error:
        # A rule could not be evaluated for this input (e.g. CEL's iteration budget): refuse it clearly.
        raise InvalidArgument(
            f"request could not be validated: {error}", error_code=ErrorCode.VALIDATION_ERROR
        ) from None


async def _validated(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for message in requests:
        validate(message)
        yield message


class _Call:
    """Bookkeeping of one RPC: metrics labels, timing, and how it ended."""

    def __init__(self, method: str, rpc_type: str, running: set[asyncio.Task[Any]]) -> None:
        _, _, path = method.partition("/")
        self.service, _, self.method = path.partition("/")
        self.type = rpc_type
        self.correlation_id = ""
        self.answered = False
        self.started = time.perf_counter()
        metrics.STARTED.labels(rpc_type, self.service, self.method).inc()
        # The handler's task, known to the interceptor until the call ends (see ServerInterceptor.settle).
        self.running, self.task = running, asyncio.current_task()
        if self.task is not None:
            running.add(self.task)

    async def begin(self, context: grpc.aio.ServicerContext, authorizer: Authorizer | None) -> None:
        metadata = context.invocation_metadata()
        cid = correlation.from_metadata(metadata)
        correlation.current.set(cid)
        self.correlation_id = cid
        principal.set(identify(authorizer, self.service, metadata, peer_subject(context)))

    async def answer(self, context: grpc.aio.ServicerContext) -> None:
        """Send the response headers (with the correlation id) now, with the first response: not
        before. Until a client has headers, grpc may retry the call on another replica when this one
        dies (see the retry policy in mesh_common.tls); once it has them, it may not."""
        if not self.answered:
            self.answered = True
            await context.send_initial_metadata(((correlation.METADATA_KEY, self.correlation_id),))

    async def fail(self, context: grpc.aio.ServicerContext, error: BaseException) -> None:
        """Map an exception to a status and abort with it (raises AbortError)."""
        if isinstance(error, RequestInvalid):
            await context.abort_with_status(status.validation_status(error.error))
        error = status.as_domain_error(error)
        if isinstance(error, DomainError):
            await context.abort_with_status(status.domain_status(error))
        if isinstance(error, NotImplementedError):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{self.service}/{self.method} is not implemented")
        log.error("unhandled error in %s/%s", self.service, self.method, exc_info=error)
        await context.abort_with_status(status.internal_status(correlation.current.get()))

    def end(self, context: grpc.aio.ServicerContext, code: grpc.StatusCode | None) -> None:
        if self.task is not None:
            self.running.discard(self.task)
        if code is None:  # the call was aborted: the context holds the status it was given
            code = context.code() or grpc.StatusCode.UNKNOWN
        elapsed = time.perf_counter() - self.started
        metrics.HANDLED.labels(self.type, self.service, self.method, code.name).inc()
        metrics.HANDLING_SECONDS.labels(self.type, self.service, self.method).observe(elapsed)
        log.info(
            "rpc %s/%s %s %.1f ms",
            self.service,
            self.method,
            code.name,
            elapsed * 1000,
            extra={"rpc": f"{self.service}/{self.method}", "code": code.name, "duration_ms": elapsed * 1000},
        )


DRAIN_SECONDS = 5.0
DRAIN_BYTES = 16 * 1024 * 1024


async def _drain(requests: AsyncIterator[Any]) -> None:
    """Read and drop what a client still sends after its stream was refused (bounded in time).

    A grpc.aio client whose write fails because the server already ended the call reports INTERNAL
    instead of the server's status (grpc/grpc#36066); letting the client finish writing first makes
    it see the real error. Nothing drained is stored.
    """
    drained = 0
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for message in requests:
                drained += message.ByteSize()
                if drained > DRAIN_BYTES:
                    return
    except (TimeoutError, Exception):  # noqa: BLE001 - the status we are about to send is what matters
        pass


def _unary_response(
    running: set[asyncio.Task[Any]],
    authorizer: Authorizer | None,
    method: str,
    rpc_type: str,
    behaviour: Callable[..., Awaitable[Any]],
    streamed_in: bool,
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(method, rpc_type, running)
        code: grpc.StatusCode | None = grpc.StatusCode.OK
        raw = request
        try:
            await call.begin(context, authorizer)
            if streamed_in:
                request = _validated(request)
            else:
                validate(request)
            response = await behaviour(request, context)
            await call.answer(context)
            return response
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = None
            raise
        except Exception as error:  # noqa: BLE001 - every error goes through the one mapper
            code = None
            if streamed_in:
                await _drain(raw)
            await call.fail(context, error)
        finally:
            call.end(context, code)

    return handler


def _stream_response(
    running: set[asyncio.Task[Any]],
    authorizer: Authorizer | None,
    method: str,
    rpc_type: str,
    behaviour: Callable[..., AsyncIterator[Any]],
    streamed_in: bool,
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(method, rpc_type, running)
        code: grpc.StatusCode | None = grpc.StatusCode.OK
        try:
            await call.begin(context, authorizer)
            if streamed_in:
                request = _validated(request)
            else:
                validate(request)
            async for response in behaviour(request, context):
                await call.answer(context)
                yield response
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = None
            raise
        except Exception as error:  # noqa: BLE001
            code = None
            await call.fail(context, error)
        finally:
            call.end(context, code)

    return handler


class ServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authorizer: Authorizer | None = None) -> None:
        self.authorizer = authorizer
        # Handlers still running: grpc's Server.stop() returns once the core is done with a call,
        # which can be before the handler's coroutine ends (grpc/grpc#37239); stop() awaits these.
        self.running: set[asyncio.Task[Any]] = set()

    async def settle(self, timeout: float) -> None:
        """Wait for running handlers to end; cancel those that do not within `timeout`."""
        if not self.running:
            return
        _, late = await asyncio.wait(set(self.running), timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1.0)

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        io = (_tolerant(handler.request_deserializer), handler.response_serializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _unary_response(self.running, self.authorizer, method, "unary", handler.unary_unary, False), *io
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _unary_response(self.running, self.authorizer, method, "client_stream", handler.stream_unary, True), *io
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _stream_response(self.running, self.authorizer, method, "server_stream", handler.unary_stream, False),
                *io,
            )
        return grpc.stream_stream_rpc_method_handler(
            _stream_response(self.running, self.authorizer, method, "bidi_stream", handler.stream_stream, True), *io
        )
