"""Blob files: written atomically (temp file in the same directory, fsync, rename), read in chunks."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from mesh_server.ids import new_id

TEMP_SUFFIX = ".tmp"


class BlobWriter:
    """Streams bytes into a temp file beside its final place, hashing as it goes."""

    def __init__(self, final_path: Path) -> None:
        self.final_path = final_path
        self.temp_path = final_path.with_name(f".{final_path.name}.{new_id()[:8]}{TEMP_SUFFIX}")
        self.size = 0
        self._hash = hashlib.sha256()
        self._file = None

    async def open(self) -> None:
        await aiofiles.os.makedirs(self.final_path.parent, exist_ok=True)
        self._file = await aiofiles.open(self.temp_path, "wb")

    async def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        await self._file.write(chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def commit(self) -> None:
        """Make the blob durable under its final name."""
        await self._file.flush()
        await aiofiles.os.wrap(os.fsync)(self._file.fileno())
        await self._file.close()
        self._file = None
        await aiofiles.os.replace(self.temp_path, self.final_path)
        await aiofiles.os.wrap(_fsync_directory)(self.final_path.parent)

    async def discard(self) -> None:
        """Remove the temp file, even when the calling task is being cancelled."""
        await finish_even_if_cancelled(self._remove_temp())

    async def _remove_temp(self) -> None:
        if self._file is not None:
            await self._file.close()
            self._file = None
        try:
            await aiofiles.os.remove(self.temp_path)
        except FileNotFoundError:
            pass


async def finish_even_if_cancelled(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run a cleanup to its end: a cancelled RPC must still remove what it half-wrote."""
    task = asyncio.ensure_future(cleanup)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobDirectory:
    """Where blobs live: `<root>/<first two hex>/<storage id>`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, storage_id: str) -> Path:
        return self.root / storage_id[:2] / storage_id

    def writer(self, storage_id: str) -> BlobWriter:
        return BlobWriter(self.path(storage_id))

    def prepare(self) -> int:
        """Create the root and remove temp files a crash left behind; returns how many."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = 0
        for leftover in self.root.glob(f"*/.*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def usable(self) -> str | None:
        """None when blobs can be written here, else why not."""
        if not self.root.is_dir():
            return f"storage directory {self.root} does not exist"
        if not os.access(self.root, os.W_OK | os.X_OK):
            return f"storage directory {self.root} is not writable"
        return None

    async def read_all(self, storage_id: str) -> bytes:
        async with aiofiles.open(self.path(storage_id), "rb") as blob:
            return await blob.read()

    async def read_chunks(self, storage_id: str, chunk_size: int) -> AsyncIterator[bytes]:
        async with aiofiles.open(self.path(storage_id), "rb") as blob:
            while chunk := await blob.read(chunk_size):
                yield chunk

    async def remove(self, storage_id: str) -> None:
        async def unlink() -> None:
            try:
                await aiofiles.os.remove(self.path(storage_id))
            except FileNotFoundError:
                pass

        await finish_even_if_cancelled(unlink())
