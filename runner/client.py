"""Talking to the mesh: the generated stubs only (never the services' own code)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from huleedu.cj.v1 import admin_pb2, admin_pb2_grpc, assessment_pb2, assessment_pb2_grpc
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2, content_pb2_grpc

from mesh_common.correlation import PropagatingClientInterceptor
from mesh_common.ids import STORAGE_ID_PATTERN
from mesh_common.tls import TlsFiles, open_channel
from runner.inventory import Item

CHUNK_BYTES = 256 * 1024
UPLOAD_ATTEMPTS = 5  # about 3 s of retries while the Content Service does not answer
UPLOAD_TIMEOUT_SECONDS = 120.0  # a Content Service that hangs is given up on, like one that is gone
CONTENT_TYPES = {
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".docx": "text/plain; charset=utf-8",
}


CONTENT_SERVICE = content_pb2.DESCRIPTOR.services_by_name["ContentService"].full_name
ASSESSMENT_SERVICE = assessment_pb2.DESCRIPTOR.services_by_name["AssessmentService"].full_name


async def _serves(health: health_pb2_grpc.HealthStub, service: str) -> bool:
    try:
        await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    except grpc.aio.AioRpcError:
        return False
    return True


class RunnerError(Exception):
    """A failure with one clear message (what, why, how to fix) and the exit code it means."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ServiceGone(RunnerError):
    """A service stopped answering: the whole command stops at once, with one message."""


def describe_rpc_error(error: grpc.aio.AioRpcError, what: str) -> str:
    return f"{what} failed: {error.code().name}: {error.details()}"


@dataclass
class Mesh:
    content_address: str
    cj_address: str
    token: str = ""
    tls: TlsFiles = field(default_factory=TlsFiles)

    def __post_init__(self) -> None:
        # The token (and a correlation id) go with every call, so that no call site can forget them.
        interceptors = [PropagatingClientInterceptor(self.token)]
        self.content_channel = open_channel(self.content_address, self.tls, interceptors=interceptors)
        self.cj_channel = open_channel(self.cj_address, self.tls, interceptors=interceptors)
        self.content = content_pb2_grpc.ContentServiceStub(self.content_channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.cj_channel)
        self.assessment = assessment_pb2_grpc.AssessmentServiceStub(self.cj_channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The token, for every call to pass as well: the interceptor's metadata does not reach the
        streaming calls (Upload, WatchBatch went UNAUTHENTICATED with tokens on when left to it)."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    async def close(self) -> None:
        await self.content_channel.close()
        await self.cj_channel.close()

    async def healthy(self) -> list[str]:
        """Problems with either service; empty when both serve. Each address is asked for the
        service it should have, so swapped or wrong addresses are named as such."""
        expected = (
            ("content-svc", self.content_channel, self.content_address, CONTENT_SERVICE, "--content-address"),
            ("cj-svc", self.cj_channel, self.cj_address, ASSESSMENT_SERVICE, "--cj-address"),
        )
        problems = []
        for name, channel, address, service, option in expected:
            health = health_pb2_grpc.HealthStub(channel)
            try:
                status = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    problems.append(f"{name} at {address} does not answer ({error.code().name}); start it (make serve)")
                    continue
                other_name, other_service = next((n, s) for n, _, _, s, _ in expected if s != service)
                swapped = await _serves(health, other_service)
                hint = f" but {other_name}: swap --content-address and --cj-address" if swapped else ""
                problems.append(f"{address}, given as {option}, is not {name}{hint}")
                continue
            if status.status != health_pb2.HealthCheckResponse.SERVING:
                why = (
                    "its database or storage cannot be written"
                    if name == "content-svc"
                    else "its database cannot be written, or it cannot reach its Content Service (check cj-svc's "
                    f"--content-address; this runner uses {self.content_address})"
                )
                problems.append(f"{name} at {address} is not serving: {why}")
        return problems

    async def preflight(self, assignment_id: str, expected_scale: str) -> admin_pb2.Assignment | None:
        """Everything checked before any side effect; RunnerError(exit 3) saying how to fix it."""
        problems = await self.healthy()
        if problems:
            raise RunnerError("preflight: " + "; ".join(problems), 3)
        if not assignment_id:
            return None
        try:
            assignment = (
                await self.admin.GetAssignment(
                    admin_pb2.GetAssignmentRequest(assignment_id=assignment_id), metadata=self.metadata
                )
            ).assignment
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise RunnerError(
                    f"preflight: assignment {assignment_id!r} does not exist; create it with "
                    f"`cj-runner admin create-assignment --assignment-id {assignment_id} --grade-scale <scale>`",
                    3,
                ) from None
            raise RunnerError(describe_rpc_error(error, "preflight: GetAssignment"), 3) from None
        if expected_scale and assignment.grade_scale != expected_scale:
            raise RunnerError(
                f"preflight: assignment {assignment_id!r} uses grade scale {assignment.grade_scale}, "
                f"not the expected {expected_scale}; pick the right assignment or drop --expected-grade-scale",
                3,
            )
        anchors = (
            await self.admin.ListAnchors(
                admin_pb2.ListAnchorsRequest(assignment_id=assignment_id), metadata=self.metadata
            )
        ).anchors
        if len({a.grade for a in anchors}) < 2:
            raise RunnerError(
                f"preflight: assignment {assignment_id!r} has {len(anchors)} anchor(s) of "
                f"{len({a.grade for a in anchors})} grade(s); grades need anchors of at least two grades. Register "
                f"them with `cj-runner admin register-anchors DIR --assignment-id {assignment_id}`",
                3,
            )
        return assignment


def _cache_path(cache_dir: Path, address: str) -> Path:
    return cache_dir / f"uploads-{re.sub(r'[^A-Za-z0-9]+', '_', address)}.json"


async def storage_ids_for(
    mesh: Mesh,
    items: list[tuple[Item, int]],
    cache_dir: Path,
    concurrency: int = 8,
    progress: Callable[[Item], None] | None = None,
) -> tuple[dict[str, str], int, dict[str, str]]:
    """sha256 -> storage id for every item, from the service's answers only.

    The cache (per Content Service address) is checked with Stat before reuse; what the service
    already holds is found with FindByChecksum; the rest is streamed up. Returns (map, uploaded
    count, failures by file).
    """
    path = _cache_path(cache_dir, mesh.content_address)
    cache: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = {item.sha256: (item, kind) for item, kind in items}
    known = {sha: cache[sha] for sha in wanted if sha in cache}
    if known:
        stat = await mesh.content.Stat(
            content_pb2.StatRequest(storage_ids=list(set(known.values())), verify=True), metadata=mesh.metadata
        )
        intact = {meta.storage_id for meta in stat.found}
        # Stale entries are dropped: gone from the service, or damaged there (the upload repairs them).
        known = {sha: sid for sha, sid in known.items() if sid in intact}
    rest = [sha for sha in wanted if sha not in known]
    if rest:
        found = await mesh.content.FindByChecksum(
            content_pb2.FindByChecksumRequest(sha256s=rest), metadata=mesh.metadata
        )
        known.update({m.sha256: m.storage_id for m in found.matches})
    limit = asyncio.Semaphore(concurrency)
    failures: dict[str, str] = {}
    uploads = [wanted[sha] for sha in wanted if sha not in known]

    async def one(item: Item, kind: int) -> None:
        async with limit:
            try:
                response = await upload(mesh, item, kind)
                known[item.sha256] = response.storage_id
            except ServiceGone:
                raise
            except RunnerError as error:
                failures[str(item.path)] = str(error)
            if progress:
                progress(item)

    # One failed file is reported with the others at the end; a service that is gone stops them all now.
    tasks = [asyncio.ensure_future(one(item, kind)) for item, kind in uploads]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for sha, storage_id in known.items():
        if not STORAGE_ID_PATTERN.match(storage_id):
            raise RunnerError(f"the Content Service returned {storage_id!r} for {sha}, which is no storage id")
    cache_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a small local cache file
    path.write_text(json.dumps({**cache, **known}, indent=1))
    return known, len(uploads) - len(failures), failures


# What writing to a client stream raises once the server has ended the call (early refusals).
STREAM_ENDED = (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError)


async def write_all(call, messages: Iterable) -> None:  # type: ignore[no-untyped-def]
    """Write a client stream and half-close it, stopping as soon as the server has ended the call.

    The call's own status (await it) then says what happened: a grpc.aio client whose write fails
    after the server refused would otherwise see a client-side error instead (grpc/grpc#36066).
    """
    try:
        for message in messages:
            if call.done():
                return
            await call.write(message)
        await call.done_writing()
    except STREAM_ENDED:
        pass


def upload_messages(item: Item, kind: int) -> Iterator[content_pb2.UploadRequest]:
    data = item.content
    yield content_pb2.UploadRequest(
        header=content_pb2.UploadHeader(
            kind=kind, content_type=CONTENT_TYPES.get(item.path.suffix.lower(), "text/plain; charset=utf-8"),
            filename=item.path.name[:255], declared_size=len(data), sha256=item.sha256,
        )
    )  # fmt: skip
    for start in range(0, len(data), CHUNK_BYTES):
        yield content_pb2.UploadRequest(chunk=data[start : start + CHUNK_BYTES])


async def upload(mesh: Mesh, item: Item, kind: int) -> content_pb2.UploadResponse:
    """Stream one file up, retrying with backoff while the Content Service is unavailable."""
    for attempt in range(UPLOAD_ATTEMPTS):
        call = mesh.content.Upload(metadata=mesh.metadata, timeout=UPLOAD_TIMEOUT_SECONDS)
        await write_all(call, upload_messages(item, kind))
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise RunnerError(describe_rpc_error(error, f"upload of {item.path.name}")) from None
            if attempt == UPLOAD_ATTEMPTS - 1:
                raise ServiceGone(
                    f"the Content Service at {mesh.content_address} stopped answering during the upload "
                    f"({error.code().name}: {error.details()}); check that content-svc is running, then run the "
                    "same command again (files already stored are not sent again)",
                    3,
                ) from None
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


KIND = {
    "student": common_pb2.CONTENT_KIND_ESSAY_TEXT,
    "prompt": common_pb2.CONTENT_KIND_STUDENT_PROMPT,
    "anchor": common_pb2.CONTENT_KIND_ANCHOR_ESSAY,
    "rubric": common_pb2.CONTENT_KIND_JUDGE_RUBRIC,
}
