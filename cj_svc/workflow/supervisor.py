"""The per-process supervisor: which batches this replica works (leases claimed, renewed, taken
over when another replica dies), a BatchRun for each, and their ends: stop, cancel, outages."""

from __future__ import annotations

import asyncio
import logging
import socket

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cj_svc.batches import EVERYONE, Batches, BatchView, Caller
from cj_svc.content_client import ContentClient
from cj_svc.judgements import Judgements
from cj_svc.judges.factory import Judges
from cj_svc.leases import LeaseLost, Leases
from cj_svc.models import Batch
from cj_svc.requests import RequestKey
from cj_svc.settings import CJSettings
from cj_svc.vocabulary import BatchState
from cj_svc.workflow.finalize import finalize
from cj_svc.workflow.judging import Judging
from cj_svc.workflow.run import BatchRun, RunContext
from cj_svc.workflow.store import RunStore
from mesh_common import correlation

log = logging.getLogger("cj_svc.workflow")

# How long CancelBatch waits for the batch's task to settle (its PENDING rows marked, its lease let go).
CANCEL_WAIT_SECONDS = 3.0
# How long a stopping service lets its batches reach a safe point before cutting them off.
STOP_GRACE_SECONDS = 2.0


class Workflow:
    def __init__(
        self,
        settings: CJSettings,
        sessions: async_sessionmaker[AsyncSession],
        content: ContentClient,
        batches: Batches,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.batches = batches
        self.judging = Judging(settings, Judgements(sessions))
        # Replicas sharing a database must have distinct ids; a restarted process with the same id
        # takes its own leases back at once.
        self.replica_id = settings.replica_id or socket.gethostname()
        self.store = RunStore(sessions, self.replica_id)
        self.context = RunContext(settings, self.store, self.judging, content, self._changed)
        self.leases = Leases(sessions, self.replica_id, settings.lease_seconds)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Set to ask a batch's run to stop at its next safe point (cancelled, lease lost, shutdown):
        # a run is never cut off in the middle of its work.
        self._stops: dict[str, asyncio.Event] = {}
        self._changes: dict[str, asyncio.Event] = {}
        self._claimer: asyncio.Task[None] | None = None
        self.closing = False

    @property
    def judges(self) -> Judges:
        return self.judging.judges

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every unfinished batch that no other replica holds; from then on, look for batches
        whose lease expired (their replica died) a few times per lease period."""
        for batch_id in await self.leases.claim_free(limit=10_000):
            log.info("resuming batch %s", batch_id)
            self.launch(batch_id)
        self._claimer = asyncio.create_task(self._claim_expired(), name="claim-expired-batches")

    async def _claim_expired(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                claimed = await self.leases.claim_free()
            except (SQLAlchemyError, OSError) as error:
                log.warning("could not look for batches to take over: %s", error)
                continue
            for batch_id in claimed:
                if self.launch(batch_id):
                    log.info("taking over batch %s", batch_id)

    def launch(self, batch_id: str) -> bool:
        """Start working a batch unless this process already does; True when started."""
        if self.closing or (batch_id in self.tasks and not self.tasks[batch_id].done()):
            return False  # while stopping, a new batch waits for the next start (it stays PENDING)
        self._stops[batch_id] = asyncio.Event()
        self.tasks[batch_id] = asyncio.create_task(self._run(batch_id), name=f"batch-{batch_id}")
        return True

    def _ask_to_stop(self, batch_id: str) -> None:
        stop = self._stops.get(batch_id)
        if stop is not None:
            stop.set()

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Ask every batch to stop where it stands (answers already received are written, the
        judge calls in flight are dropped and asked again on resume); cut off what is still
        running after `grace`: its writes end first (see database.write)."""
        self.closing = True
        for change in self._changes.values():  # watchers wake up and end their streams
            change.set()
        if self._claimer is not None:
            self._claimer.cancel()
        for batch_id in self.tasks:
            self._ask_to_stop(batch_id)
        running = [task for task in self.tasks.values() if not task.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        await self.judging.close()

    async def cancel(
        self, batch_id: str, reason: str, caller: Caller = EVERYONE, request: RequestKey | None = None
    ) -> BatchView:
        """Cancel the batch (one short transaction) and ask its run to stop; wait a little for it
        to settle, without ever cutting it off (a cancelled RPC leaves the run to finish)."""
        view = await self.batches.cancel(batch_id, reason, caller, request)
        self._ask_to_stop(batch_id)
        task = self.tasks.get(batch_id)
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=CANCEL_WAIT_SECONDS)
        return view

    async def wait_for_change(self, batch_id: str, timeout: float) -> None:
        """Return when this process has changed the batch (progress or state), or after `timeout`
        (changes made by another replica are seen by looking again)."""
        change = self._changes.setdefault(batch_id, asyncio.Event())
        try:
            await asyncio.wait_for(change.wait(), timeout)
        except TimeoutError:
            pass

    def _changed(self, batch_id: str) -> None:
        change = self._changes.pop(batch_id, None)
        if change is not None:
            change.set()

    # -- one batch ---------------------------------------------------------------------------

    async def _run(self, batch_id: str) -> None:
        if not await self.leases.claim(batch_id):
            return  # another replica works it
        renewing = asyncio.create_task(self._renew(batch_id))
        try:
            async with self.sessions() as session:
                batch = await session.get(Batch, batch_id)
            if batch is not None:
                correlation.current.set(batch.correlation_id)
            await self._work_through_outages(batch_id)
            provider, jobs = await self.store.settle_cancelled(batch_id)
            if jobs:
                await self.judging.cancel_jobs(provider, jobs)
        except asyncio.CancelledError:
            await self.store.settle_cancelled(batch_id)
            raise
        except LeaseLost as lost:
            log.warning("stopped working on batch %s: %s", batch_id, lost)
        except Exception as error:  # noqa: BLE001 - a batch that cannot go on fails with a reason
            log.exception("batch %s failed", batch_id)
            await self.store.fail(batch_id, f"{type(error).__name__}: {error}")
        finally:
            renewing.cancel()
            self._changed(batch_id)
            try:
                await self.leases.release(batch_id)
            except (SQLAlchemyError, OSError):
                pass  # the lease expires on its own

    async def _work_through_outages(self, batch_id: str) -> None:
        """Work the batch; when the database goes away, wait and resume (answers not yet written are
        asked again), instead of failing a batch that did nothing wrong."""
        delay = 0.5
        while True:
            try:
                await self._work(batch_id)
                return
            except (OperationalError, InterfaceError, OSError) as error:
                log.warning("batch %s: database unavailable (%s); resuming in %.1f s", batch_id, error, delay)
            except DBAPIError as error:
                if not error.connection_invalidated:
                    raise
                log.warning("batch %s: database connection lost; resuming in %.1f s", batch_id, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _work(self, batch_id: str) -> None:
        await self.store.move(batch_id, BatchState.RUNNING)
        batch, essays = await self.store.load(batch_id)
        if batch.state == BatchState.FINALIZING:
            await finalize(self.store, batch_id)
        elif batch.state == BatchState.RUNNING:
            await BatchRun(self.context, batch, essays, self._stops.setdefault(batch_id, asyncio.Event())).work()

    async def _renew(self, batch_id: str) -> None:
        """Keep the lease while the batch is worked; stop the work when another replica has it."""
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 3)
            try:
                await self.leases.renew(batch_id)
            except LeaseLost as lost:
                log.warning("%s; stopping here", lost)
                self._ask_to_stop(batch_id)
                return
            except (SQLAlchemyError, OSError) as error:
                log.warning("could not renew the lease of batch %s: %s", batch_id, error)
