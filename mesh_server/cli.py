"""What both services' command lines share: running a server until a signal, reporting where it listens."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mesh_server.database import NotMigrated


def run_service(start: Callable[[], Awaitable[Any]], ready_file: Path | None, name: str) -> None:
    """Start a service app, announce its addresses, serve until SIGTERM/SIGINT."""

    async def main() -> None:
        try:
            app = await start()
        except (NotMigrated, ValueError) as error:  # ValueError: unusable settings (TLS files, tokens)
            print(f"{name}: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        addresses = {"address": app.address, "metrics_port": app.metrics_port}
        print(f"{name} listening on {app.address}", file=sys.stderr, flush=True)
        if ready_file is not None:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            temp = ready_file.with_suffix(".tmp")
            temp.write_text(json.dumps(addresses))
            temp.replace(ready_file)
        try:
            await app.server.wait_for_signal()
        finally:
            await app.stop()

    asyncio.run(main())
