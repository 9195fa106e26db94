"""One bootstrap for every service: grpc.aio server, health, reflection, the interceptor, shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from buf.validate import validate_pb2  # noqa: F401 - registers validate rules for reflection
from google.rpc import error_details_pb2  # noqa: F401 - registers error details for reflection
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh_common.tls import MESSAGE_SIZE_OPTIONS, TlsFiles
from mesh_server.auth import Authorizer
from mesh_server.interceptor import ServerInterceptor
from mesh_server.settings import ServiceSettings

log = logging.getLogger("mesh.server")

# After the grace, how long to wait for the handlers grpc's stop() left running (grpc/grpc#37239).
SETTLE_SECONDS = 1.0
# HTTP/2 streams one connection may have open at once: a client past it waits for a free stream.
MAX_STREAMS_PER_CONNECTION = 1000
SERVER_OPTIONS = (
    *MESSAGE_SIZE_OPTIONS,
    ("grpc.so_reuseport", 0),
    ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
)


@dataclass
class Registration:
    """A servicer and the generated function that adds it, plus its full service name."""

    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    service_name: str


@dataclass
class MeshServer:
    registrations: list[Registration]
    listen: str = "127.0.0.1:0"
    grace_seconds: float = 5.0
    # Returns None when healthy, or the reason it is not; checked periodically.
    readiness: Callable[[], Awaitable[str | None]] | None = None
    readiness_interval: float = 2.0
    authorizer: Authorizer | None = None
    tls: TlsFiles = field(default_factory=TlsFiles)
    server: grpc.aio.Server | None = None
    health: health.aio.HealthServicer = field(default_factory=lambda: health.aio.HealthServicer())
    port: int = 0
    interceptor: ServerInterceptor | None = None
    _watch: asyncio.Task[None] | None = None

    @classmethod
    def of(
        cls,
        settings: ServiceSettings,
        registrations: list[Registration],
        readiness: Callable[[], Awaitable[str | None]],
        roles: dict[str, str] | None = None,
    ) -> MeshServer:
        """A server as a service's settings say: where it listens, its grace, tokens (each service
        in `roles` needs that role) and TLS."""
        return cls(
            registrations, listen=settings.listen, grace_seconds=settings.grace_seconds, readiness=readiness,
            authorizer=Authorizer.parse(settings.tokens, roles), tls=settings.tls,
        )  # fmt: skip

    @property
    def address(self) -> str:
        host = self.listen.rpartition(":")[0] or "127.0.0.1"
        return f"{host}:{self.port}"

    async def start(self) -> int:
        self.interceptor = ServerInterceptor(self.authorizer)
        self.server = grpc.aio.server(interceptors=[self.interceptor], options=SERVER_OPTIONS)
        for registration in self.registrations:
            registration.add(registration.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [r.service_name for r in self.registrations]
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        credentials = self.tls.server_credentials()
        if credentials is None:
            self.port = self.server.add_insecure_port(self.listen)
        else:
            self.port = self.server.add_secure_port(self.listen, credentials)
        if self.port == 0:
            raise RuntimeError(f"could not listen on {self.listen}")
        await self.server.start()
        await self._set_serving(names, await self._check())
        if self.readiness is not None:
            self._watch = asyncio.create_task(self._watch_readiness(names))
        security = "plaintext" if credentials is None else ("mutual TLS" if self.tls.ca else "TLS")
        log.info("listening on %s (%s)", self.address, security)
        if self.authorizer is None:
            log.warning("no tokens configured: every RPC is open to anyone who reaches %s", self.address)
        return self.port

    async def _check(self) -> str | None:
        if self.readiness is None:
            return None
        try:
            return await self.readiness()
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            return str(error) or type(error).__name__

    async def _set_serving(self, names: Iterable[str], problem: str | None) -> None:
        state = health_pb2.HealthCheckResponse.NOT_SERVING if problem else health_pb2.HealthCheckResponse.SERVING
        for name in ("", *names):
            await self.health.set(name, state)

    async def _watch_readiness(self, names: list[str]) -> None:
        last: str | None = None
        while True:
            await asyncio.sleep(self.readiness_interval)
            problem = await self._check()
            if problem != last:
                log.warning("not ready: %s", problem) if problem else log.info("ready again")
                last = problem
            await self._set_serving(names, problem)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(self.grace_seconds)
        if self.interceptor is not None:
            await self.interceptor.settle(SETTLE_SECONDS)

    async def wait_for_signal(self) -> None:
        """Return on SIGTERM or SIGINT (the caller then stops the whole service, this server included)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping (grace %.1f s)", self.grace_seconds)
