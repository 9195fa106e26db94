"""Services as separate processes (the real console scripts), for tests that kill or restart them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


class ServiceProcess:
    def __init__(self, command: str, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.args = args
        self.workdir = workdir
        self.env = env or {}
        self.process: asyncio.subprocess.Process | None = None
        self.address = ""

    async def start(self, timeout: float = 60) -> str:
        ready = self.workdir / f"{self.command}.ready.json"
        ready.unlink(missing_ok=True)
        log = open(self.workdir / f"{self.command}.log", "ab")  # noqa: ASYNC230, SIM115 - kept open for the process
        self.process = await asyncio.create_subprocess_exec(
            str(BIN / self.command), "serve", *self.args, "--ready-file", str(ready),
            cwd=self.workdir, stdout=log, stderr=log, env={**os.environ, **self.env},
        )  # fmt: skip
        async with asyncio.timeout(timeout):
            while not ready.exists():
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"{self.command} exited: {(self.workdir / f'{self.command}.log').read_text()[-2000:]}"
                    )
                await asyncio.sleep(0.05)
        self.address = json.loads(ready.read_text())["address"]
        return self.address

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(15):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()


def wait_for_ready_file(ready: Path, process: subprocess.Popen, timeout: float = 60) -> dict:
    """The addresses a service wrote to its --ready-file (for tests that drive it synchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            return json.loads(ready.read_text())
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"{process.args[0]} did not write {ready} within {timeout} s")
