"""Upload helpers for tests, speaking the generated ContentService stub."""

from __future__ import annotations

import hashlib

from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2

from runner.client import write_all

CHUNK = 64 * 1024
# Every other kind is text (UTF-8 without NUL); random bytes are uploaded as this one.
BINARY_KIND = common_pb2.CONTENT_KIND_SOURCE_DOCUMENT


def upload_requests(data: bytes, chunk: int = CHUNK, *, declared_size: int | None = None, sha256: str | None = None,
                    kind: int = common_pb2.CONTENT_KIND_ESSAY_TEXT, content_type: str = "text/plain; charset=utf-8",
                    filename: str = "essay.txt"):  # fmt: skip
    yield content_pb2.UploadRequest(
        header=content_pb2.UploadHeader(
            kind=kind,
            content_type=content_type,
            filename=filename,
            declared_size=len(data) if declared_size is None else declared_size,
            sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
        )
    )
    for start in range(0, len(data), chunk):
        yield content_pb2.UploadRequest(chunk=data[start : start + chunk])


async def upload(stub, data: bytes, metadata=(), **header) -> content_pb2.UploadResponse:
    """Upload; when the server refuses early, its status is what the returned call raises."""
    call = stub.Upload(metadata=metadata)
    await write_all(call, upload_requests(data, **header))
    return await call


async def download(stub, storage_id: str, metadata=()) -> tuple[content_pb2.ContentMetadata, bytes]:
    found = None
    parts = []
    async for message in stub.Download(content_pb2.DownloadRequest(storage_id=storage_id), metadata=metadata):
        if message.HasField("metadata"):
            found = message.metadata
        parts.append(message.chunk)
    return found, b"".join(parts)
