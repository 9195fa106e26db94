"""Assembles the Content Service: database, blob directory, store, gRPC server."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from huleedu.content.v1 import content_pb2, content_pb2_grpc

from content_svc.blobs import BlobDirectory
from content_svc.service import ContentService
from content_svc.settings import ContentSettings
from content_svc.store import ContentStore
from mesh_server import database
from mesh_server.allocator import retain_freed_memory
from mesh_server.auth import Authorizer
from mesh_server.metrics import serve_metrics
from mesh_server.server import MeshServer, Registration

log = logging.getLogger("content_svc")

# Upload chunks are 1 MiB and Get answers up to 4 MiB: keep buffers of those sizes for reuse
# rather than page-faulting each one in anew (see mesh_server.allocator).
LARGEST_BUFFER_BYTES = 4 * 1024 * 1024
RETAINED_BYTES = 64 * 1024 * 1024

SERVICE_NAME = content_pb2.DESCRIPTOR.services_by_name["ContentService"].full_name


@dataclass
class ContentApp:
    settings: ContentSettings
    server: MeshServer
    store: ContentStore
    metrics_port: int = 0

    @property
    def address(self) -> str:
        return self.server.address

    async def stop(self) -> None:
        await self.server.stop()
        await self.store.engine.dispose()


async def start(settings: ContentSettings) -> ContentApp:
    retain_freed_memory(LARGEST_BUFFER_BYTES, RETAINED_BYTES)
    engine = await database.open_migrated("content", settings.database_url, settings.migrate)
    # Blob I/O (aiofiles) runs in the loop's default executor; fsyncs overlap well with more threads.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="blob-io"))
    blobs = BlobDirectory(settings.storage_dir)
    removed = blobs.prepare()
    if removed:
        log.info("removed %d temp files left by an earlier run", removed)
    store = ContentStore(engine, blobs, settings.max_object_bytes)
    server = MeshServer(
        [Registration(content_pb2_grpc.add_ContentServiceServicer_to_server, ContentService(store), SERVICE_NAME)],
        listen=settings.listen,
        grace_seconds=settings.grace_seconds,
        readiness=store.problem,
        authorizer=Authorizer.parse(settings.tokens),
        tls=settings.tls,
    )
    await server.start()
    app = ContentApp(settings, server, store)
    if settings.metrics_listen:
        app.metrics_port = serve_metrics(settings.metrics_listen)
    return app
