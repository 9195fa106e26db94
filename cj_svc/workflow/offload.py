"""Where the engine's CPU-heavy work runs: off the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Fits, pairing, the prior's choice and projection run in this pool, so that no RPC of another
# client waits on them. Two threads: numpy's linear algebra releases the GIL, and each batch hands
# over one piece of work at a time, so the queue is bounded by the batches being worked.
_ENGINE = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="cj-engine")


async def off_loop(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_ENGINE, functools.partial(function, *args))
