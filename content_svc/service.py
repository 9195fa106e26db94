"""gRPC adapter of the content store: huleedu.content.v1.ContentService."""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2, content_pb2_grpc
from prometheus_client import Counter

from content_svc.store import ContentStore, Description, Reader, Stored
from mesh_common import correlation
from mesh_server import auth, errors, interceptor, status
from mesh_server.convert import timestamp

GET_MAX_BYTES = 4 * 1024 * 1024
DOWNLOAD_CHUNK_BYTES = 64 * 1024

BYTES_STORED = Counter("huleedu_content_bytes_stored_total", "Bytes of new (not deduplicated) content stored.")
DEDUPLICATED = Counter("huleedu_content_deduplicated_uploads_total", "Uploads answered with an existing blob.")
UPLOADS = Counter("huleedu_content_uploads_total", "Content items accepted, new or deduplicated.")


def _kind_name(kind: int) -> str:
    return common_pb2.ContentKind.Name(kind)


def metadata_message(stored: Stored) -> content_pb2.ContentMetadata:
    return content_pb2.ContentMetadata(
        storage_id=stored.storage_id,
        sha256=stored.sha256,
        size=stored.size,
        content_type=stored.content_type,
        filename=stored.filename,
        kind=common_pb2.ContentKind.Value(stored.kind),
        create_time=timestamp(stored.created_at),
        state=content_pb2.ContentState.Value(f"CONTENT_STATE_{stored.state}"),
    )


@dataclass
class UploadLimits:
    """How many Upload streams may be open at once, in all and per connection, and how long one may
    stay silent. Each limit refuses with RESOURCE_EXHAUSTED naming itself."""

    max_streams: int = 256
    max_streams_per_connection: int = 64
    idle_seconds: float = 30.0
    open: int = 0
    per_connection: Tally[str] = field(default_factory=Tally)

    @contextmanager
    def slot(self, connection: str) -> Iterator[None]:
        if self.open >= self.max_streams:
            raise errors.ResourceExhausted(
                f"this Content Service has {self.open} uploads open, its limit (--max-uploads); "
                "retry shortly, or send small texts with BatchUpload"
            )
        if self.per_connection[connection] >= self.max_streams_per_connection:
            raise errors.ResourceExhausted(
                f"this connection has {self.per_connection[connection]} uploads open, the limit per "
                "connection (--max-uploads-per-connection); wait for some to finish"
            )
        self.open += 1
        self.per_connection[connection] += 1
        try:
            yield
        finally:
            self.open -= 1
            self.per_connection[connection] -= 1
            if not self.per_connection[connection]:
                del self.per_connection[connection]

    async def next(self, messages: AsyncIterator[content_pb2.UploadRequest]) -> content_pb2.UploadRequest | None:
        """The stream's next message, or None at its end; refused when none comes within the idle time."""
        try:
            async with asyncio.timeout(self.idle_seconds):
                return await anext(messages, None)
        except TimeoutError:
            raise errors.ResourceExhausted(
                f"the upload sent nothing for {self.idle_seconds:g} s, this service's idle limit "
                "(--upload-idle-seconds); send the chunks without pausing, and start the upload again"
            ) from None


def reader(context: grpc.aio.ServicerContext) -> Reader | None:
    """Whose content this call may read and is filed under: the caller's own when it has a token
    and a role that does not see everything; a `service` caller acting for a user reads as that
    user (see mesh_server.auth). None: everything (an open mesh, admins, auditors, services)."""
    principal = auth.on_behalf_of(interceptor.principal.get(), context.invocation_metadata())
    if principal is None or not principal.isolated:
        return None
    return Reader(principal.user_id, principal.org_id)


def _count(stored: Stored) -> None:
    UPLOADS.inc()
    if stored.deduplicated:
        DEDUPLICATED.inc()
    else:
        BYTES_STORED.inc(stored.size)


class ContentService(content_pb2_grpc.ContentServiceServicer):
    def __init__(self, store: ContentStore, limits: UploadLimits | None = None) -> None:
        self.store = store
        self.limits = limits or UploadLimits()

    async def Upload(
        self, request_iterator: AsyncIterator[content_pb2.UploadRequest], context: grpc.aio.ServicerContext
    ) -> content_pb2.UploadResponse:
        with self.limits.slot(context.peer()):
            return await self._upload(aiter(request_iterator), reader(context))

    async def _upload(
        self, messages: AsyncIterator[content_pb2.UploadRequest], uploader: Reader | None
    ) -> content_pb2.UploadResponse:
        first = await self.limits.next(messages)
        if first is None or first.WhichOneof("payload") != "header":
            raise errors.InvalidArgument(
                "the first message of an Upload stream must be the header (kind, content type, declared size)",
                field="header",
            )
        header = first.header

        async def chunks() -> AsyncIterator[bytes]:
            while (message := await self.limits.next(messages)) is not None:
                if message.WhichOneof("payload") != "chunk":
                    raise errors.InvalidArgument(
                        "the header was sent twice; send it once, as the first message", field="header"
                    )
                yield message.chunk

        description = Description(
            kind=_kind_name(header.kind),
            content_type=header.content_type,
            filename=header.filename,
            declared_size=header.declared_size,
            sha256=header.sha256,
        )
        stored = await self.store.put_stream(description, chunks(), correlation.current.get(), uploader)
        _count(stored)
        return content_pb2.UploadResponse(
            storage_id=stored.storage_id,
            sha256=stored.sha256,
            size=stored.size,
            deduplicated=stored.deduplicated,
            repaired=stored.repaired,
        )

    async def BatchUpload(
        self, request: content_pb2.BatchUploadRequest, context: grpc.aio.ServicerContext
    ) -> content_pb2.BatchUploadResponse:
        items = [
            (
                Description(
                    kind=_kind_name(item.kind),
                    content_type=item.content_type,
                    filename=item.filename,
                    sha256=item.sha256,
                ),
                item.content,
            )
            for item in request.items
        ]
        response = content_pb2.BatchUploadResponse()
        outcomes = await self.store.put_many(items, correlation.current.get(), reader(context))
        for index, outcome in enumerate(outcomes):
            result = response.results.add(index=index)
            if isinstance(outcome, errors.DomainError):
                result.error.CopyFrom(status.error_detail(outcome, "content", "BatchUpload", correlation.current.get()))
                continue
            _count(outcome)
            result.storage_id = outcome.storage_id
            result.sha256 = outcome.sha256
            result.size = outcome.size
            result.deduplicated = outcome.deduplicated
            result.repaired = outcome.repaired
        return response

    async def Get(self, request: content_pb2.GetRequest, context: grpc.aio.ServicerContext) -> content_pb2.GetResponse:
        stored, content = await self.store.read(request.storage_id, GET_MAX_BYTES, reader(context))
        return content_pb2.GetResponse(metadata=metadata_message(stored), content=content)

    async def BatchGet(
        self, request: content_pb2.BatchGetRequest, context: grpc.aio.ServicerContext
    ) -> content_pb2.BatchGetResponse:
        found, missing, deferred = await self.store.read_many(list(request.storage_ids), GET_MAX_BYTES, reader(context))
        return content_pb2.BatchGetResponse(
            items=[content_pb2.GetResponse(metadata=metadata_message(meta), content=data) for meta, data in found],
            missing_storage_ids=missing,
            deferred_storage_ids=deferred,
        )

    async def Download(
        self, request: content_pb2.DownloadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[content_pb2.DownloadResponse]:
        stored, chunks = await self.store.stream(request.storage_id, DOWNLOAD_CHUNK_BYTES, reader(context))
        first = True
        async for chunk in chunks:
            yield content_pb2.DownloadResponse(metadata=metadata_message(stored) if first else None, chunk=chunk)
            first = False
        if first:  # empty content: still send the metadata
            yield content_pb2.DownloadResponse(metadata=metadata_message(stored))

    async def Stat(
        self, request: content_pb2.StatRequest, context: grpc.aio.ServicerContext
    ) -> content_pb2.StatResponse:
        found, missing, damaged = await self.store.stat(
            list(request.storage_ids), verify=request.verify, reader=reader(context)
        )
        return content_pb2.StatResponse(
            found=[metadata_message(s) for s in found],
            missing_storage_ids=missing,
            damaged=[metadata_message(s) for s in damaged],
        )

    async def FindByChecksum(
        self, request: content_pb2.FindByChecksumRequest, context: grpc.aio.ServicerContext
    ) -> content_pb2.FindByChecksumResponse:
        found, missing, damaged = await self.store.find_by_checksum(list(request.sha256s), reader(context))
        return content_pb2.FindByChecksumResponse(
            matches=[_match(s) for s in found], missing_sha256s=missing, damaged=[_match(s) for s in damaged]
        )


def _match(stored: Stored) -> content_pb2.ChecksumMatch:
    return content_pb2.ChecksumMatch(sha256=stored.sha256, storage_id=stored.storage_id, size=stored.size)
