"""Assembles the Content Service: database, blob directory, store, gRPC server."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from huleedu.content.v1 import content_pb2, content_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from content_svc.blob_table import BlobTable
from content_svc.blobs import BlobDirectory, BlobStore
from content_svc.service import ContentService, UploadLimits
from content_svc.settings import ContentSettings
from content_svc.store import ContentStore
from mesh_server import database
from mesh_server.allocator import retain_freed_memory
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
        await self.store.close()
        await self.store.engine.dispose()


async def report_broken_content(store: ContentStore) -> None:
    """At start: every row's blob looked at (by size, not hashed), rows marked missing or damaged,
    and what is wrong logged with what to do."""
    report = await store.check(verify=False)
    for problem in report.damaged:
        log.error("content %s is %s: %s; upload the file again to repair it", problem.storage_id,
                  problem.state.lower(), problem.reason)  # fmt: skip
    if report.orphans:
        log.warning("%d blob files have no row (an upload cut off by a crash); `content-svc check --repair` "
                    "removes them", len(report.orphans))  # fmt: skip


def blob_store_of(kind: str, storage_dir: Path, engine: AsyncEngine) -> BlobStore:
    """The blob store a `--blob-store` value names."""
    if kind == "database":
        return BlobTable(engine)
    if kind == "filesystem":
        return BlobDirectory(storage_dir)
    raise ValueError(f"--blob-store must be filesystem or database, not {kind!r}")


async def start(settings: ContentSettings) -> ContentApp:
    retain_freed_memory(LARGEST_BUFFER_BYTES, RETAINED_BYTES)
    engine = await database.open_migrated("content", settings.database_url, settings.migrate)
    # Blob I/O (aiofiles) runs in the loop's default executor; fsyncs overlap well with more threads.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="blob-io"))
    blobs = blob_store_of(settings.blob_store, settings.storage_dir, engine)
    removed = await blobs.prepare()
    if removed:
        log.info("removed %d unfinished blobs left by an earlier run", removed)
    store = ContentStore(engine, blobs, settings.max_object_bytes, settings.max_text_bytes)
    await report_broken_content(store)
    limits = UploadLimits(settings.max_uploads, settings.max_uploads_per_connection, settings.upload_idle_seconds)
    server = MeshServer.of(
        settings,
        [
            Registration(
                content_pb2_grpc.add_ContentServiceServicer_to_server, ContentService(store, limits), SERVICE_NAME
            )
        ],
        readiness=store.problem,
    )
    await server.start()
    return ContentApp(settings, server, store, serve_metrics(settings.metrics_listen))
