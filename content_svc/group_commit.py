"""Group commit: work that arrives while a commit is under way waits for the next one, which takes
it all, so concurrent small uploads share one durable flush and one transaction (the way
PostgreSQL's write-ahead log groups the commits of concurrent transactions). A lone item is
committed at once: nothing waits for company."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """`put` an item; `commit` gets every item waiting (up to `max_group`) and returns one result
    each, in order. Commits run in a task of their own (given to `track`, so that a shutdown can wait
    for it): a caller that is cancelled leaves its item to be committed with its group."""

    def __init__(
        self,
        commit: Callable[[list[Item]], Awaitable[list[Result]]],
        track: Callable[[asyncio.Task[None]], None],
        max_group: int = 256,
    ) -> None:
        self._commit = commit
        self._track = track
        self.max_group = max_group
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def put(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())
            self._track(self._draining)
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group = self._waiting[: self.max_group]
                del self._waiting[: self.max_group]
                try:
                    results = await self._commit([item for item, _ in group])
                except BaseException as error:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(error)
                    if isinstance(error, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = None
            for _, future in self._waiting:  # only when cancelled: nothing will commit these
                if not future.done():
                    future.set_exception(asyncio.CancelledError())
            self._waiting.clear()
