"""Running real command-line tools (grpcurl, buf, node) from async tests without blocking the loop."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def tool(name: str) -> str:
    """Path of a tool the project installs (the venv's bin, then node_modules/.bin)."""
    for folder in (VENV_BIN, ROOT / "node_modules" / ".bin"):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; run `make install`")
    return found


async def run(*args: str, timeout: float = 60, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    return Result(process.returncode or 0, out.decode(), err.decode())


async def grpcurl(*args: str) -> Result:
    return await run(tool("grpcurl"), *args)
