"""The content store: deduplicating, durable, self-checking storage of texts. No grpc here.

The promises (those of content-addressed stores such as git and restic):
- a blob is durable before its row is committed, and the row is what makes it visible; once the
  commit is under way it runs to its end whatever happens to the caller, so no cancellation leaves
  a row without its blob;
- every read checks the bytes against their sha256: damaged or lost content is DataLoss (and its
  row is marked so), never other bytes; an upload of the right bytes repairs it under the same id;
- a failed, refused or cancelled upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from content_svc.blobs import BlobStore, Damaged, Expected, Writer
from content_svc.group_commit import GroupCommit
from content_svc.models import ContentGrant, ContentObject, HealthProbe
from mesh_common.ids import new_id
from mesh_server import database, errors
from mesh_server.tasks import run_to_end

log = logging.getLogger("content_svc.store")

MiB = 1024 * 1024
# SQLite accepts 32,766 bound parameters; stay well below it for IN (...) lists.
_IN_LIST_CHUNK = 5000
# Content deduplicated against a stored blob of at most this size has that blob hashed first, so
# that an upload of the right bytes repairs a damaged blob; larger blobs are checked by size.
VERIFY_ON_DEDUP_BYTES = 4 * MiB
# Uploads that declare at most this size are received whole and group-committed (see `_put_small`).
GROUP_COMMIT_BYTES = 256 * 1024
# Every kind but this one is text: UTF-8 without NUL characters, at most `max_text_bytes`.
BINARY_KIND = "CONTENT_KIND_SOURCE_DOCUMENT"

INTACT, DAMAGED, MISSING = "INTACT", "DAMAGED", "MISSING"

INTEGRITY_FAILURES = Counter(
    "huleedu_content_integrity_failures_total",
    "Stored objects found damaged or missing by a read or a check (each finding counted once).",
    ["state"],
)
# Where a streamed upload's time goes, so that an operator can tell a slow client or network
# (receive) from a slow disk (finish, blob) or database (lookup, row).
UPLOAD_STAGE_SECONDS = Histogram(
    "huleedu_content_upload_stage_seconds",
    "Time a streamed upload spends in each stage: lookup (of a declared sha256, before the stream), "
    "receive (until the last chunk, each hashed and written as the next arrives), finish (until every "
    "byte is hashed and written), blob (durable under its name) and row (its row committed).",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@dataclass(frozen=True)
class Description:
    """What an uploader says about content before sending it."""

    kind: str
    content_type: str
    filename: str = ""
    declared_size: int | None = None
    sha256: str = ""

    @property
    def is_text(self) -> bool:
        return self.kind != BINARY_KIND


@dataclass(frozen=True)
class Reader:
    """A caller who sees only its own content (tokens on): what it, or its organisation, uploaded.
    Where a method takes `Reader | None`, None sees everything (an open mesh, admins, services)."""

    user_id: str
    org_id: str = ""


@dataclass(frozen=True)
class Stored:
    storage_id: str
    sha256: str
    size: int
    content_type: str
    filename: str
    kind: str
    created_at: datetime
    state: str = INTACT
    deduplicated: bool = False
    repaired: bool = False

    @property
    def expected(self) -> Expected:
        return Expected(self.storage_id, self.size, self.sha256)


def _stored(row: ContentObject, **outcome: bool) -> Stored:
    return Stored(
        storage_id=row.storage_id,
        sha256=row.sha256,
        size=row.size,
        content_type=row.content_type,
        filename=row.filename,
        kind=row.kind,
        created_at=row.created_at,
        state=row.state or INTACT,
        **outcome,
    )


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _IN_LIST_CHUNK):
        yield values[start : start + _IN_LIST_CHUNK]


def data_loss(damaged: Sequence[Damaged]) -> errors.DataLoss:
    """The one message for content that cannot be read as it was stored."""
    first = damaged[0]
    more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
    return errors.DataLoss(
        f"content {first.storage_id} is {first.state.lower()}: {first.reason}{more}; upload the same file "
        "again to repair it (it keeps its storage id)",
        field="storage_id",
        metadata={"storage_ids": ",".join(d.storage_id for d in damaged[:50])},
    )


@dataclass(frozen=True)
class _Checked:
    """Content checked against its description, ready to be stored."""

    description: Description
    content: bytes
    digest: str
    correlation_id: str


class TextRules:
    """Text kinds must be UTF-8 without NUL characters; checked chunk by chunk as content arrives."""

    def __init__(self, filename: str, field: str) -> None:
        self.filename = filename or "the content"
        self.field = field
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.offset = 0

    def _refuse(self, why: str) -> errors.InvalidArgument:
        return errors.InvalidArgument(
            f"{self.filename}: {why}; text kinds must be UTF-8 text without NUL characters (convert the "
            "file to UTF-8 text, or upload it as CONTENT_KIND_SOURCE_DOCUMENT)",
            field=self.field,
        )

    def update(self, chunk: bytes) -> None:
        nul = chunk.find(b"\x00")
        if nul >= 0:
            raise self._refuse(f"NUL byte at offset {self.offset + nul}")
        try:
            self.decoder.decode(chunk)
        except UnicodeDecodeError as error:
            raise self._refuse(f"invalid UTF-8 at offset {self.offset + error.start}") from None
        self.offset += len(chunk)

    def end(self) -> None:
        try:
            self.decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise self._refuse("the text ends inside a UTF-8 character") from None

    def check(self, content: bytes) -> None:
        self.update(content)
        self.end()


@dataclass
class CheckReport:
    """What `check` found: rows whose blob is damaged or gone, blobs no row points at."""

    rows: int = 0
    blobs: int = 0
    damaged: list[Damaged] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    recent_orphans: list[str] = field(default_factory=list)  # maybe an upload in flight: left alone
    restored: list[str] = field(default_factory=list)  # marked damaged before, intact now


class ContentStore:
    def __init__(
        self,
        engine: AsyncEngine,
        blobs: BlobStore,
        max_object_bytes: int = 64 * MiB,
        max_text_bytes: int = 1 * MiB,
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.max_object_bytes = max_object_bytes
        self.max_text_bytes = max_text_bytes
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        # Commits under way that the caller may no longer wait for; close() waits for them.
        self._committing: set[asyncio.Task[Any]] = set()
        # Small uploads that finish together are stored together (see group_commit.py).
        self._group: GroupCommit[_Checked, Stored | errors.DomainError] = GroupCommit(self._store_checked, self._track)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._committing.add(task)
        task.add_done_callback(self._committing.discard)

    async def close(self) -> None:
        """Let every commit under way reach its end (call before disposing of the engine)."""
        while self._committing:
            await asyncio.wait(set(self._committing))

    async def _to_the_end(self, work) -> Any:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(work)
        self._track(task)
        return await run_to_end(task)

    # -- writing ---------------------------------------------------------------------------

    def _limit(self, description: Description) -> tuple[int, str]:
        if description.is_text:
            return self.max_text_bytes, "--max-text-bytes, for text kinds"
        return self.max_object_bytes, "--max-object-bytes"

    def _check_size(self, description: Description, size: int, field: str, declared: bool = False) -> None:
        limit, setting = self._limit(description)
        if size > limit:
            what = f"declared size {size} bytes exceeds" if declared else "content exceeds"
            raise errors.InvalidArgument(
                f"{description.filename or 'the content'}: {what} this service's maximum of {limit} bytes "
                f"({setting}); shorten or split it",
                field=field,
            )

    def check_declared_size(self, description: Description, field: str) -> None:
        if description.declared_size is not None:
            self._check_size(description, description.declared_size, field, declared=True)

    async def put_stream(
        self,
        description: Description,
        chunks: AsyncIterator[bytes],
        correlation_id: str = "",
        uploader: Reader | None = None,
    ) -> Stored:
        """Store streamed content; refuse it as soon as it breaks its description or a limit.

        When the declared sha256 is of content already stored intact, the stream is only hashed,
        to check that it is that content, and nothing is written. When that content is damaged,
        the stream repairs it. The uploader may read it from then on."""
        stored = await self._put_stream(description, chunks, correlation_id)
        return (await self._to_the_end(self._grant([stored], uploader)))[0]

    def _check_chunk(self, description: Description, received: int, chunk: bytes) -> None:
        """Refuse a stream as soon as it passes a limit or its declared size."""
        self._check_size(description, received + len(chunk), "chunk")
        if description.declared_size is not None and received + len(chunk) > description.declared_size:
            raise errors.InvalidArgument(
                f"received more than the declared {description.declared_size} bytes", field="header.declared_size"
            )

    async def _put_stream(self, description: Description, chunks: AsyncIterator[bytes], correlation_id: str) -> Stored:
        self.check_declared_size(description, "header.declared_size")
        if description.declared_size is not None and description.declared_size <= GROUP_COMMIT_BYTES:
            return await self._put_small(description, chunks, correlation_id)
        with UPLOAD_STAGE_SECONDS.labels("lookup").time():
            known = await self._find_sha(description.sha256) if description.sha256 else None
        if known is not None and await self._blob_state(known) != INTACT:
            target = known.storage_id  # write the bytes again, under their old id
        else:
            target = None if known is not None else new_id()
        inspector = TextRules(description.filename, "chunk") if description.is_text else None
        writer = self.blobs.writer(target, inspector, description.declared_size)
        try:
            with UPLOAD_STAGE_SECONDS.labels("receive").time():
                async for chunk in chunks:
                    self._check_chunk(description, writer.size, chunk)
                    await writer.write(chunk)
            with UPLOAD_STAGE_SECONDS.labels("finish").time():
                digest = await writer.finish()
            self._verify(description, writer.size, digest, "header")
            # A declared sha256 was looked up before the stream; a twin committed since then
            # is found by the insert (its unique sha256), so only an undeclared one is looked up.
            existing = known if description.sha256 else await self._find_sha(digest)
            # Stored already: a twin that is intact makes this a duplicate; a damaged one is repaired.
            if existing is not None and target != existing.storage_id:
                if target is None or await self._blob_state(existing) == INTACT:
                    await writer.discard()
                    return replace(existing, deduplicated=True)
        except BaseException:
            await writer.discard()
            raise
        if existing is not None:
            return await self._to_the_end(self._restore(writer, existing))
        return await self._to_the_end(self._commit_new(writer, target, digest, description, correlation_id))

    async def _put_small(self, description: Description, chunks: AsyncIterator[bytes], correlation_id: str) -> Stored:
        """A small upload (declared, at most GROUP_COMMIT_BYTES): received whole, checked, then
        stored with the small uploads that finish at the same time, as BatchUpload stores its items."""
        content = bytearray()
        inspector = TextRules(description.filename, "chunk") if description.is_text else None
        async for chunk in chunks:
            self._check_chunk(description, len(content), chunk)
            if inspector is not None:
                inspector.update(chunk)
            content += chunk
        if inspector is not None:
            inspector.end()
        data = bytes(content)
        digest = hashlib.sha256(data).hexdigest()
        self._verify(description, len(data), digest, "header")
        outcome = await self._group.put(_Checked(description, data, digest, correlation_id))
        if isinstance(outcome, errors.DomainError):
            raise outcome
        return outcome

    async def _restore(self, writer: Writer, existing: Stored) -> Stored:
        """Put the right bytes back under a damaged object's storage id."""
        try:
            await writer.commit(existing.storage_id)
        except BaseException:
            await writer.discard()
            raise
        await self._set_state([existing.storage_id], INTACT)
        log.warning("content %s repaired by an upload of its bytes", existing.storage_id)
        return replace(existing, state=INTACT, repaired=True)

    async def _commit_new(
        self, writer: Writer, storage_id: str, digest: str, description: Description, correlation_id: str
    ) -> Stored:
        """Make the blob durable, then commit its row; on a concurrent twin keep the twin."""
        try:
            with UPLOAD_STAGE_SECONDS.labels("blob").time():
                await writer.commit()
        except BaseException:
            await writer.discard()
            raise
        row = self._row(storage_id, digest, writer.size, description, correlation_id)
        with UPLOAD_STAGE_SECONDS.labels("row").time():
            return (await self._insert([row]))[0]

    async def put_many(
        self, items: Sequence[tuple[Description, bytes]], correlation_id: str = "", uploader: Reader | None = None
    ) -> list[Stored | errors.DomainError]:
        """Store many small texts; each gets its result or its own error. The uploader may read
        what was stored from then on."""
        results = await self._put_many(items, correlation_id)
        stored = [r for r in results if isinstance(r, Stored)]
        granted = iter(await self._to_the_end(self._grant(stored, uploader)))
        return [next(granted) if isinstance(r, Stored) else r for r in results]

    async def _put_many(
        self, items: Sequence[tuple[Description, bytes]], correlation_id: str
    ) -> list[Stored | errors.DomainError]:
        results: list[Stored | errors.DomainError | None] = [None] * len(items)
        checked: list[_Checked] = []
        positions: list[int] = []
        for index, (description, content) in enumerate(items):
            digest = hashlib.sha256(content).hexdigest()
            try:
                self._check_size(description, len(content), f"items[{index}].content")
                self._verify(description, len(content), digest, f"items[{index}]")
                if description.is_text:
                    TextRules(description.filename, f"items[{index}].content").check(content)
            except errors.DomainError as error:
                results[index] = error
                continue
            checked.append(_Checked(description, content, digest, correlation_id))
            positions.append(index)
        for index, outcome in zip(positions, await self._store_checked(checked), strict=True):
            results[index] = outcome
        return [r for r in results if r is not None]

    async def _store_checked(self, entries: list[_Checked]) -> list[Stored | errors.DomainError]:
        """Store checked content: what is stored intact already is a duplicate; the rest is written
        in one go (`write_small`: one durable flush) and its rows committed in one transaction.
        Identical content among the entries is stored once."""
        if not entries:
            return []
        existing = {row.sha256: row for row in await self._rows_by_sha(list({e.digest for e in entries}))}
        states = await self._blob_states(list(existing.values()))
        results: list[Stored | errors.DomainError | None] = [None] * len(entries)
        fresh: dict[str, list[int]] = {}
        for index, entry in enumerate(entries):
            if entry.digest in existing and states[existing[entry.digest].storage_id] == INTACT:
                results[index] = _stored(existing[entry.digest], deduplicated=True)
            else:
                fresh.setdefault(entry.digest, []).append(index)
        if fresh:
            firsts = {digest: entries[indexes[0]] for digest, indexes in fresh.items()}
            outcomes = await self._to_the_end(self._store_many(firsts, existing))
            for digest, indexes in fresh.items():
                outcome = outcomes[digest]
                results[indexes[0]] = outcome
                for index in indexes[1:]:
                    results[index] = (
                        outcome
                        if isinstance(outcome, errors.DomainError)
                        else replace(outcome, deduplicated=True, repaired=False)
                    )
        return [r for r in results if r is not None]

    async def _store_many(
        self, fresh: dict[str, _Checked], existing: dict[str, Stored]
    ) -> dict[str, Stored | errors.DomainError]:
        """Write the blobs of `fresh` (new ones under new ids, damaged ones under their old ids),
        then commit the new rows and mark the repaired ones intact."""
        storage_ids = {d: existing[d].storage_id if d in existing else new_id() for d in fresh}
        try:
            await self.blobs.write_small({storage_ids[d]: entry.content for d, entry in fresh.items()})
        except OSError as error:
            await asyncio.gather(*(self.blobs.remove(storage_ids[d]) for d in fresh if d not in existing))
            failure = (
                errors.storage_full()
                if error.errno == errno.ENOSPC
                else errors.Unavailable(f"could not write the blobs: {error.strerror}; retry later")
            )
            return dict.fromkeys(fresh, failure)
        outcomes: dict[str, Stored | errors.DomainError] = {}
        repaired = [d for d in fresh if d in existing]
        if repaired:
            await self._set_state([storage_ids[d] for d in repaired], INTACT)
            outcomes.update({d: replace(existing[d], state=INTACT, repaired=True) for d in repaired})
        rows = [
            self._row(storage_ids[d], d, len(entry.content), entry.description, entry.correlation_id)
            for d, entry in fresh.items()
            if d not in existing
        ]
        outcomes.update({stored.sha256: stored for stored in await self._insert(rows)})
        return outcomes

    def _verify(self, description: Description, size: int, digest: str, where: str) -> None:
        if description.declared_size is not None and size != description.declared_size:
            raise errors.InvalidArgument(
                f"received {size} bytes but {description.declared_size} were declared; "
                "send the size of the exact bytes you upload",
                field=f"{where}.declared_size",
            )
        if description.sha256 and digest != description.sha256:
            raise errors.InvalidArgument(
                f"the content's sha256 is {digest}, not the declared {description.sha256}; "
                "the bytes changed in transit or the checksum is of other bytes",
                field=f"{where}.sha256",
            )

    @staticmethod
    def _row(storage_id: str, digest: str, size: int, description: Description, correlation_id: str) -> ContentObject:
        return ContentObject(
            storage_id=storage_id,
            sha256=digest,
            size=size,
            content_type=description.content_type,
            filename=description.filename,
            kind=description.kind,
            correlation_id=correlation_id,
            created_at=datetime.now(UTC),
            state=INTACT,
        )

    async def _insert(self, rows: list[ContentObject]) -> list[Stored]:
        """Commit the rows of durable blobs (run to its end: see `_to_the_end`). A row whose sha256
        a concurrent upload stored first gives way to that twin, and its blob is removed. When the
        commit fails, a blob is removed only once it is known that no row points at it."""
        if not rows:
            return []
        try:
            async with self.sessions.begin() as session:
                session.add_all(rows)
            return [_stored(row) for row in rows]
        except IntegrityError:
            if len(rows) > 1:
                return [stored for row in rows for stored in await self._insert([row])]
            row = rows[0]
            await self.blobs.remove(row.storage_id)
            twin = await self._find_sha(row.sha256)
            if twin is None:
                raise
            return [replace(twin, deduplicated=True)]
        except Exception:
            # Did the commit reach the database before it failed? When that cannot be told either,
            # the blobs stay: an orphan blob is harmless and `check` finds it; a lost blob is not.
            with contextlib.suppress(Exception):
                present = {s.storage_id for s in await self.stat_rows([r.storage_id for r in rows])}
                for row in rows:
                    if row.storage_id not in present:
                        await self.blobs.remove(row.storage_id)
            raise

    # -- who may read -------------------------------------------------------------------------

    async def _visible(self, storage_ids: Iterable[str], reader: Reader | None) -> set[str]:
        """The ids among these that the reader may read."""
        wanted = list(dict.fromkeys(storage_ids))
        if reader is None:
            return set(wanted)
        owned = (ContentGrant.user_id == reader.user_id) | (
            (ContentGrant.org_id == reader.org_id) & (ContentGrant.org_id != "")
        )
        visible: set[str] = set()
        async with self.sessions() as session:
            for part in _chunks(wanted):
                query = select(ContentGrant.storage_id).where(ContentGrant.storage_id.in_(part), owned)
                visible.update((await session.execute(query)).scalars())
        return visible

    async def _only_visible(self, rows: list[Stored], reader: Reader | None) -> list[Stored]:
        if reader is None:
            return rows
        visible = await self._visible((row.storage_id for row in rows), reader)
        return [row for row in rows if row.storage_id in visible]

    async def _grant(self, stored: Sequence[Stored], uploader: Reader | None) -> list[Stored]:
        """Let the uploader read what it uploaded. To it, content that others stored is new: it
        learns neither that the bytes were stored before nor that they were damaged."""
        if uploader is None or not stored:
            return list(stored)
        had = await self._visible((s.storage_id for s in stored), uploader)
        new = list(dict.fromkeys(s.storage_id for s in stored if s.storage_id not in had))
        if new:
            now = datetime.now(UTC)
            rows = [{"storage_id": i, "user_id": uploader.user_id, "org_id": uploader.org_id, "created_at": now}
                    for i in new]  # fmt: skip
            async with self.sessions.begin() as session:
                await database.insert_new(session, ContentGrant, rows)
        return [s if s.storage_id in had else replace(s, deduplicated=False, repaired=False) for s in stored]

    # -- state -----------------------------------------------------------------------------

    async def _set_state(self, storage_ids: Sequence[str], state: str) -> None:
        async with self.sessions.begin() as session:
            for part in _chunks(list(storage_ids)):
                await session.execute(
                    update(ContentObject).where(ContentObject.storage_id.in_(part)).values(state=state)
                )

    async def _record_damage(self, damaged: Sequence[Damaged], known: Mapping[str, str]) -> None:
        """Mark, count and log what was found damaged or missing; `known` holds the states the rows
        had, so that each finding is counted and logged once, not at every read that meets it."""
        fresh = [d for d in damaged if known.get(d.storage_id) != d.state]
        for state in {d.state for d in fresh}:
            ids = [d.storage_id for d in fresh if d.state == state]
            INTEGRITY_FAILURES.labels(state).inc(len(ids))
            log.error("content %s: %s", state.lower(), "; ".join(str(d) for d in fresh if d.state == state))
            await self._set_state(ids, state)

    async def _blob_state(self, stored: Stored) -> str:
        return (await self._blob_states([stored]))[stored.storage_id]

    async def _blob_states(self, stored: Sequence[Stored], verify: bool | None = None) -> dict[str, str]:
        """storage id -> INTACT, DAMAGED or MISSING, as the blobs are now (see `_inspect`)."""
        problems = await self._inspect(stored, verify)
        return {storage_id: INTACT if p is None else p.state for storage_id, p in problems.items()}

    async def _inspect(self, stored: Sequence[Stored], verify: bool | None = None) -> dict[str, Damaged | None]:
        """storage id -> what is wrong with its blob (None: intact); rows whose state changed are
        updated. `verify` None: hash blobs up to VERIFY_ON_DEDUP_BYTES, check the size of the rest.
        A row marked damaged stays so until its blob is hashed intact again."""

        if not stored:
            return {}
        problems: dict[str, Damaged | None] = {}
        for meta in stored:
            hashing = verify if verify is not None else meta.size <= VERIFY_ON_DEDUP_BYTES
            try:
                await (self.blobs.verify if hashing else self.blobs.check_size)(meta.expected)
                problems[meta.storage_id] = (
                    None
                    if hashing or meta.state == INTACT
                    else Damaged(meta.storage_id, meta.state, "an earlier read found its bytes changed")
                )
            except Damaged as problem:
                problems[meta.storage_id] = problem
        before = {s.storage_id: s.state for s in stored}
        await self._record_damage([p for p in problems.values() if p is not None], before)
        restored = [i for i, p in problems.items() if p is None and before[i] != INTACT]
        if restored:
            await self._set_state(restored, INTACT)
        return problems

    # -- reading ---------------------------------------------------------------------------

    async def _find_sha(self, digest: str) -> Stored | None:
        async with self.sessions() as session:
            row = (
                await session.execute(select(ContentObject).where(ContentObject.sha256 == digest))
            ).scalar_one_or_none()
        return None if row is None else _stored(row)

    async def _rows_by_sha(self, digests: Sequence[str]) -> list[Stored]:
        rows: list[Stored] = []
        async with self.sessions() as session:
            for part in _chunks(digests):
                query = select(ContentObject).where(ContentObject.sha256.in_(part))
                rows += [_stored(row) for row in (await session.execute(query)).scalars()]
        return rows

    async def stat_rows(self, storage_ids: Sequence[str]) -> list[Stored]:
        """The rows of the stored ids, in request order, each once (the blobs are not looked at)."""
        found: dict[str, Stored] = {}
        ordered = list(dict.fromkeys(storage_ids))
        async with self.sessions() as session:
            for part in _chunks(ordered):
                query = select(ContentObject).where(ContentObject.storage_id.in_(part))
                found.update((row.storage_id, _stored(row)) for row in (await session.execute(query)).scalars())
        return [found[i] for i in ordered if i in found]

    async def stat(
        self, storage_ids: Sequence[str], verify: bool = False, reader: Reader | None = None
    ) -> tuple[list[Stored], list[str], list[Stored]]:
        """(intact, never stored, damaged or missing) for the ids, in request order. Each blob is
        looked at: its size, and with `verify` its sha256. What the reader may not read is, to it,
        never stored."""
        rows = await self._only_visible(await self.stat_rows(storage_ids), reader)
        states = await self._blob_states(rows, verify=verify)
        held = {row.storage_id for row in rows}
        intact = [replace(r, state=INTACT) for r in rows if states[r.storage_id] == INTACT]
        damaged = [replace(r, state=states[r.storage_id]) for r in rows if states[r.storage_id] != INTACT]
        return intact, [i for i in dict.fromkeys(storage_ids) if i not in held], damaged

    async def find_by_checksum(
        self, digests: Sequence[str], reader: Reader | None = None
    ) -> tuple[list[Stored], list[str], list[Stored]]:
        """(intact, never stored, damaged or missing) by sha256, in request order. A client uploads
        what is not intact, so blobs up to VERIFY_ON_DEDUP_BYTES are hashed to be sure."""
        ordered = list(dict.fromkeys(digests))
        found = {row.sha256: row for row in await self._only_visible(await self._rows_by_sha(ordered), reader)}
        states = await self._blob_states(list(found.values()))
        rows = [found[d] for d in ordered if d in found]
        return (
            [r for r in rows if states[r.storage_id] == INTACT],
            [d for d in ordered if d not in found],
            [replace(r, state=states[r.storage_id]) for r in rows if states[r.storage_id] != INTACT],
        )

    async def metadata(self, storage_id: str, reader: Reader | None = None) -> Stored:
        rows = await self._only_visible(await self.stat_rows([storage_id]), reader)
        if not rows:
            raise errors.NotFound(
                f"no content with storage id {storage_id}; upload it first (Upload or BatchUpload), "
                "or check that you pass the storage id the service returned, not a file checksum",
                field="storage_id",
            )
        return rows[0]

    async def read(self, storage_id: str, max_bytes: int, reader: Reader | None = None) -> tuple[Stored, bytes]:
        meta = await self.metadata(storage_id, reader)
        if meta.size > max_bytes:
            raise errors.FailedPrecondition(
                f"content {storage_id} is {meta.size} bytes, more than Get returns ({max_bytes}); use Download",
                field="storage_id",
            )
        return (await self._read_verified([meta]))[0]

    async def read_many(
        self, storage_ids: Sequence[str], max_total_bytes: int, reader: Reader | None = None
    ) -> tuple[list[tuple[Stored, bytes]], list[str], list[str]]:
        """Contents in request order up to `max_total_bytes` in all; also the missing ids and the
        stored ids that did not fit (deferred). DataLoss when any chosen content is damaged."""
        rows = await self._only_visible(await self.stat_rows(storage_ids), reader)
        held = {row.storage_id for row in rows}
        chosen, deferred, total = [], [], 0
        for meta in rows:
            if total + meta.size > max_total_bytes:
                deferred.append(meta.storage_id)
            else:
                chosen.append(meta)
                total += meta.size
        missing = [i for i in dict.fromkeys(storage_ids) if i not in held]
        return await self._read_verified(chosen), missing, deferred

    async def _read_verified(self, metas: Sequence[Stored]) -> list[tuple[Stored, bytes]]:
        if not metas:
            return []
        contents: list[bytes] = []
        damaged: list[Damaged] = []
        try:
            for meta in metas:
                try:
                    contents.append(await self.blobs.read_verified(meta.expected))
                except Damaged as problem:
                    damaged.append(problem)
        except OSError as error:
            raise errors.Unavailable(f"stored content cannot be read: {error.strerror}; retry later") from error
        if damaged:
            await self._record_damage(damaged, {m.storage_id: m.state for m in metas})
            raise data_loss(damaged)
        restored = [m.storage_id for m in metas if m.state != INTACT]
        if restored:
            await self._set_state(restored, INTACT)
        return [(replace(m, state=INTACT), c) for m, c in zip(metas, contents, strict=True)]

    async def stream(
        self, storage_id: str, chunk_size: int, reader: Reader | None = None
    ) -> tuple[Stored, AsyncIterator[bytes]]:
        """Metadata and the content in chunks; DataLoss before the first chunk when the blob is gone
        or of another size, after the last when its bytes do not match."""
        meta = await self.metadata(storage_id, reader)
        state = await self._blob_states([meta], verify=False)
        if state[storage_id] != INTACT:
            await self._read_verified([meta])  # raises DataLoss with the reason

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in self.blobs.read_chunks_verified(meta.expected, chunk_size):
                    yield chunk
            except Damaged as problem:
                await self._record_damage([problem], {storage_id: meta.state})
                raise data_loss([problem]) from None
            if meta.state != INTACT:
                await self._set_state([storage_id], INTACT)

        return replace(meta, state=INTACT), chunks()

    # -- checking --------------------------------------------------------------------------

    async def check(
        self, verify: bool = True, repair: bool = False, orphan_grace_seconds: float = 600.0
    ) -> CheckReport:
        """Every row against its blob (hashed with `verify`, else by size) and every blob against the
        rows. Rows' states are always brought up to date (damaged, missing, or intact again); with
        `repair`, blobs no row points at are removed once older than the grace (younger ones may
        belong to an upload that is about to commit its row)."""
        report = CheckReport()
        files = await self.blobs.listing()
        report.blobs = len(files)
        seen: set[str] = set()
        after = ""
        while True:
            async with self.sessions() as session:
                query = (
                    select(ContentObject)
                    .where(ContentObject.storage_id > after)
                    .order_by(ContentObject.storage_id)
                    .limit(1000)
                )
                page = [_stored(row) for row in (await session.execute(query)).scalars()]
            if not page:
                break
            after = page[-1].storage_id
            report.rows += len(page)
            seen.update(row.storage_id for row in page)
            problems = await self._inspect(page, verify=verify)
            for row in page:
                problem = problems[row.storage_id]
                if problem is not None:
                    report.damaged.append(problem)
                elif row.state != INTACT:
                    report.restored.append(row.storage_id)
        for storage_id, mtime in files.items():
            if storage_id in seen:
                continue
            if time.time() - mtime < orphan_grace_seconds:
                report.recent_orphans.append(storage_id)
            else:
                report.orphans.append(storage_id)
        if repair:
            # Checked again just before removal: a row may have been committed since the listing.
            present = {s.storage_id for s in await self.stat_rows(report.orphans)}
            for storage_id in report.orphans:
                if storage_id not in present:
                    await self.blobs.remove(storage_id)
        return report

    # -- health ------------------------------------------------------------------------------

    async def problem(self) -> str | None:
        """None when the store can take writes, else what is wrong: a real write to the blob
        directory and to the database (a row updated and committed), not only a read."""
        unusable = await self.blobs.probe()
        if unusable:
            return unusable
        return await database.probe_write(self.sessions, HealthProbe)
