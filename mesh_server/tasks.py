"""Work that must not be cut in half by a cancelled caller."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def run_to_end(work: Coroutine[Any, Any, T] | asyncio.Future[T]) -> T:
    """Run `work` to its end and return its result, even when the caller is cancelled meanwhile
    (the caller's cancellation is raised once the work has ended): a cancelled RPC or task must
    neither leave a transaction open or half-written files behind, nor undo a committed write."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the caller's cancellation is what propagates
        raise
