"""Which replica works which batch: leases on batch rows, so that stateless `cj-svc` replicas can
share one database and each unfinished batch is worked by exactly one of them at a time.

A replica claims a batch by writing its id and an expiry into the row, renews the lease while it
works, and releases it when it stops. A lease that is not renewed expires, and any replica may then
claim the batch and resume it (comparisons already answered are never asked again; unanswered ones
are). Free batches are found with `SELECT ... FOR UPDATE SKIP LOCKED`, so replicas scanning at the
same moment never claim the same row (on SQLite, which has one writer at a time, the clause is a
no-op and the conditional update alone decides).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cj_svc.models import Batch
from cj_svc.vocabulary import UNFINISHED_STATES
from mesh_server import database


class LeaseLost(Exception):
    """Another replica holds the batch now; this one must stop working on it."""


class Leases:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], owner: str, seconds: float) -> None:
        self.sessions = sessions
        self.owner = owner
        self.seconds = seconds

    def _claimable(self, now: datetime) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
        return Batch.state.in_(UNFINISHED_STATES), or_(
            Batch.lease_owner.is_(None), Batch.lease_owner == self.owner, Batch.lease_expires_at < now
        )

    async def claim(self, batch_id: str) -> bool:
        """Take the batch if it is free, expired or already ours."""
        now = datetime.now(UTC)
        result = await database.write(
            self.sessions,
            lambda session: session.execute(
                update(Batch)
                .where(Batch.batch_id == batch_id, *self._claimable(now))
                .values(lease_owner=self.owner, lease_expires_at=now + timedelta(seconds=self.seconds))
            ),
        )
        return database.changed_rows(result) == 1

    async def claim_free(self, limit: int = 20) -> list[str]:
        """Claim up to `limit` unfinished batches that nobody holds (or whose lease expired)."""
        now = datetime.now(UTC)

        async def claim(session: AsyncSession) -> list[str]:
            ids = list(
                (
                    await session.execute(
                        select(Batch.batch_id)
                        .where(*self._claimable(now))
                        .order_by(Batch.created_at)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            if not ids:
                return []
            # claimable checked again as the rows are written: on SQLite the select locks nothing, and a
            # batch that completed (its lease released) in between must not be leased again
            taken = await session.execute(
                update(Batch)
                .where(Batch.batch_id.in_(ids), *self._claimable(now))
                .values(lease_owner=self.owner, lease_expires_at=now + timedelta(seconds=self.seconds))
                .returning(Batch.batch_id)
            )
            return list(taken.scalars())

        return await database.write(self.sessions, claim)

    async def renew(self, batch_id: str) -> None:
        """Extend our lease; LeaseLost if it is no longer ours."""
        now = datetime.now(UTC)
        result = await database.write(
            self.sessions,
            lambda session: session.execute(
                update(Batch)
                .where(Batch.batch_id == batch_id, Batch.lease_owner == self.owner)
                .values(lease_expires_at=now + timedelta(seconds=self.seconds))
            ),
        )
        if database.changed_rows(result) != 1:
            raise LeaseLost(f"batch {batch_id} is no longer leased to {self.owner}")

    async def release(self, batch_id: str) -> None:
        await database.write(
            self.sessions,
            lambda session: session.execute(
                update(Batch)
                .where(Batch.batch_id == batch_id, Batch.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires_at=None)
            ),
        )
