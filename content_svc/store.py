"""The content store: deduplicating, durable storage of texts. No grpc here.

A blob is made durable before its row is committed, and the row is what makes it visible; a
failed, refused or cancelled upload leaves neither behind.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from content_svc.blobs import BlobDirectory
from content_svc.models import ContentObject
from mesh_server import errors
from mesh_server.ids import new_id

MiB = 1024 * 1024
# SQLite accepts 32,766 bound parameters; stay well below it for IN (...) lists.
_IN_LIST_CHUNK = 5000


@dataclass(frozen=True)
class Description:
    """What an uploader says about content before sending it."""

    kind: str
    content_type: str
    filename: str = ""
    declared_size: int | None = None
    sha256: str = ""


@dataclass(frozen=True)
class Stored:
    storage_id: str
    sha256: str
    size: int
    content_type: str
    filename: str
    kind: str
    created_at: datetime
    deduplicated: bool = False


def _stored(row: ContentObject, deduplicated: bool = False) -> Stored:
    return Stored(
        storage_id=row.storage_id,
        sha256=row.sha256,
        size=row.size,
        content_type=row.content_type,
        filename=row.filename,
        kind=row.kind,
        created_at=row.created_at,
        deduplicated=deduplicated,
    )


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _IN_LIST_CHUNK):
        yield values[start : start + _IN_LIST_CHUNK]


class ContentStore:
    def __init__(self, engine: AsyncEngine, blobs: BlobDirectory, max_object_bytes: int = 64 * MiB) -> None:
        self.engine = engine
        self.blobs = blobs
        self.max_object_bytes = max_object_bytes
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    # -- writing ---------------------------------------------------------------------------

    def check_declared_size(self, description: Description, field: str) -> None:
        if description.declared_size is not None and description.declared_size > self.max_object_bytes:
            raise errors.InvalidArgument(
                f"declared size {description.declared_size} bytes exceeds this service's maximum of "
                f"{self.max_object_bytes} bytes; split the content or raise --max-object-bytes",
                field=field,
            )

    async def put_stream(
        self, description: Description, chunks: AsyncIterator[bytes], correlation_id: str = ""
    ) -> Stored:
        """Store streamed content; refuse it as soon as it breaks its description or the maximum.

        When the declared sha256 is of content already stored, the stream is only hashed, to check
        that it is that content, and nothing is written."""
        self.check_declared_size(description, "header.declared_size")
        known = await self._find_sha(description.sha256) if description.sha256 else None
        storage_id = new_id()
        writer = self.blobs.writer(storage_id if known is None else None)
        try:
            await writer.open(description.declared_size)
            async for chunk in chunks:
                if writer.size + len(chunk) > self.max_object_bytes:
                    raise errors.InvalidArgument(
                        f"content exceeds this service's maximum of {self.max_object_bytes} bytes",
                        field="chunk",
                    )
                if description.declared_size is not None and writer.size + len(chunk) > description.declared_size:
                    raise errors.InvalidArgument(
                        f"received more than the declared {description.declared_size} bytes",
                        field="header.declared_size",
                    )
                await writer.write(chunk)
            digest = await writer.finish()
            self._verify(description, writer.size, digest, "header")
            existing = known or await self._find_sha(digest)
            if existing is not None:
                await writer.discard()
                return _stored(existing, deduplicated=True)
            await writer.commit()
        except BaseException:
            await writer.discard()
            raise
        return await self._record(storage_id, digest, writer.size, description, correlation_id)

    async def put_many(
        self, items: Sequence[tuple[Description, bytes]], correlation_id: str = ""
    ) -> list[Stored | errors.DomainError]:
        """Store many small texts; each gets its result or its own error."""
        results: list[Stored | errors.DomainError | None] = [None] * len(items)
        digests = [hashlib.sha256(content).hexdigest() for _, content in items]
        existing = {row.sha256: row for row in await self._rows_by_sha(list(set(digests)))}
        fresh: dict[str, list[int]] = {}
        for index, ((description, content), digest) in enumerate(zip(items, digests, strict=True)):
            try:
                if len(content) > self.max_object_bytes:
                    raise errors.InvalidArgument(
                        f"content exceeds this service's maximum of {self.max_object_bytes} bytes",
                        field=f"items[{index}].content",
                    )
                self._verify(description, len(content), digest, f"items[{index}]")
            except errors.DomainError as error:
                results[index] = error
                continue
            if digest in existing:
                results[index] = _stored(existing[digest], deduplicated=True)
            else:
                fresh.setdefault(digest, []).append(index)

        storage_ids = {digest: new_id() for digest in fresh}
        rows: list[ContentObject] = []
        if fresh:
            try:
                await self.blobs.write_small({storage_ids[d]: items[fresh[d][0]][1] for d in fresh})
            except OSError as error:
                failure = (
                    errors.storage_full()
                    if error.errno == errno.ENOSPC
                    else errors.Unavailable(f"could not write the blobs: {error.strerror}; retry later")
                )
                for indexes in fresh.values():
                    for index in indexes:
                        results[index] = failure
                fresh = {}
        for digest, indexes in fresh.items():
            description, content = items[indexes[0]]
            rows.append(self._row(storage_ids[digest], digest, len(content), description, correlation_id))
        ours = {row.storage_id for row in rows}
        for row in await self._insert_many(rows):
            indexes = fresh[row.sha256]
            results[indexes[0]] = _stored(row, deduplicated=row.storage_id not in ours)
            for index in indexes[1:]:
                results[index] = _stored(row, deduplicated=True)
        return [r for r in results if r is not None]

    def _verify(self, description: Description, size: int, digest: str, where: str) -> None:
        if description.declared_size is not None and size != description.declared_size:
            raise errors.InvalidArgument(
                f"received {size} bytes but {description.declared_size} were declared; "
                "send the size of the exact bytes you upload",
                field=f"{where}.declared_size",
            )
        if description.sha256 and digest != description.sha256:
            raise errors.InvalidArgument(
                f"the content's sha256 is {digest}, not the declared {description.sha256}; "
                "the bytes changed in transit or the checksum is of other bytes",
                field=f"{where}.sha256",
            )

    @staticmethod
    def _row(storage_id: str, digest: str, size: int, description: Description, correlation_id: str) -> ContentObject:
        return ContentObject(
            storage_id=storage_id,
            sha256=digest,
            size=size,
            content_type=description.content_type,
            filename=description.filename,
            kind=description.kind,
            correlation_id=correlation_id,
            created_at=datetime.now(UTC),
        )

    async def _record(
        self, storage_id: str, digest: str, size: int, description: Description, correlation_id: str
    ) -> Stored:
        """Commit the row of a durable blob; on a concurrent twin, keep the twin and drop ours."""
        row = self._row(storage_id, digest, size, description, correlation_id)
        try:
            async with self.sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            await self.blobs.remove(storage_id)
            twin = await self._find_sha(digest)
            if twin is None:
                raise
            return _stored(twin, deduplicated=True)
        except BaseException:
            await self.blobs.remove(storage_id)
            raise
        return _stored(row)

    async def _insert_many(self, rows: list[ContentObject]) -> list[ContentObject]:
        """Insert rows in one transaction; fall back to one by one when a twin raced us."""
        if not rows:
            return []
        try:
            async with self.sessions.begin() as session:
                session.add_all(rows)
            return rows
        except IntegrityError:
            pass
        except BaseException:
            for row in rows:
                await self.blobs.remove(row.storage_id)
            raise
        stored: list[ContentObject] = []
        for row in rows:
            try:
                async with self.sessions.begin() as session:
                    session.add(row)
                stored.append(row)
            except IntegrityError:
                await self.blobs.remove(row.storage_id)
                twin = await self._find_sha(row.sha256)
                if twin is not None:
                    stored.append(twin)
        return stored

    # -- reading ---------------------------------------------------------------------------

    async def _find_sha(self, digest: str) -> ContentObject | None:
        async with self.sessions() as session:
            return (
                await session.execute(select(ContentObject).where(ContentObject.sha256 == digest))
            ).scalar_one_or_none()

    async def _rows_by_sha(self, digests: Sequence[str]) -> list[ContentObject]:
        rows: list[ContentObject] = []
        async with self.sessions() as session:
            for part in _chunks(digests):
                rows += (await session.execute(select(ContentObject).where(ContentObject.sha256.in_(part)))).scalars()
        return rows

    async def stat(self, storage_ids: Sequence[str]) -> tuple[list[Stored], list[str]]:
        """Metadata of the stored ids (in request order) and the ids that are missing."""
        found: dict[str, ContentObject] = {}
        async with self.sessions() as session:
            for part in _chunks(list(dict.fromkeys(storage_ids))):
                query = select(ContentObject).where(ContentObject.storage_id.in_(part))
                found.update((row.storage_id, row) for row in (await session.execute(query)).scalars())
        ordered = list(dict.fromkeys(storage_ids))
        return [_stored(found[i]) for i in ordered if i in found], [i for i in ordered if i not in found]

    async def find_by_checksum(self, digests: Sequence[str]) -> tuple[list[Stored], list[str]]:
        ordered = list(dict.fromkeys(digests))
        found = {row.sha256: row for row in await self._rows_by_sha(ordered)}
        return [_stored(found[d]) for d in ordered if d in found], [d for d in ordered if d not in found]

    async def metadata(self, storage_id: str) -> Stored:
        async with self.sessions() as session:
            row = await session.get(ContentObject, storage_id)
        if row is None:
            raise errors.NotFound(
                f"no content with storage id {storage_id}; upload it first (Upload or BatchUpload), "
                "or check that you pass the storage id the service returned, not a file checksum",
                field="storage_id",
            )
        return _stored(row)

    async def read(self, storage_id: str, max_bytes: int) -> tuple[Stored, bytes]:
        meta = await self.metadata(storage_id)
        if meta.size > max_bytes:
            raise errors.FailedPrecondition(
                f"content {storage_id} is {meta.size} bytes, more than Get returns ({max_bytes}); use Download",
                field="storage_id",
            )
        return meta, await self._read_blob(meta)

    async def read_many(
        self, storage_ids: Sequence[str], max_total_bytes: int
    ) -> tuple[list[tuple[Stored, bytes]], list[str], list[str]]:
        """Contents in request order up to `max_total_bytes` in all; also the missing ids and the
        stored ids that did not fit (deferred)."""
        found, missing = await self.stat(storage_ids)
        chosen, deferred, total = [], [], 0
        for meta in found:
            if total + meta.size > max_total_bytes:
                deferred.append(meta.storage_id)
            else:
                chosen.append(meta)
                total += meta.size
        contents = await asyncio.gather(*(self._read_blob(meta) for meta in chosen))
        return list(zip(chosen, contents, strict=True)), missing, deferred

    async def _read_blob(self, meta: Stored) -> bytes:
        try:
            return await self.blobs.read_all(meta.storage_id)
        except OSError as error:
            raise errors.Unavailable(f"blob {meta.storage_id} cannot be read: {error.strerror}") from error

    async def stream(self, storage_id: str, chunk_size: int) -> tuple[Stored, AsyncIterator[bytes]]:
        meta = await self.metadata(storage_id)
        return meta, self.blobs.read_chunks(storage_id, chunk_size)

    # -- health ------------------------------------------------------------------------------

    async def problem(self) -> str | None:
        """None when the store can serve, else what is wrong."""
        unusable = self.blobs.usable()
        if unusable:
            return unusable
        try:
            async with self.engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
        except (OperationalError, SQLAlchemyError, OSError) as error:
            return f"database unavailable: {type(error).__name__}"
        return None
