"""Making files and folders unwritable in tests, also as root (who ignores permission bits)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def _set(paths: list[Path], frozen: bool) -> None:
    if os.geteuid() == 0:
        # Root writes through any mode bits; the immutable attribute stops even root.
        subprocess.run(["chattr", "+i" if frozen else "-i", *map(str, paths)], check=True)
    else:
        for path in paths:
            path.chmod((0o555 if path.is_dir() else 0o444) if frozen else (0o755 if path.is_dir() else 0o644))


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Nothing can be created in, removed from or written to `paths` inside the block."""
    existing = [p for p in paths if p.exists()]
    _set(existing, True)
    try:
        yield
    finally:
        _set(existing, False)


def freeze(*paths: Path) -> None:
    _set([p for p in paths if p.exists()], True)


def thaw(*paths: Path) -> None:
    _set([p for p in paths if p.exists()], False)


@contextlib.asynccontextmanager
async def database_read_only(url: str, cluster=None):  # type: ignore[no-untyped-def]
    """The database at `url` refuses writes inside the block (reads still work): on SQLite its files
    are made immutable, on PostgreSQL new transactions are read-only and open sessions are ended."""
    if url.startswith("sqlite"):
        database = Path(url.removeprefix("sqlite:///"))
        # Not the -shm file: SQLite maps it into memory, and a write to a frozen mapping is SIGBUS.
        with read_only(database, database.with_name(database.name + "-wal"), database.parent):
            yield
        return
    name = url.rsplit("/", 1)[1]
    kick = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    cluster.psql(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    cluster.psql(kick)
    try:
        yield
    finally:
        cluster.psql(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        cluster.psql(kick)
