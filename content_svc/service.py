"""gRPC adapter of the content store: huleedu.content.v1.ContentService."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2, content_pb2_grpc
from prometheus_client import Counter

from content_svc.store import ContentStore, Description, Stored
from mesh_server import correlation, errors
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
    )


def _count(stored: Stored) -> None:
    UPLOADS.inc()
    if stored.deduplicated:
        DEDUPLICATED.inc()
    else:
        BYTES_STORED.inc(stored.size)


class ContentService(content_pb2_grpc.ContentServiceServicer):
    def __init__(self, store: ContentStore) -> None:
        self.store = store

    async def Upload(
        self, request_iterator: AsyncIterator[content_pb2.UploadRequest], context: grpc.aio.ServicerContext
    ) -> content_pb2.UploadResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "header":
            raise errors.InvalidArgument(
                "the first message of an Upload stream must be the header (kind, content type, declared size)",
                field="header",
            )
        header = first.header

        async def chunks() -> AsyncIterator[bytes]:
            async for message in request_iterator:
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
        stored = await self.store.put_stream(description, chunks(), correlation.current.get())
        _count(stored)
        return content_pb2.UploadResponse(
            storage_id=stored.storage_id, sha256=stored.sha256, size=stored.size, deduplicated=stored.deduplicated
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
        for index, outcome in enumerate(await self.store.put_many(items, correlation.current.get())):
            result = response.results.add(index=index)
            if isinstance(outcome, errors.DomainError):
                result.error.error_code = common_pb2.ErrorCode.Value(f"ERROR_CODE_{outcome.error_code}")
                result.error.message = outcome.message
                result.error.service = "content"
                result.error.operation = "BatchUpload"
                if outcome.field:
                    result.error.details["field"] = outcome.field
                continue
            _count(outcome)
            result.storage_id = outcome.storage_id
            result.sha256 = outcome.sha256
            result.size = outcome.size
            result.deduplicated = outcome.deduplicated
        return response

    async def Get(self, request: content_pb2.GetRequest, context: grpc.aio.ServicerContext) -> content_pb2.GetResponse:
        stored, content = await self.store.read(request.storage_id, GET_MAX_BYTES)
        return content_pb2.GetResponse(metadata=metadata_message(stored), content=content)

    async def BatchGet(
        self, request: content_pb2.BatchGetRequest, context: grpc.aio.ServicerContext
    ) -> content_pb2.BatchGetResponse:
        found, missing, deferred = await self.store.read_many(list(request.storage_ids), GET_MAX_BYTES)
        return content_pb2.BatchGetResponse(
            items=[content_pb2.GetResponse(metadata=metadata_message(meta), content=data) for meta, data in found],
            missing_storage_ids=missing,
            deferred_storage_ids=deferred,
        )

    async def Download(
        self, request: content_pb2.DownloadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[content_pb2.DownloadResponse]:
        stored, chunks = await self.store.stream(request.storage_id, DOWNLOAD_CHUNK_BYTES)
        first = True
        async for chunk in chunks:
            yield content_pb2.DownloadResponse(metadata=metadata_message(stored) if first else None, chunk=chunk)
            first = False
        if first:  # empty content: still send the metadata
            yield content_pb2.DownloadResponse(metadata=metadata_message(stored))

    async def Stat(
        self, request: content_pb2.StatRequest, context: grpc.aio.ServicerContext
    ) -> content_pb2.StatResponse:
        found, missing = await self.store.stat(list(request.storage_ids))
        return content_pb2.StatResponse(found=[metadata_message(s) for s in found], missing_storage_ids=missing)

    async def FindByChecksum(
        self, request: content_pb2.FindByChecksumRequest, context: grpc.aio.ServicerContext
    ) -> content_pb2.FindByChecksumResponse:
        found, missing = await self.store.find_by_checksum(list(request.sha256s))
        return content_pb2.FindByChecksumResponse(
            matches=[content_pb2.ChecksumMatch(sha256=s.sha256, storage_id=s.storage_id, size=s.size) for s in found],
            missing_sha256s=missing,
        )
