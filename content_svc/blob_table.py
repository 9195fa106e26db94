"""Blobs in the database (`--blob-store database`): content as rows of `content_blob_chunks`, so that
any number of Content Service replicas serve one store, and the database's replication and backups
keep the essays. Same promises as the blob directory: a blob appears whole or not at all, and every
read is checked against its row's size and sha256.

An upload streams into rows under a temporary key (`~` and a new id), at most CHUNK_BYTES each and
never more than one chunk held in memory; committing renames them to the storage id in one
transaction. A crash leaves only temporary rows, which `prepare` removes once they are old enough
not to belong to an upload still under way on another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from content_svc.blobs import Damaged, Expected, Inspector, check_digest
from content_svc.models import BlobChunk
from mesh_common.ids import new_id
from mesh_server import database
from mesh_server.tasks import run_to_end

CHUNK_BYTES = 1024 * 1024
TEMP_PREFIX = "~"
# Temporary rows older than this belong to no upload still under way (an upload that sends
# nothing for --upload-idle-seconds is closed): `prepare` removes them.
STALE_TEMP = timedelta(hours=1)
PROBE_KEY = "~health-probe"


def _rows(key: str, content: bytes, first_seq: int = 0) -> list[dict]:
    now = datetime.now(UTC)
    pieces = [content[i : i + CHUNK_BYTES] for i in range(0, len(content), CHUNK_BYTES)] or [b""]
    return [{"blob_key": key, "seq": first_seq + i, "data": p, "written_at": now} for i, p in enumerate(pieces)]


class TableWriter:
    """Streams an upload into temporary rows, hashing as it goes (see the module's docstring)."""

    def __init__(
        self, table: BlobTable, storage_id: str | None, inspector: Inspector | None, expected_size: int | None
    ) -> None:
        """`storage_id` None: hash the stream only, storing nothing (for content already stored)."""
        self.table = table
        self.storage_id = storage_id
        self.inspector = inspector
        self.temp_key = TEMP_PREFIX + new_id()
        self.size = 0
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self._rows_written = 0
        self._writing: asyncio.Future[None] | None = None  # the row being written while more arrives

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.inspector is not None:
            self.inspector.update(chunk)
        self._hash.update(chunk)
        if self.storage_id is None:
            return
        self._pending += chunk
        while len(self._pending) >= CHUNK_BYTES:
            piece, self._pending = bytes(self._pending[:CHUNK_BYTES]), self._pending[CHUNK_BYTES:]
            rows = _rows(self.temp_key, piece, self._rows_written)
            await self._settle()  # one row in flight at a time: memory stays bounded, rows in order
            self._writing = asyncio.ensure_future(
                self.table.write(lambda session, rows=rows: session.execute(insert(BlobChunk), rows))
            )
            self._rows_written += 1

    async def _settle(self) -> None:
        """Wait for the row in flight (even when cancelled); raises what writing it raised."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await run_to_end(writing)

    async def finish(self) -> str:
        await self._settle()
        if self.inspector is not None:
            self.inspector.end()
        return self._hash.hexdigest()

    async def commit(self, storage_id: str | None = None) -> None:
        """Make the blob whole under its storage id (or as `storage_id`'s blob, replacing what is
        there) in one transaction."""
        await self._settle()
        target = storage_id or self.storage_id
        assert target is not None
        tail = bytes(self._pending)
        written = self._rows_written

        async def rename(session: AsyncSession) -> None:
            await session.execute(delete(BlobChunk).where(BlobChunk.blob_key == target))
            await session.execute(update(BlobChunk).where(BlobChunk.blob_key == self.temp_key).values(blob_key=target))
            if tail or not written:  # an empty blob is one empty row: no rows at all means missing
                await session.execute(insert(BlobChunk), _rows(target, tail, written))

        await self.table.write(rename)
        self._pending = bytearray()

    async def discard(self) -> None:
        """Remove the temporary rows, even when the calling task is being cancelled."""
        with contextlib.suppress(Exception):  # the upload failed already; its error is reported
            await self._settle()
        if self._rows_written:
            await self.table.remove(self.temp_key)


class BlobTable:
    """Where blobs live with `--blob-store database`: the Content Service's own database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def write(self, work: Callable[[AsyncSession], Awaitable[Any]]) -> None:
        """`work` in one transaction that runs to its end (see `database.write`)."""
        await database.write(self.sessions, work)

    def writer(
        self, storage_id: str | None, inspector: Inspector | None = None, expected_size: int | None = None
    ) -> TableWriter:
        return TableWriter(self, storage_id, inspector, expected_size)

    async def prepare(self) -> int:
        """Remove temporary rows a crash left behind (old enough to belong to no upload still under
        way); returns how many blobs' rows were removed."""
        cutoff = datetime.now(UTC) - STALE_TEMP
        stale = BlobChunk.blob_key.startswith(TEMP_PREFIX) & (BlobChunk.written_at < cutoff)
        async with self.sessions() as session:
            keys = set((await session.execute(select(BlobChunk.blob_key).where(stale))).scalars())
        if keys:
            await self.write(lambda session: session.execute(delete(BlobChunk).where(stale)))
        return len(keys)

    async def probe(self) -> str | None:
        """None when a blob row can be written and committed (a real write), else why not."""

        async def touch(session: AsyncSession) -> None:
            await session.execute(delete(BlobChunk).where(BlobChunk.blob_key == PROBE_KEY))
            await session.execute(insert(BlobChunk), _rows(PROBE_KEY, b"probe"))

        try:
            await self.write(touch)
        except (SQLAlchemyError, OSError) as error:
            return f"blob table cannot be written: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        return None

    async def write_small(self, contents: dict[str, bytes]) -> None:
        """Many small blobs in one transaction (a blob already there, being repaired, is replaced)."""
        rows = [row for storage_id, content in contents.items() for row in _rows(storage_id, content)]

        async def store(session: AsyncSession) -> None:
            await session.execute(delete(BlobChunk).where(BlobChunk.blob_key.in_(list(contents))))
            await session.execute(insert(BlobChunk), rows)

        await self.write(store)

    # -- reading, always checked --------------------------------------------------------------

    async def _sizes(self, expected: Expected) -> list[tuple[int, int]]:
        """(seq, length) of the blob's rows; Damaged when it has none or they hold another size."""
        async with self.sessions() as session:
            query = (
                select(BlobChunk.seq, func.length(BlobChunk.data))
                .where(BlobChunk.blob_key == expected.storage_id)
                .order_by(BlobChunk.seq)
            )
            pieces = [(seq, length) for seq, length in (await session.execute(query)).all()]
        if not pieces:
            raise Damaged(expected.storage_id, "MISSING", "its blob rows are gone")
        size = sum(length for _, length in pieces)
        if size != expected.size:
            raise Damaged(expected.storage_id, "DAMAGED", f"its blob holds {size} bytes, not {expected.size}")
        return pieces

    async def read_verified(self, expected: Expected) -> bytes:
        """The blob's bytes, checked against size and sha256 (Damaged when they differ)."""
        await self._sizes(expected)
        async with self.sessions() as session:
            query = select(BlobChunk.data).where(BlobChunk.blob_key == expected.storage_id).order_by(BlobChunk.seq)
            content = b"".join((await session.execute(query)).scalars())
        if len(content) != expected.size:  # changed between the two reads
            raise Damaged(expected.storage_id, "DAMAGED", f"its blob holds {len(content)} bytes")
        check_digest(expected, hashlib.sha256(content).hexdigest())
        return content

    async def verify(self, expected: Expected) -> None:
        """Hash the blob without keeping it whole (Damaged when it differs)."""
        async for _ in self.read_chunks_verified(expected, CHUNK_BYTES):
            pass

    async def check_size(self, expected: Expected) -> None:
        """Only that the blob exists with its size (Damaged when not)."""
        await self._sizes(expected)

    async def read_chunks_verified(self, expected: Expected, chunk_size: int) -> AsyncIterator[bytes]:
        """The blob in chunks, one row read at a time, hashed as they go: Damaged before the first
        chunk when the rows are gone or of another size, and after the last when the bytes differ."""
        pieces = await self._sizes(expected)
        digest = hashlib.sha256()
        for seq, _ in pieces:
            async with self.sessions() as session:
                query = select(BlobChunk.data).where(BlobChunk.blob_key == expected.storage_id, BlobChunk.seq == seq)
                data = (await session.execute(query)).scalar_one_or_none()
            if data is None:
                raise Damaged(expected.storage_id, "MISSING", "its blob rows were removed while being read")
            digest.update(data)
            for start in range(0, len(data), chunk_size):
                yield data[start : start + chunk_size]
        check_digest(expected, digest.hexdigest())

    # -- what is there ------------------------------------------------------------------------

    async def listing(self) -> dict[str, float]:
        """storage id -> when its blob was written (seconds since the epoch), temporary rows excluded."""
        async with self.sessions() as session:
            query = (
                select(BlobChunk.blob_key, func.min(BlobChunk.written_at))
                .where(~BlobChunk.blob_key.startswith(TEMP_PREFIX))
                .group_by(BlobChunk.blob_key)
            )
            rows = (await session.execute(query)).all()
        return {key: (written if written.tzinfo else written.replace(tzinfo=UTC)).timestamp() for key, written in rows}

    async def remove(self, storage_id: str) -> None:
        await self.write(lambda session: session.execute(delete(BlobChunk).where(BlobChunk.blob_key == storage_id)))
