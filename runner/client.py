"""The runner's one client of the mesh: the only runner module that imports generated code.

`MeshClient` is an async context manager over both services. Its methods take and return the plain
dataclasses below, page through lists, wrap `WatchBatch`, and send the bearer token and a
correlation id with every call. A failed call becomes a `RunnerError` that says what the runner was
doing and carries the exit code it means (2 refused, 3 unreachable).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
import protovalidate
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from huleedu.cj.v1 import admin_pb2, admin_pb2_grpc, assessment_pb2, assessment_pb2_grpc
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2, content_pb2_grpc

from mesh_common.correlation import PropagatingClientInterceptor
from mesh_common.ids import STORAGE_ID_PATTERN
from mesh_common.tls import TlsFiles, open_channel
from mesh_common.tokens import bearer_metadata
from mesh_common.violations import describe, violations_of
from runner.inventory import Item

CHUNK_BYTES = 256 * 1024
UPLOAD_ATTEMPTS = 5  # about 3 s of retries while the Content Service does not answer
WATCH_ATTEMPTS = 6  # watches opened again in a row without an answer (about 12 s) before giving up
UPLOAD_TIMEOUT_SECONDS = 120.0  # a Content Service that hangs is given up on, like one that is gone
# Files up to this size go up together in BatchUpload calls of at most BATCH_FILES files and
# BATCH_BYTES; larger ones are streamed one by one.
SMALL_FILE_BYTES = 256 * 1024
BATCH_FILES = 200
BATCH_BYTES = 8 * 1024 * 1024
CONTENT_TYPES = {
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".docx": "text/plain; charset=utf-8",
}
# The judges a CJ Service can run, by name: the contract's JudgeProvider values, lower case.
PROVIDERS = tuple(
    name.removeprefix("JUDGE_PROVIDER_").lower()
    for name in assessment_pb2.JudgeProvider.keys()
    if name != "JUDGE_PROVIDER_UNSPECIFIED"
)
Kind = Literal["student", "prompt", "anchor", "rubric"]
_KINDS: dict[str, common_pb2.ContentKind.ValueType] = {
    "student": common_pb2.CONTENT_KIND_ESSAY_TEXT,
    "prompt": common_pb2.CONTENT_KIND_STUDENT_PROMPT,
    "anchor": common_pb2.CONTENT_KIND_ANCHOR_ESSAY,
    "rubric": common_pb2.CONTENT_KIND_JUDGE_RUBRIC,
}
BATCH_STATES = tuple(n.removeprefix("BATCH_STATE_").lower() for n in assessment_pb2.BatchState.keys()[1:])
ENDED_STATES = frozenset({"completed", "failed", "cancelled"})
CONTENT_SERVICE = content_pb2.DESCRIPTOR.services_by_name["ContentService"].full_name
ASSESSMENT_SERVICE = assessment_pb2.DESCRIPTOR.services_by_name["AssessmentService"].full_name
# request ids of runs are uuid5 names in this namespace, of the request they identify
RUN_NAMESPACE = uuid.UUID("5d1a0c3e-7c2b-4f0e-9a51-3f6b8e2c9d47")


class RunnerError(Exception):
    """A failure with one clear message (what, why, how to fix) and the exit code it means."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ServiceGone(RunnerError):
    """A service stopped answering: the whole command stops at once, with one message."""


class CallFailed(RunnerError):
    """A service answered a call with an error; `status` is its status code's name (NOT_FOUND)."""

    def __init__(self, message: str, exit_code: int, status: str) -> None:
        super().__init__(message, exit_code)
        self.status = status


# A refused request (fix it and run again) exits 2; a service that cannot be reached exits 3, as in
# `run`'s preflight; anything else 1.
REFUSED = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.OUT_OF_RANGE,
})  # fmt: skip
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: "; give the right token with --token or --token-file",
    grpc.StatusCode.PERMISSION_DENIED: "; this token may not do that (ask for a token with the role it needs)",
}
_BATCH_HINTS = {grpc.StatusCode.NOT_FOUND: "; `cj-runner batches` lists the batches you may see"}


def exit_code_of(code: grpc.StatusCode) -> int:
    return 2 if code in REFUSED else 3 if code in UNREACHABLE else 1


def call_failed(error: grpc.aio.AioRpcError, doing: str, hints: dict[grpc.StatusCode, str] | None = None) -> CallFailed:
    """What a failed call means for the user: what the runner was doing, what the service said, and
    which cj-runner command or option helps."""
    message = f"{doing} failed: {error.code().name.lower().replace('_', ' ')}: {error.details()}"
    hint = {**_HINTS, **(hints or {})}.get(error.code(), "")
    return CallFailed(message + hint, exit_code_of(error.code()), error.code().name)


T = TypeVar("T")


async def _answer(doing: str, call: Awaitable[T], hints: dict[grpc.StatusCode, str] | None = None) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise call_failed(error, doing, hints) from None


def document_of(message: Any) -> dict[str, Any]:
    """A message as the contract's JSON (proto field names, every field): what run folders keep."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _time(stamp: Any) -> datetime | None:
    return stamp.ToDatetime() if stamp.seconds or stamp.nanos else None


# ---------------------------------------------------------------------------------------------- #
# What the runner sends and receives: plain dataclasses.


@dataclass(frozen=True)
class Assignment:
    assignment_id: str
    grade_scale: str
    course_code: str
    instructions: str
    student_prompt_storage_id: str
    judge_rubric_storage_id: str
    document: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Anchor:
    label: str
    grade: str
    storage_id: str


@dataclass(frozen=True)
class GradeScale:
    key: str
    grades: tuple[str, ...]  # low to high
    below_lowest_grade: str


@dataclass(frozen=True)
class Batch:
    batch_id: str
    label: str
    state: str  # one of BATCH_STATES
    state_reason: str
    assignment_id: str
    essay_count: int
    anchor_count: int
    comparisons_done: int
    comparisons_failed: int
    comparison_budget: int
    wave: int
    current_ssr: float | None  # None before the first fit
    cost_usd: float | None  # what its answers cost so far; None when its judge has no price
    created: datetime | None
    updated: datetime | None
    document: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES

    @property
    def judged(self) -> int:
        return self.comparisons_done + self.comparisons_failed


@dataclass(frozen=True)
class EssayResult:
    rank: int
    essay_id: str
    display_name: str
    is_anchor: bool
    score: float
    standard_error: float
    score_low_95: float  # the score's 95 % credible interval (asymmetric where the posterior is skewed)
    score_high_95: float
    wins: int
    losses: int
    known_grade: str
    grade: str  # projected grade; '' when none was projected
    probability: float  # of the projected grade
    confidence: str  # low, mid, high; '' when no grade was projected


@dataclass(frozen=True)
class Results:
    batch: Batch
    essays: tuple[EssayResult, ...]
    scale_separation_reliability: float
    grades_projected: bool
    grades_reliable: bool  # False: the anchors do not fit, and the grades' confidence is capped
    projection_note: str
    warnings: tuple[str, ...]  # what to know before trusting the results, worst first
    document: dict[str, Any] = field(repr=False, compare=False)  # results.json


@dataclass(frozen=True)
class Comparison:
    comparison_id: str
    wave: int
    essay_a: str
    essay_b: str
    winner: str  # essay_a, essay_b, or '' when the comparison failed
    confidence: int
    error_code: str
    attempts: int


@dataclass(frozen=True)
class EssaySpec:
    essay_id: str
    storage_id: str
    display_name: str


@dataclass(frozen=True)
class BatchSpec:
    """What a run asks for."""

    label: str
    essays: tuple[EssaySpec, ...]
    assignment_id: str = ""
    prompt_storage_id: str = ""
    prompt_name: str = ""
    budget: int = 0
    provider: str = ""
    model: str = ""
    temperature: float | None = None
    seed: int | None = None
    # Stopping once grades are decided (batches with an assignment): None, the service's defaults.
    decided_share: float | None = None
    decided_probability: float | None = None
    grade_stop: bool = True
    max_cost_usd: float | None = None  # the batch stops once its recorded cost reaches this
    no_cache: bool = False  # ask the judge even for pairs it answered before
    batch_api: bool = False  # each wave as one job of the provider's batch API
    target_reliability: float | None = None  # the SSR to stop at; None: the service's


@dataclass(frozen=True)
class Submitted:
    batch: Batch
    created: bool  # False: the same run was submitted before, and this is its batch
    request: dict[str, Any]  # request.json


def _batch(message: assessment_pb2.Batch) -> Batch:
    progress = message.progress
    return Batch(
        batch_id=message.batch_id, label=message.batch_label,
        state=assessment_pb2.BatchState.Name(message.state).removeprefix("BATCH_STATE_").lower(),
        state_reason=message.state_reason, assignment_id=message.assignment_id, essay_count=message.essay_count,
        anchor_count=message.anchor_count, comparisons_done=progress.comparisons_done,
        comparisons_failed=progress.comparisons_failed, comparison_budget=progress.comparison_budget,
        wave=progress.wave, current_ssr=progress.current_ssr if progress.HasField("current_ssr") else None,
        cost_usd=progress.cost_usd if progress.HasField("cost_usd") else None, created=_time(message.create_time),
        updated=_time(message.update_time), document=document_of(message),
    )  # fmt: skip


def _essay(message: assessment_pb2.EssayResult) -> EssayResult:
    projection = message.projection
    top = max((g.probability for g in projection.probabilities if g.grade == projection.grade), default=0.0)
    label = assessment_pb2.ConfidenceLabel.Name(projection.confidence_label).removeprefix("CONFIDENCE_LABEL_")
    return EssayResult(
        rank=message.rank, essay_id=message.essay_id, display_name=message.display_name,
        is_anchor=message.is_anchor, score=message.score, standard_error=message.standard_error,
        score_low_95=message.score_low_95, score_high_95=message.score_high_95,
        wins=message.wins, losses=message.losses, known_grade=message.known_grade, grade=projection.grade,
        probability=top, confidence=label.lower() if projection.grade and label != "UNSPECIFIED" else "",
    )  # fmt: skip


def _assignment(message: admin_pb2.Assignment) -> Assignment:
    return Assignment(
        message.assignment_id, message.grade_scale, message.course_code, message.instructions,
        message.student_prompt_storage_id, message.judge_rubric_storage_id, document_of(message),
    )  # fmt: skip


def _comparison(message: assessment_pb2.Comparison) -> Comparison:
    return Comparison(
        message.comparison_id, message.wave, message.essay_a_id, message.essay_b_id,
        assessment_pb2.Winner.Name(message.winner).removeprefix("WINNER_").lower().replace("unspecified", ""),
        message.confidence,
        common_pb2.ErrorCode.Name(message.error_code).removeprefix("ERROR_CODE_") if message.error_code else "",
        message.attempts,
    )  # fmt: skip


def _submit_request(spec: BatchSpec, new: bool) -> assessment_pb2.SubmitBatchRequest:
    request = assessment_pb2.SubmitBatchRequest(
        batch_label=spec.label,
        assignment_id=spec.assignment_id,
        essays=[
            common_pb2.EssayRef(essay_id=e.essay_id, text_storage_id=e.storage_id, display_name=e.display_name)
            for e in spec.essays
        ],
    )
    if spec.prompt_storage_id:
        request.student_prompt_ref.CopyFrom(
            common_pb2.StorageReference(
                kind=_KINDS["prompt"], storage_id=spec.prompt_storage_id, path_hint=spec.prompt_name
            )
        )
    if spec.budget:
        request.comparison_budget = spec.budget
    if spec.provider:
        request.judge.provider = assessment_pb2.JudgeProvider.Value(f"JUDGE_PROVIDER_{spec.provider.upper()}")
    if spec.model:
        request.judge.model = spec.model
    if spec.temperature is not None:
        request.judge.temperature = spec.temperature
    if spec.seed is not None:
        request.seed = spec.seed
    if spec.decided_share is not None:
        request.grade_stop.share = spec.decided_share
    if spec.decided_probability is not None:
        request.grade_stop.probability = spec.decided_probability
    if not spec.grade_stop:
        request.grade_stop.off = True
    if spec.max_cost_usd is not None:
        request.max_cost_usd = spec.max_cost_usd
    request.no_cache = spec.no_cache
    if spec.batch_api:
        request.judge.mode = assessment_pb2.JUDGE_MODE_BATCH
    if spec.target_reliability is not None:
        request.target_reliability = spec.target_reliability
    request.request_id = str(uuid.uuid4()) if new else same_run_request_id(request)
    _validate(request)
    return request


def _validate(request: Any) -> None:
    """Checked against the contract here, before anything is sent."""
    try:
        protovalidate.validate(request)
    except protovalidate.ValidationError as error:
        raise RunnerError(f"the request is invalid: {describe(violations_of(error))}", 2) from None


def same_run_request_id(request: assessment_pb2.SubmitBatchRequest) -> str:
    """The request id of a run: a name of everything the request asks for (the essays' storage ids,
    which follow from their bytes, the prompt, assignment, judge settings, budget, seed, label), so
    that running the same folder again is the same request, which the service answers with the same
    batch."""
    body = assessment_pb2.SubmitBatchRequest()
    body.CopyFrom(request)
    body.request_id = ""
    return str(uuid.uuid5(RUN_NAMESPACE, body.SerializeToString(deterministic=True).hex()))


def request_document(spec: BatchSpec, new: bool = False) -> dict[str, Any]:
    """The exact SubmitBatch request of `spec`, checked against the contract, as JSON."""
    return document_of(_submit_request(spec, new))


# ---------------------------------------------------------------------------------------------- #
# Uploads


# What writing to a client stream raises once the server has ended the call (early refusals).
STREAM_ENDED = (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError)


async def write_all(call: Any, messages: Iterable[Any]) -> None:
    """Write a client stream and half-close it, stopping as soon as the call has ended (refused by
    the server, or cancelled).

    The call's own status (await it) then says what happened: a grpc.aio client whose write fails
    after the server refused would otherwise see a client-side error instead (grpc/grpc#36066).
    Each write also stops when the call ends: a write waiting on flow control when the call is
    cancelled is otherwise never resolved, and the writer would wait forever.
    """
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def end(_: Any) -> None:
        if not ended.done():
            ended.set_result(None)

    call.add_done_callback(end)
    try:
        for message in messages:
            if call.done():
                return
            writing = asyncio.ensure_future(call.write(message))
            await asyncio.wait([writing, ended], return_when=asyncio.FIRST_COMPLETED)
            if not writing.done():
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)
                return
            writing.result()
        await call.done_writing()
    except STREAM_ENDED:
        pass
    finally:
        ended.cancel()


def upload_messages(item: Item, kind: Kind) -> Iterator[content_pb2.UploadRequest]:
    data = item.content
    yield content_pb2.UploadRequest(
        header=content_pb2.UploadHeader(
            kind=_KINDS[kind], content_type=CONTENT_TYPES.get(item.path.suffix.lower(), "text/plain; charset=utf-8"),
            filename=item.path.name[:255], declared_size=len(data), sha256=item.sha256,
        )
    )  # fmt: skip
    for start in range(0, len(data), CHUNK_BYTES):
        yield content_pb2.UploadRequest(chunk=data[start : start + CHUNK_BYTES])


def _cache_path(cache_dir: Path, address: str) -> Path:
    return cache_dir / f"uploads-{re.sub(r'[^A-Za-z0-9]+', '_', address)}.json"


# ---------------------------------------------------------------------------------------------- #


async def _serves(health: health_pb2_grpc.HealthStub, service: str) -> bool:
    try:
        await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    except grpc.aio.AioRpcError:
        return False
    return True


class MeshClient:
    """Both services, one connection each. Use as `async with MeshClient(...) as mesh:`."""

    def __init__(self, content_address: str, cj_address: str, token: str = "", tls: TlsFiles | None = None) -> None:
        self.content_address, self.cj_address = content_address, cj_address
        # The interceptor puts the token (and a correlation id) on every call; the token also goes
        # explicitly (self._metadata), because the interceptor's metadata does not reach the
        # streaming calls (Upload, WatchBatch went UNAUTHENTICATED with tokens on when left to it).
        self._metadata = bearer_metadata(token)
        interceptors = [PropagatingClientInterceptor(token)]
        try:
            self._content_channel = open_channel(content_address, tls, interceptors=interceptors)
            self._cj_channel = open_channel(cj_address, tls, interceptors=interceptors)
        except ValueError as error:  # unreadable or incomplete TLS files
            raise RunnerError(f"{error}; check --tls-ca, --tls-cert and --tls-key", 2) from None
        self._content = content_pb2_grpc.ContentServiceStub(self._content_channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._cj_channel)
        self._assessment = assessment_pb2_grpc.AssessmentServiceStub(self._cj_channel)

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._content_channel.close()
        await self._cj_channel.close()

    # -- health and preflight --------------------------------------------------------------------

    async def healthy(self) -> list[str]:
        """Problems with either service; empty when both serve. Each address is asked for the
        service it should have, so swapped or wrong addresses are named as such."""
        expected = (
            ("content-svc", self._content_channel, self.content_address, CONTENT_SERVICE, "--content-address"),
            ("cj-svc", self._cj_channel, self.cj_address, ASSESSMENT_SERVICE, "--cj-address"),
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
                    else "its database cannot be written, or it cannot use its Content Service (check cj-svc's "
                    f"--content-address, this runner uses {self.content_address}, and its --content-token; "
                    "cj-svc's log says which)"
                )
                problems.append(f"{name} at {address} is not serving: {why}")
        return problems

    async def preflight(self, assignment_id: str, expected_scale: str) -> Assignment | None:
        """Everything checked before any side effect; RunnerError(exit 3) saying how to fix it."""
        problems = await self.healthy()
        if problems:
            raise RunnerError("preflight: " + "; ".join(problems), 3)
        if not assignment_id:
            return None
        try:
            assignment = await self.get_assignment(assignment_id)
        except CallFailed as error:
            if error.status != "NOT_FOUND":
                raise RunnerError(f"preflight: {error}", error.exit_code) from None
            raise RunnerError(
                f"preflight: assignment {assignment_id!r} does not exist; create it with "
                f"`cj-runner admin create-assignment --assignment-id {assignment_id} --grade-scale <scale>`",
                3,
            ) from None
        if expected_scale and assignment.grade_scale != expected_scale:
            raise RunnerError(
                f"preflight: assignment {assignment_id!r} uses grade scale {assignment.grade_scale}, "
                f"not the expected {expected_scale}; pick the right assignment or drop --expected-grade-scale",
                3,
            )
        anchors = await self.list_anchors(assignment_id)
        grades = {a.grade for a in anchors}
        if len(grades) < 2:
            raise RunnerError(
                f"preflight: assignment {assignment_id!r} has {len(anchors)} anchor(s) of {len(grades)} grade(s); "
                "grades need anchors of at least two grades. Register them with "
                f"`cj-runner admin register-anchors DIR --assignment-id {assignment_id}`",
                3,
            )
        return assignment

    # -- assignments, anchors, scales ------------------------------------------------------------

    async def get_assignment(self, assignment_id: str) -> Assignment:
        answer = await _answer(
            f"reading assignment {assignment_id!r}",
            self._admin.GetAssignment(
                admin_pb2.GetAssignmentRequest(assignment_id=assignment_id), metadata=self._metadata
            ),
        )
        return _assignment(answer.assignment)

    async def create_assignment(
        self,
        assignment_id: str,
        grade_scale: str,
        course_code: str = "",
        instructions: str = "",
        prompt_storage_id: str = "",
        rubric_storage_id: str = "",
    ) -> Assignment:
        request = admin_pb2.CreateAssignmentRequest(
            request_id=str(uuid.uuid4()), assignment_id=assignment_id, grade_scale=grade_scale,
            course_code=course_code, instructions=instructions, student_prompt_storage_id=prompt_storage_id,
            judge_rubric_storage_id=rubric_storage_id,
        )  # fmt: skip
        _validate(request)
        answer = await _answer(
            f"creating assignment {assignment_id!r}", self._admin.CreateAssignment(request, metadata=self._metadata)
        )
        return _assignment(answer.assignment)

    async def list_assignments(self) -> AsyncIterator[Assignment]:
        token = ""
        while True:
            page = await _answer(
                "listing assignments",
                self._admin.ListAssignments(
                    admin_pb2.ListAssignmentsRequest(page_token=token), metadata=self._metadata
                ),
            )
            for assignment in page.assignments:
                yield _assignment(assignment)
            token = page.next_page_token
            if not token:
                return

    async def register_anchor(self, assignment_id: str, label: str, grade: str, storage_id: str) -> bool:
        """Register (or update) an anchor; True when it is new."""
        request = admin_pb2.RegisterAnchorRequest(
            request_id=str(uuid.uuid4()), assignment_id=assignment_id, label=label, grade=grade, storage_id=storage_id
        )
        _validate(request)
        answer = await _answer(
            f"registering anchor {label!r}", self._admin.RegisterAnchor(request, metadata=self._metadata)
        )
        return bool(answer.created)

    async def list_anchors(self, assignment_id: str) -> list[Anchor]:
        answer = await _answer(
            f"listing the anchors of {assignment_id!r}",
            self._admin.ListAnchors(admin_pb2.ListAnchorsRequest(assignment_id=assignment_id), metadata=self._metadata),
        )
        return [Anchor(a.label, a.grade, a.storage_id) for a in answer.anchors]

    async def list_grade_scales(self) -> list[GradeScale]:
        answer = await _answer(
            "listing grade scales",
            self._admin.ListGradeScales(admin_pb2.ListGradeScalesRequest(), metadata=self._metadata),
        )
        return [GradeScale(s.key, tuple(g.label for g in s.grades), s.below_lowest_grade) for s in answer.grade_scales]

    # -- batches ---------------------------------------------------------------------------------

    async def submit_batch(self, spec: BatchSpec, new: bool = False) -> Submitted:
        """Submit a run; the same run submitted again answers with its first batch (unless `new`)."""
        request = _submit_request(spec, new)
        answer = await _answer("submitting the batch", self._assessment.SubmitBatch(request, metadata=self._metadata))
        return Submitted(_batch(answer.batch), answer.created, document_of(request))

    async def get_batch(self, batch_id: str) -> Batch:
        request = assessment_pb2.GetBatchRequest(batch_id=batch_id)
        _validate(request)
        answer = await _answer(
            f"reading batch {batch_id}", self._assessment.GetBatch(request, metadata=self._metadata), _BATCH_HINTS
        )
        return _batch(answer.batch)

    async def list_batches(self, state: str = "") -> AsyncIterator[Batch]:
        """The caller's batches (all of them for an admin or auditor), optionally in one state."""
        wanted = assessment_pb2.BatchState.Value(f"BATCH_STATE_{state.upper()}" if state else "BATCH_STATE_UNSPECIFIED")
        token = ""
        while True:
            page = await _answer(
                "listing batches",
                self._assessment.ListBatches(
                    assessment_pb2.ListBatchesRequest(page_size=200, page_token=token, state=wanted),
                    metadata=self._metadata,
                ),
            )
            for batch in page.batches:
                yield _batch(batch)
            token = page.next_page_token
            if not token:
                return

    async def watch_batch(self, batch_id: str) -> AsyncIterator[Batch]:
        """The batch now, then at every change, until it ends. A watch that ends UNAVAILABLE (its
        replica stopped or died) is opened again, on another replica where there are several: grpc
        retries only calls that have not answered yet, and a watch has."""
        failures = 0
        while True:
            request = assessment_pb2.WatchBatchRequest(batch_id=batch_id)
            call = self._assessment.WatchBatch(request, metadata=self._metadata)
            try:
                async for update in call:
                    failures = 0
                    yield _batch(update.batch)
                return
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or failures >= WATCH_ATTEMPTS:
                    raise call_failed(error, f"watching batch {batch_id}", _BATCH_HINTS) from None
                failures += 1
            finally:
                call.cancel()
            await asyncio.sleep(0.2 * 2**failures)

    async def get_results(self, batch_id: str) -> Results:
        request = assessment_pb2.GetBatchResultsRequest(batch_id=batch_id)
        _validate(request)
        answer = await _answer(
            f"reading the results of batch {batch_id}",
            self._assessment.GetBatchResults(request, metadata=self._metadata),
            _BATCH_HINTS,
        )
        found = answer.results
        return Results(
            batch=_batch(found.batch), essays=tuple(_essay(e) for e in found.essays),
            scale_separation_reliability=found.scale_separation_reliability,
            grades_projected=found.grades_projected, grades_reliable=found.grades_reliable,
            projection_note=found.projection_note, warnings=tuple(w.message for w in found.warnings),
            document=document_of(found),
        )  # fmt: skip

    async def list_comparisons(self, batch_id: str) -> list[Comparison]:
        rows, token = [], ""
        while True:
            page = await _answer(
                f"listing the comparisons of batch {batch_id}",
                self._assessment.ListComparisons(
                    assessment_pb2.ListComparisonsRequest(batch_id=batch_id, page_size=1000, page_token=token),
                    metadata=self._metadata,
                ),
            )
            rows += [_comparison(c) for c in page.comparisons]
            token = page.next_page_token
            if not token:
                return rows

    async def cancel_batch(self, batch_id: str, reason: str, timeout: float | None = None) -> Batch:
        request = assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=batch_id, reason=reason)
        _validate(request)
        answer = await _answer(
            f"cancelling batch {batch_id}",
            self._assessment.CancelBatch(request, metadata=self._metadata, timeout=timeout),
            _BATCH_HINTS,
        )
        return _batch(answer.batch)

    # -- content ---------------------------------------------------------------------------------

    async def intact(self, storage_ids: Iterable[str]) -> set[str]:
        """Which of these the Content Service holds undamaged (every blob hashed)."""
        answer = await _answer(
            "checking stored files",
            self._content.Stat(
                content_pb2.StatRequest(storage_ids=sorted(set(storage_ids)), verify=True), metadata=self._metadata
            ),
        )
        return {meta.storage_id for meta in answer.found}

    async def find_by_checksum(self, sha256s: Iterable[str]) -> dict[str, str]:
        """sha256 -> storage id of what the Content Service already holds intact."""
        answer = await _answer(
            "looking up stored files",
            self._content.FindByChecksum(
                content_pb2.FindByChecksumRequest(sha256s=list(sha256s)), metadata=self._metadata
            ),
        )
        return {m.sha256: m.storage_id for m in answer.matches}

    async def upload(self, item: Item, kind: Kind) -> str:
        """Stream one file up; its storage id."""

        async def send() -> str:
            call = self._content.Upload(metadata=self._metadata, timeout=UPLOAD_TIMEOUT_SECONDS)
            await write_all(call, upload_messages(item, kind))
            return str((await call).storage_id)

        return await self._sent_until_answered(f"uploading {item.path.name}", send)

    async def _sent_until_answered(
        self, doing: str, send: Callable[[], Awaitable[T]], attempts: int = UPLOAD_ATTEMPTS
    ) -> T:
        """The answer of an upload call, sent again with backoff while the Content Service does not
        answer. Safe because content is stored once by its sha256."""
        for attempt in range(attempts):
            try:
                return await send()
            except grpc.aio.AioRpcError as error:
                if error.code() not in UNREACHABLE:
                    raise call_failed(error, doing) from None
                if attempt == attempts - 1:
                    raise ServiceGone(
                        f"the Content Service at {self.content_address} stopped answering during the upload "
                        f"({doing}: {error.code().name}: {error.details()}); check that content-svc is running, "
                        "then run the same command again (files already stored are not sent again)",
                        3,
                    ) from None
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def upload_small(self, items: list[tuple[Item, Kind]]) -> tuple[dict[str, str], dict[str, str]]:
        """Small files in one BatchUpload; (sha256 -> storage id, file -> why it was refused)."""
        request = content_pb2.BatchUploadRequest(
            items=[
                content_pb2.BatchUploadItem(
                    kind=_KINDS[kind], content_type=CONTENT_TYPES.get(item.path.suffix.lower(), "text/plain; charset=utf-8"),
                    filename=item.path.name[:255], content=item.content, sha256=item.sha256,
                )
                for item, kind in items
            ]
        )  # fmt: skip
        # The channel's retry policy resends a BatchUpload that failed before any answer. A replica
        # that dies while answering has committed the call: that one is sent again here, once.
        answer = await self._sent_until_answered(
            f"uploading {len(items)} files",
            lambda: self._content.BatchUpload(request, metadata=self._metadata, timeout=UPLOAD_TIMEOUT_SECONDS),
            attempts=2,
        )
        stored: dict[str, str] = {}
        refused: dict[str, str] = {}
        for result in answer.results:
            item = items[result.index][0]
            if result.HasField("error"):
                refused[str(item.path)] = f"uploading {item.path.name} failed: {result.error.message}"
            else:
                stored[item.sha256] = result.storage_id
        return stored, refused

    async def storage_ids_for(
        self,
        items: list[tuple[Item, Kind]],
        cache_dir: Path,
        concurrency: int = 8,
        progress: Callable[[Item], None] | None = None,
    ) -> tuple[dict[str, str], int, dict[str, str]]:
        """sha256 -> storage id for every item, from the service's answers only.

        The cache (per Content Service address) is checked with Stat before reuse; what the service
        already holds is found with FindByChecksum; the rest is streamed up. Returns (map, uploaded
        count, failures by file).
        """
        path = _cache_path(cache_dir, self.content_address)
        cache: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        wanted = {item.sha256: (item, kind) for item, kind in items}
        known = {sha: cache[sha] for sha in wanted if sha in cache}
        if known:
            intact = await self.intact(known.values())
            # Stale entries are dropped: gone from the service, or damaged there (the upload repairs them).
            known = {sha: sid for sha, sid in known.items() if sid in intact}
        rest = [sha for sha in wanted if sha not in known]
        if rest:
            known.update(await self.find_by_checksum(rest))
        limit = asyncio.Semaphore(concurrency)
        failures: dict[str, str] = {}
        uploads = [wanted[sha] for sha in wanted if sha not in known]
        small = [(item, kind) for item, kind in uploads if len(item.content) <= SMALL_FILE_BYTES]
        groups: list[list[tuple[Item, Kind]]] = []
        group_bytes = 0  # in the last group
        for item, kind in small:
            if not groups or len(groups[-1]) >= BATCH_FILES or group_bytes + len(item.content) > BATCH_BYTES:
                groups.append([])
                group_bytes = 0
            groups[-1].append((item, kind))
            group_bytes += len(item.content)

        async def one(item: Item, kind: Kind) -> None:
            async with limit:
                try:
                    known[item.sha256] = await self.upload(item, kind)
                except ServiceGone:
                    raise
                except RunnerError as error:
                    failures[str(item.path)] = str(error)
                if progress:
                    progress(item)

        async def together(group: list[tuple[Item, Kind]]) -> None:
            async with limit:
                try:
                    stored, refused = await self.upload_small(group)
                except CallFailed as error:
                    stored, refused = {}, {str(item.path): str(error) for item, _ in group}
                known.update(stored)
                failures.update(refused)
                for item, _ in group:
                    if progress:
                        progress(item)

        # One failed file is reported with the others at the end; a service that is gone stops them all now.
        tasks = [asyncio.ensure_future(together(group)) for group in groups]
        tasks += [
            asyncio.ensure_future(one(item, kind)) for item, kind in uploads if len(item.content) > SMALL_FILE_BYTES
        ]
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
