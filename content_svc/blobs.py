"""Blob files: written atomically (temp file in the same directory, fsync, rename), read in chunks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import hashlib
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from mesh_server.ids import new_id

TEMP_SUFFIX = ".tmp"


class BlobWriter:
    """Streams bytes into a temp file beside its final place, hashing as it goes.

    Hashing and writing run in the upload's own thread, fed through a small queue: receiving the
    next chunk overlaps with storing the last one, and the thread goes from chunk to chunk without
    waiting for the event loop (a hop through the loop per chunk cost a fifth of the throughput).
    """

    QUEUE_CHUNKS = 8
    # Every this many bytes, write the file back to disk and drop its pages from the page cache
    # while the stream goes on: the fsync at the end then only waits for the tail, and the next
    # chunks reuse freed pages instead of claiming new ones (which costs more than the drop).
    WRITEBACK_BYTES = 8 * 1024 * 1024

    def __init__(self, final_path: Path | None) -> None:
        """`final_path` None: hash the stream only, storing nothing (for content already stored)."""
        self.final_path = final_path
        self.temp_path = (
            None if final_path is None else final_path.with_name(f".{final_path.name}.{new_id()[:8]}{TEMP_SUFFIX}")
        )
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: Any = None
        self._chunks: queue.Queue[bytes | None] = queue.Queue(self.QUEUE_CHUNKS)
        self._stored: asyncio.Future[None] | None = None  # done when the storing thread has ended
        self._input_ended = False
        self._failure: BaseException | None = None

    async def open(self, expected_size: int | None = None) -> None:
        if self.final_path is not None:
            await aiofiles.os.makedirs(self.final_path.parent, exist_ok=True)
            # Unbuffered: each chunk goes to the kernel in one write.
            self._file = await aiofiles.os.wrap(open)(self.temp_path, "wb", buffering=0)
            if expected_size:
                # Reserving the blocks up front makes the writes that follow cheaper.
                await aiofiles.os.wrap(os.posix_fallocate)(self._file.fileno(), 0, expected_size)
        loop = asyncio.get_running_loop()
        self._stored = loop.create_future()
        threading.Thread(target=self._store_chunks, args=(loop,), name="blob-writer", daemon=True).start()

    def _store_chunks(self, loop: asyncio.AbstractEventLoop) -> None:
        """The storing thread: hash and write each chunk until the None that ends the input."""
        writeback: concurrent.futures.Future[None] | None = None
        unsynced = 0
        try:
            while (chunk := self._chunks.get()) is not None:
                if self._failure is not None:
                    continue  # keep taking chunks so that the loop never blocks on a full queue
                try:
                    self._store(chunk)
                    unsynced += len(chunk)
                    if (
                        self._file is not None
                        and unsynced >= self.WRITEBACK_BYTES
                        and (writeback is None or writeback.done())
                    ):
                        if writeback is not None:
                            # A failed write-back fails the upload: the kernel reports an I/O error
                            # to one sync call only, so the final fsync would not see it again.
                            writeback.result()
                        unsynced = 0
                        writeback = _WRITEBACKS.submit(_sync_and_release, self._file.fileno())
                except Exception as error:  # noqa: BLE001 - reported by write() and finish()
                    self._failure = error
            if writeback is not None:
                writeback.result()
        except Exception as error:  # noqa: BLE001 - a failed write-back is a failed upload
            self._failure = error
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_set_done, self._stored)

    def _store(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        if self._file is None:
            return
        view = memoryview(chunk)
        while view:  # an unbuffered write may take fewer bytes than offered
            view = view[self._file.write(view) :]

    async def _put(self, chunk: bytes | None) -> None:
        try:
            self._chunks.put_nowait(chunk)
        except queue.Full:
            await asyncio.to_thread(self._chunks.put, chunk)

    async def write(self, chunk: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        self.size += len(chunk)
        await self._put(chunk)

    async def _end_input(self) -> None:
        """Tell the storing thread that no more chunks come, and wait for it to end."""
        if self._stored is None:
            return
        if not self._input_ended:
            self._input_ended = True
            await self._put(None)
        await asyncio.wait([self._stored])

    async def finish(self) -> str:
        """Wait for every chunk to be written; returns the sha256 of the content."""
        await self._end_input()
        if self._failure is not None:
            raise self._failure
        return self._hash.hexdigest()

    async def commit(self) -> None:
        """Make the blob durable under its final name (call finish() first)."""
        await aiofiles.os.wrap(_sync_and_release)(self._file.fileno(), os.fsync)
        self._file.close()
        self._file = None
        await aiofiles.os.replace(self.temp_path, self.final_path)
        await aiofiles.os.wrap(_fsync_directory)(self.final_path.parent)

    async def discard(self) -> None:
        """Remove the temp file, even when the calling task is being cancelled."""
        await finish_even_if_cancelled(self._remove_temp())

    async def _remove_temp(self) -> None:
        if self._failure is None:
            self._failure = RuntimeError("the upload was discarded")  # the storing thread skips what is queued
        await self._end_input()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.temp_path is None:
            return
        try:
            await aiofiles.os.remove(self.temp_path)
        except FileNotFoundError:
            pass


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# Write-backs run beside the storing threads, so that hashing and writing go on during an fsync.
_WRITEBACKS = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="blob-writeback")


async def finish_even_if_cancelled(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run a cleanup to its end: a cancelled RPC must still remove what it half-wrote."""
    task = asyncio.ensure_future(cleanup)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _sync_and_release(fd: int, sync: Callable[[int], None] = os.fdatasync) -> None:
    sync(fd)
    # The bytes are on disk now; dropping them from the page cache keeps large uploads from
    # crowding it and lets the chunks that follow reuse the freed pages.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _write_atomically(final_path: Path, content: bytes) -> None:
    final_path.parent.mkdir(exist_ok=True)
    temp_path = final_path.with_name(f".{final_path.name}.{new_id()[:8]}{TEMP_SUFFIX}")
    try:
        with open(temp_path, "wb") as blob:
            blob.write(content)
            blob.flush()
            os.fsync(blob.fileno())
        os.replace(temp_path, final_path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int]
    return function


_SYNCFS = _load_syncfs()
# Below this many blobs, one fsync each costs less than flushing the whole file system.
SYNCFS_MIN_BLOBS = 32


def _syncfs(root: Path) -> None:
    fd = os.open(root, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:  # type: ignore[misc]
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
    finally:
        os.close(fd)


def _write_many_with_syncfs(root: Path, contents: dict[Path, bytes]) -> None:
    temps: list[tuple[Path, Path]] = []
    try:
        for final_path, content in contents.items():
            final_path.parent.mkdir(exist_ok=True)
            temp_path = final_path.with_name(f".{final_path.name}.{new_id()[:8]}{TEMP_SUFFIX}")
            temps.append((temp_path, final_path))
            with open(temp_path, "wb") as blob:
                blob.write(content)
        _syncfs(root)  # every byte on disk before any name points at it
        for temp_path, final_path in temps:
            os.replace(temp_path, final_path)
        _syncfs(root)  # and the names too
    except BaseException:
        for temp_path, _ in temps:
            temp_path.unlink(missing_ok=True)
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

    def writer(self, storage_id: str | None) -> BlobWriter:
        """A writer for a new blob; with no storage id, one that only hashes what it is given."""
        return BlobWriter(None if storage_id is None else self.path(storage_id))

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

    async def write_small(self, contents: dict[str, bytes]) -> None:
        """Write many small blobs atomically. Where the kernel offers syncfs (Linux), all temp files
        are written, made durable with one syncfs, renamed, and the names made durable with another:
        two flushes instead of one fsync per blob. Elsewhere each temp file is fsynced and renamed,
        then each touched directory fsynced once."""
        if _SYNCFS is not None and len(contents) >= SYNCFS_MIN_BLOBS:
            paths = {self.path(storage_id): content for storage_id, content in contents.items()}
            try:
                await aiofiles.os.wrap(_write_many_with_syncfs)(self.root, paths)
            except BaseException:
                await asyncio.gather(*(self.remove(storage_id) for storage_id in contents))
                raise
            return

        async def one(storage_id: str, content: bytes) -> None:
            await aiofiles.os.wrap(_write_atomically)(self.path(storage_id), content)

        results = await asyncio.gather(*(one(i, c) for i, c in contents.items()), return_exceptions=True)
        directories = {self.path(storage_id).parent for storage_id in contents}
        await asyncio.gather(*(aiofiles.os.wrap(_fsync_directory)(d) for d in directories))
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await asyncio.gather(*(self.remove(storage_id) for storage_id in contents))
            raise failures[0]

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
