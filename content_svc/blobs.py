"""Blob files: written atomically (temp file in the same directory, fsync, rename), read back and
checked against their sha256."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiofiles.os

from mesh_common.ids import new_id
from mesh_server.tasks import run_to_end

TEMP_SUFFIX = ".tmp"
PROBE_NAME = ".health-probe"


# Every upload's chunks are hashed and written by this bounded pool, one chunk of an upload at a
# time: an upload that sends nothing holds no thread, and thousands of open uploads hold a handful.
STORING_THREADS = 8
_STORING = concurrent.futures.ThreadPoolExecutor(STORING_THREADS, thread_name_prefix="blob-store")
# Write-backs run beside the storing threads, so that hashing and writing go on during an fsync.
_WRITEBACKS = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="blob-writeback")


class Damaged(Exception):
    """A blob that does not hold the bytes its row describes. `state` is DAMAGED or MISSING."""

    def __init__(self, storage_id: str, state: str, reason: str) -> None:
        super().__init__(f"{storage_id}: {reason}")
        self.storage_id = storage_id
        self.state = state
        self.reason = reason


class Inspector(Protocol):
    """Sees every chunk of an upload in order, in a storing thread; raises to refuse the content."""

    def update(self, chunk: bytes) -> None: ...

    def end(self) -> None: ...


class Writer(Protocol):
    """One upload's bytes on their way into a blob store: `write` every chunk, `finish` (the
    sha256), then `commit` to make the blob whole under its storage id, or `discard`."""

    size: int  # bytes received

    async def write(self, chunk: bytes) -> None: ...

    async def finish(self) -> str: ...

    async def commit(self, storage_id: str | None = None) -> None: ...

    async def discard(self) -> None: ...


class BlobStore(Protocol):
    """Where blobs live: files in a directory (`BlobDirectory`, the embedded default) or rows of the
    service's database (`blob_table.BlobTable`). Reads raise Damaged when a blob is gone or does not
    hold the bytes its row describes."""

    def writer(
        self, storage_id: str | None, inspector: Inspector | None = None, expected_size: int | None = None
    ) -> Writer: ...

    async def prepare(self) -> int: ...

    async def probe(self) -> str | None: ...

    async def write_small(self, contents: dict[str, bytes]) -> None: ...

    async def read_verified(self, expected: Expected) -> bytes: ...

    async def verify(self, expected: Expected) -> None: ...

    async def check_size(self, expected: Expected) -> None: ...

    def read_chunks_verified(self, expected: Expected, chunk_size: int) -> AsyncIterator[bytes]: ...

    async def listing(self) -> dict[str, float]: ...

    async def remove(self, storage_id: str) -> None: ...


class BlobWriter:
    """Streams bytes into a temp file beside its final place, hashing as it goes.

    Each chunk is hashed and written in the shared storing pool while the next one is received;
    one chunk per upload is in flight at a time, so chunks stay in order and memory stays bounded.
    The temp file is created with the first chunk: an upload that sends nothing takes no disk.
    """

    # Every this many bytes, write the file back to disk and drop its pages from the page cache
    # while the stream goes on: the fsync at the end then only waits for the tail, and the next
    # chunks reuse freed pages instead of claiming new ones (which costs more than the drop).
    WRITEBACK_BYTES = 8 * 1024 * 1024
    # Blocks are reserved ahead of the writes (which makes them cheaper), at most this far beyond
    # what has arrived and never beyond the declared size: an idle upload reserves nothing.
    RESERVE_BYTES = 8 * 1024 * 1024

    def __init__(
        self,
        directory: BlobDirectory,
        final_path: Path | None,
        inspector: Inspector | None = None,
        expected_size: int | None = None,
    ) -> None:
        """`final_path` None: hash the stream only, storing nothing (for content already stored)."""
        self.directory = directory
        self.final_path = final_path
        self.expected_size = expected_size or 0
        self._reserved = 0
        self.temp_path = None if final_path is None else _temp_path(final_path)
        self.inspector = inspector
        self.size = 0  # bytes received
        self.size_stored = 0  # bytes written to the temp file
        self._hash = hashlib.sha256()
        self._file: Any = None
        self._storing: concurrent.futures.Future[None] | None = None  # the chunk in flight
        self._writeback: concurrent.futures.Future[None] | None = None
        self._unsynced = 0

    def _store(self, chunk: bytes) -> None:
        """In a storing thread: inspect, hash and write one chunk."""
        if self.inspector is not None:
            self.inspector.update(chunk)
        self._hash.update(chunk)
        if self.final_path is None:
            return
        if self._file is None:
            self.final_path.parent.mkdir(exist_ok=True)
            # Unbuffered: each chunk goes to the kernel in one write.
            self._file = open(self.temp_path, "wb", buffering=0)  # noqa: SIM115 - closed by commit or discard
        end = self.size_stored + len(chunk)
        if end > self._reserved and self._reserved < self.expected_size:
            more = min(max(end, self._reserved + self.RESERVE_BYTES), self.expected_size) - self._reserved
            os.posix_fallocate(self._file.fileno(), self._reserved, more)
            self._reserved += more
        self.size_stored = end
        view = memoryview(chunk)
        while view:  # an unbuffered write may take fewer bytes than offered
            view = view[self._file.write(view) :]
        self._unsynced += len(chunk)
        if self._unsynced >= self.WRITEBACK_BYTES and (self._writeback is None or self._writeback.done()):
            if self._writeback is not None:
                # A failed write-back fails the upload: the kernel reports an I/O error to one sync
                # call only, so the final fsync would not see it again.
                self._writeback.result()
            self._unsynced = 0
            self._writeback = _WRITEBACKS.submit(_sync_and_release, self._file.fileno())

    async def _settle(self) -> None:
        """Wait for the chunk in flight (even when cancelled: the file is not ours to close before)."""
        if self._storing is not None:
            job, self._storing = self._storing, None
            await run_to_end(asyncio.wrap_future(job))

    async def write(self, chunk: bytes) -> None:
        await self._settle()  # raises what storing the previous chunk raised
        self.size += len(chunk)
        self._storing = _STORING.submit(self._store, chunk)

    async def finish(self) -> str:
        """Wait for every chunk to be stored; returns the sha256 of the content."""
        await self._settle()
        if self.inspector is not None:
            self.inspector.end()
        if self._writeback is not None:
            await asyncio.wrap_future(self._writeback)
        return self._hash.hexdigest()

    async def commit(self, storage_id: str | None = None) -> None:
        """Make the blob durable under its final name, or as `storage_id`'s blob, replacing what is
        there (call finish() first)."""
        final_path = self.directory.path(storage_id) if storage_id else self.final_path
        assert final_path is not None and self.temp_path is not None
        if self._file is None:  # empty content: no chunk created the file
            await asyncio.to_thread(_create_empty, self.temp_path)
        else:
            await aiofiles.os.wrap(_sync_and_release)(self._file.fileno(), os.fsync)
            self._file.close()
            self._file = None
        await aiofiles.os.replace(self.temp_path, final_path)
        await aiofiles.os.wrap(_fsync_directory)(final_path.parent)

    async def discard(self) -> None:
        """Remove the temp file, even when the calling task is being cancelled."""
        await run_to_end(self._remove_temp())

    async def _remove_temp(self) -> None:
        with contextlib.suppress(Exception):  # the upload failed already; its error is reported
            await self._settle()
        if self._writeback is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self._writeback)
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.temp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(self.temp_path)


def _temp_path(final_path: Path) -> Path:
    return final_path.with_name(f".{final_path.name}.{new_id()[:8]}{TEMP_SUFFIX}")


def _create_empty(path: Path) -> None:
    path.parent.mkdir(exist_ok=True)
    with open(path, "wb") as blob:
        os.fsync(blob.fileno())


def _sync_and_release(fd: int, sync: Callable[[int], None] = os.fdatasync) -> None:
    sync(fd)
    # The bytes are on disk now; dropping them from the page cache keeps large uploads from
    # crowding it and lets the chunks that follow reuse the freed pages.
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _write_atomically(final_path: Path, content: bytes) -> None:
    final_path.parent.mkdir(exist_ok=True)
    temp_path = _temp_path(final_path)
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
SYNCFS_MIN_BLOBS = 8


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
            temp_path = _temp_path(final_path)
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


@dataclass(frozen=True)
class Expected:
    """What a blob must hold: its row's size and sha256."""

    storage_id: str
    size: int
    sha256: str


def check_digest(expected: Expected, digest: str) -> None:
    """Damaged when a blob's bytes hash to other than its row's sha256."""
    if digest != expected.sha256:
        raise Damaged(expected.storage_id, "DAMAGED", f"its bytes hash to {digest}, not {expected.sha256}")


class BlobDirectory:
    """Where blobs live: `<root>/<first two hex>/<storage id>`."""

    # Content read back by Get or BatchGet is hashed in this many bytes at a time.
    READ_CHUNK = 1024 * 1024

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, storage_id: str) -> Path:
        return self.root / storage_id[:2] / storage_id

    def writer(
        self, storage_id: str | None, inspector: Inspector | None = None, expected_size: int | None = None
    ) -> BlobWriter:
        """A writer for a new blob; with no storage id, one that only hashes what it is given."""
        return BlobWriter(self, None if storage_id is None else self.path(storage_id), inspector, expected_size)

    async def prepare(self) -> int:
        return await asyncio.to_thread(self._prepare)

    def _prepare(self) -> int:
        """Create the root and remove temp files a crash left behind; returns how many."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = 0
        for leftover in self.root.glob(f"*/.*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    async def probe(self) -> str | None:
        return await asyncio.to_thread(self._probe)

    def _probe(self) -> str | None:
        """None when a blob can be written and made durable here (a real write), else why not."""
        if not self.root.is_dir():
            return f"storage directory {self.root} does not exist"
        probe = self.root / PROBE_NAME
        try:
            with open(probe, "wb") as blob:
                blob.write(b"probe")
                os.fsync(blob.fileno())
            probe.unlink()
        except OSError as error:
            return f"storage directory {self.root} cannot be written: {error.strerror or error}"
        return None

    async def write_small(self, contents: dict[str, bytes]) -> None:
        """Write many small blobs atomically. Where the kernel offers syncfs (Linux), all temp files
        are written, made durable with one syncfs, renamed, and the names made durable with another:
        two flushes instead of one fsync per blob. Elsewhere each temp file is fsynced and renamed,
        then each touched directory fsynced once. A blob already there (being repaired) is replaced."""
        if _SYNCFS is not None and len(contents) >= SYNCFS_MIN_BLOBS:
            paths = {self.path(storage_id): content for storage_id, content in contents.items()}
            await aiofiles.os.wrap(_write_many_with_syncfs)(self.root, paths)
            return

        async def one(storage_id: str, content: bytes) -> None:
            await aiofiles.os.wrap(_write_atomically)(self.path(storage_id), content)

        results = await asyncio.gather(*(one(i, c) for i, c in contents.items()), return_exceptions=True)
        directories = {self.path(storage_id).parent for storage_id in contents}
        await asyncio.gather(*(aiofiles.os.wrap(_fsync_directory)(d) for d in directories))
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    # -- reading, always checked --------------------------------------------------------------

    def _open_checked(self, expected: Expected) -> Any:
        """The blob opened for reading, after checking that it exists and has its size."""
        try:
            blob = open(self.path(expected.storage_id), "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise Damaged(expected.storage_id, "MISSING", "its blob file is gone") from None
        size = os.fstat(blob.fileno()).st_size
        if size != expected.size:
            blob.close()
            raise Damaged(expected.storage_id, "DAMAGED", f"its blob holds {size} bytes, not {expected.size}")
        return blob

    async def read_verified(self, expected: Expected) -> bytes:
        """The blob's bytes, checked against size and sha256 (Damaged when they differ)."""
        return await asyncio.to_thread(self._read_verified, expected)

    def _read_verified(self, expected: Expected) -> bytes:
        with self._open_checked(expected) as blob:
            content = blob.read()
        check_digest(expected, hashlib.sha256(content).hexdigest())
        if len(content) != expected.size:  # changed between fstat and read
            raise Damaged(expected.storage_id, "DAMAGED", f"its blob holds {len(content)} bytes")
        return content

    async def verify(self, expected: Expected) -> None:
        """Hash the blob without keeping it (Damaged when it differs)."""
        await asyncio.to_thread(self._verify, expected)

    def _verify(self, expected: Expected) -> None:
        with self._open_checked(expected) as blob:
            digest = hashlib.file_digest(blob, "sha256").hexdigest()
        check_digest(expected, digest)

    async def check_size(self, expected: Expected) -> None:
        """Only that the blob exists with its size (Damaged when not)."""
        await asyncio.to_thread(lambda: self._open_checked(expected).close())

    async def read_chunks_verified(self, expected: Expected, chunk_size: int) -> AsyncIterator[bytes]:
        """The blob in chunks, hashed as they go: Damaged before the first chunk when the file is
        gone or of another size, and after the last when the bytes do not match."""
        blob = await asyncio.to_thread(self._open_checked, expected)
        digest = hashlib.sha256()
        try:
            while chunk := await asyncio.to_thread(blob.read, chunk_size):
                digest.update(chunk)
                yield chunk
        finally:
            blob.close()
        check_digest(expected, digest.hexdigest())

    # -- what is there ------------------------------------------------------------------------

    async def listing(self) -> dict[str, float]:
        """storage id -> when its blob was written (seconds since the epoch), for every blob file
        (temp files and probes excluded)."""
        return await asyncio.to_thread(lambda: dict(self._listing()))

    def _listing(self) -> Iterable[tuple[str, float]]:
        for directory in self.root.iterdir() if self.root.is_dir() else ():
            if not directory.is_dir():
                continue
            for entry in os.scandir(directory):
                if entry.is_file() and not entry.name.startswith("."):
                    yield entry.name, entry.stat().st_mtime

    async def remove(self, storage_id: str) -> None:
        async def unlink() -> None:
            with contextlib.suppress(FileNotFoundError):
                await aiofiles.os.remove(self.path(storage_id))

        await run_to_end(unlink())
