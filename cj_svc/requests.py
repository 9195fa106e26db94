"""Requests that change something carry a request_id; the same request sent again is not done twice.

SubmitBatch keeps its request_id and fingerprint on the batch. The other changes (the admin
calls and CancelBatch) record theirs in `handled_requests`, in the transaction that makes the
change (`remember`); `once` then answers a request sent again from the state it left instead of
doing it again, and refuses the same request_id on a different request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cj_svc.models import HandledRequest
from mesh_server import errors

T = TypeVar("T")


def fingerprint(request: Any) -> str:
    """sha256 of a request's known fields without its request_id: the same request retried has the
    same one, whatever fields a newer client adds that this service does not know."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.DiscardUnknownFields()
    copy.request_id = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True)
class RequestKey:
    request_id: str
    method: str
    fingerprint: str

    @classmethod
    def of(cls, method: str, request: Any) -> RequestKey:
        return cls(request.request_id, method, fingerprint(request))


def remember(session: AsyncSession, key: RequestKey | None) -> None:
    """Record, in the change's own transaction, that `key`'s request has been handled."""
    if key is not None:
        session.add(
            HandledRequest(
                request_id=key.request_id, method=key.method, fingerprint=key.fingerprint, handled_at=datetime.now(UTC)
            )
        )


async def handled(sessions: async_sessionmaker[AsyncSession], key: RequestKey) -> bool:
    """Whether this request was handled before; InvalidArgument when its request_id was used for
    a different request."""
    async with sessions() as session:
        row = await session.get(HandledRequest, key.request_id)
    if row is None:
        return False
    if (row.method, row.fingerprint) != (key.method, key.fingerprint):
        raise errors.InvalidArgument(
            f"request_id {key.request_id} was already used for a different {row.method} request; send a new "
            "request_id with each new request (and the same one only when sending the same request again)",
            field="request_id",
        )
    return True


async def once(
    sessions: async_sessionmaker[AsyncSession], key: RequestKey, change: Callable[[], Awaitable[T]]
) -> T | None:
    """`change` (which must `remember(key)` in its transaction), unless the request was handled
    before: then None, and the caller answers from the current state. A twin of this request that
    won a race makes `change` fail (on its own rules or on the record); that is answered as handled."""
    if await handled(sessions, key):
        return None
    try:
        return await change()
    except (errors.DomainError, IntegrityError):
        if await handled(sessions, key):
            return None
        raise
