"""What a request may refer to: stored content of the right kind (the rule SubmitBatch and the
AdminService check before they accept a storage id) and an assignment that exists. No grpc here:
the Content Service's answer comes in as `Held`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mesh_common.error_codes import ErrorCode
from mesh_server import errors

ESSAY_KINDS = frozenset({"CONTENT_KIND_ESSAY_TEXT", "CONTENT_KIND_ANCHOR_ESSAY"})
PROMPT_KINDS = frozenset({"CONTENT_KIND_STUDENT_PROMPT"})
RUBRIC_KINDS = frozenset({"CONTENT_KIND_JUDGE_RUBRIC"})
# The CJ Service reads texts with Get and BatchGet, which answer up to this much content.
MAX_TEXT_BYTES = 4 * 1024 * 1024


def unknown_assignment(assignment_id: str) -> errors.NotFound:
    """The refusal of a request that names an assignment there is none of."""
    return errors.NotFound(
        f"no assignment {assignment_id!r}; create it first (cj-runner admin create-assignment "
        f"--assignment-id {assignment_id} ...)",
        field="assignment_id",
    )


@dataclass(frozen=True)
class Held:
    """What the Content Service holds under a storage id."""

    kind: str
    size: int
    state: str  # INTACT, DAMAGED or MISSING (the blob is gone)


@dataclass(frozen=True)
class Reference:
    """A storage id a request carries: where (`field`), as what (`what`), and the kinds it accepts."""

    field: str
    what: str
    storage_id: str
    kinds: frozenset[str]


def _kind_name(kind: str) -> str:
    return kind.removeprefix("CONTENT_KIND_").lower().replace("_", " ")


def problem(reference: Reference, held: Held | None) -> tuple[ErrorCode, str] | None:
    """(error code, what is wrong and how to fix it) for one reference, or None when it is fine."""
    where = f"{reference.what} ({reference.field}, storage id {reference.storage_id})"
    if held is None:
        return ErrorCode.RESOURCE_NOT_FOUND, (
            f"{where} is not in the Content Service; upload the file first and send the storage id the "
            "Content Service returned (not a file checksum)"
        )
    if held.state != "INTACT":
        return ErrorCode.CONTENT_DAMAGED, (
            f"{where} is {held.state.lower()} in the Content Service; upload the same file again to repair it"
        )
    if held.kind not in reference.kinds:
        wanted = " or ".join(sorted(_kind_name(k) for k in reference.kinds))
        return ErrorCode.VALIDATION_ERROR, f"{where} is stored as a {_kind_name(held.kind)}, not as a {wanted}"
    if held.size > MAX_TEXT_BYTES:
        return ErrorCode.VALIDATION_ERROR, (
            f"{where} is {held.size} bytes, more than the {MAX_TEXT_BYTES} bytes of text the CJ Service reads; "
            "shorten it"
        )
    return None


def check(references: Sequence[Reference], held: Mapping[str, Held]) -> None:
    """FailedPrecondition naming every reference that is not fine (the first 20), else nothing."""
    found = [(r, p) for r in references if (p := problem(r, held.get(r.storage_id))) is not None]
    if not found:
        return
    first, (code, _) = found[0]
    missing = [r.storage_id for r, (c, _) in found if c == ErrorCode.RESOURCE_NOT_FOUND]
    more = f"; and {len(found) - 20} more" if len(found) > 20 else ""
    raise errors.FailedPrecondition(
        "; ".join(message for _, (_, message) in found[:20]) + more,
        field=first.field,
        error_code=code,
        metadata={"missing_storage_ids": ",".join(missing[:50])} if missing else None,
    )
