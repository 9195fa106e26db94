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
