"""What a Content Service holds in its blob store, and damage done to it, on either backend
(`--blob-store filesystem`: files; `database`: rows of content_blob_chunks)."""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update

from content_svc.blob_table import TEMP_PREFIX, BlobTable
from content_svc.models import BlobChunk


def _in_database(app) -> bool:
    return isinstance(app.store.blobs, BlobTable)


async def blobs_of(app) -> dict[str, bytes]:
    """storage id -> bytes of every finished blob (temp files, probes and unfinished rows excluded)."""
    if not _in_database(app):
        root = app.store.blobs.root
        return {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}
    pieces: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    async with app.store.blobs.sessions() as session:
        rows = await session.execute(select(BlobChunk.blob_key, BlobChunk.seq, BlobChunk.data))
        for key, seq, data in rows.all():
            if not key.startswith(TEMP_PREFIX):
                pieces[key].append((seq, data))
    return {key: b"".join(data for _, data in sorted(parts)) for key, parts in pieces.items()}


async def unfinished(app) -> list[str]:
    """What uploads left behind: temp files, or rows under a temporary key."""
    if not _in_database(app):
        return [str(p) for p in app.store.blobs.root.rglob(".*.tmp")]
    async with app.store.blobs.sessions() as session:
        query = select(BlobChunk.blob_key).where(
            BlobChunk.blob_key.startswith(TEMP_PREFIX), BlobChunk.blob_key != "~health-probe"
        )
        return sorted(set((await session.execute(query)).scalars()))


async def damage(app, storage_id: str, how: str) -> None:
    """ "flipped byte" (same size), "truncated" (10 bytes left) or "deleted"."""
    if not _in_database(app):
        path = app.store.blobs.path(storage_id)
        if how == "flipped byte":
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
        elif how == "truncated":
            path.write_bytes(path.read_bytes()[:10])
        else:
            path.unlink()
        return
    content = (await blobs_of(app))[storage_id]
    if how == "flipped byte":
        data = bytearray(content)
        data[len(data) // 2] ^= 0x01
        content = bytes(data)
    elif how == "truncated":
        content = content[:10]
    async with app.store.blobs.sessions.begin() as session:
        await session.execute(delete(BlobChunk).where(BlobChunk.blob_key == storage_id))
        if how != "deleted":
            await session.execute(
                insert(BlobChunk),
                [{"blob_key": storage_id, "seq": 0, "data": content, "written_at": datetime.now(UTC)}],
            )


async def add_orphan(app, storage_id: str, content: bytes, written: datetime) -> None:
    """A finished blob that no row points at, written at `written`."""
    if not _in_database(app):
        path = app.store.blobs.path(storage_id)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        stamp = written.timestamp()
        os.utime(path, (stamp, stamp))
        return
    async with app.store.blobs.sessions.begin() as session:
        await session.execute(
            insert(BlobChunk), [{"blob_key": storage_id, "seq": 0, "data": content, "written_at": written}]
        )
        await session.execute(update(BlobChunk).where(BlobChunk.blob_key == storage_id).values(written_at=written))


async def add_unfinished(app) -> list[str]:
    """Leave what a crash mid-upload leaves; returns what a restart must keep. Files: a temp file,
    all removed at start (one machine, one service). Rows: a temporary key written two hours ago,
    removed, and one written now, kept (it may be another replica's upload in flight)."""
    if not _in_database(app):
        leftover = app.store.blobs.root / "ab" / ".abandoned.12345678.tmp"
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"half a blob")
        return []
    now = datetime.now(UTC)
    stale, in_flight = TEMP_PREFIX + "1" * 32, TEMP_PREFIX + "2" * 32
    async with app.store.blobs.sessions.begin() as session:
        await session.execute(insert(BlobChunk), [
            {"blob_key": stale, "seq": 0, "data": b"half a blob", "written_at": now - timedelta(hours=2)},
            {"blob_key": in_flight, "seq": 0, "data": b"in flight", "written_at": now},
        ])  # fmt: skip
    return [in_flight]
