"""One test per contract constraint: the valid message passes, each broken one names its field."""

from __future__ import annotations

import uuid

import protovalidate
import pytest
from huleedu.cj.v1 import admin_pb2, assessment_pb2
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2

from mesh_common.tls import MAX_MESSAGE_BYTES
from mesh_common.violations import field_path, violations_of
from tests.support.messages import SHA256, STORAGE_ID, submit_batch_request

validator = protovalidate.Validator()


def violated_fields(message) -> set[str]:
    try:
        validator.validate(message)
    except protovalidate.ValidationError as error:
        return {field_path(v) for v in violations_of(error).violations}
    return set()


def test_valid_submit_batch_request_passes() -> None:
    assert violated_fields(submit_batch_request()) == set()


def _broken(mutate) -> set[str]:
    request = submit_batch_request()
    mutate(request)
    return violated_fields(request)


# Each case: (what is broken, how, the field that must be named).
SUBMIT_CASES = [
    (
        "64-char sha256 as text_storage_id",
        lambda r: setattr(r.essays[1], "text_storage_id", SHA256),
        "essays[1].text_storage_id",
    ),
    (
        "uppercase storage id",
        lambda r: setattr(r.essays[0], "text_storage_id", STORAGE_ID.upper()),
        "essays[0].text_storage_id",
    ),
    (
        "64-char sha256 as the prompt's storage_id",
        lambda r: setattr(r.student_prompt_ref, "storage_id", SHA256),
        "student_prompt_ref.storage_id",
    ),
    (
        "prompt ref of the wrong kind",
        lambda r: setattr(r.student_prompt_ref, "kind", common_pb2.CONTENT_KIND_ESSAY_TEXT),
        "student_prompt_ref",
    ),
    ("empty batch label", lambda r: setattr(r, "batch_label", ""), "batch_label"),
    ("leading whitespace in batch label", lambda r: setattr(r, "batch_label", " label"), "batch_label"),
    ("trailing whitespace in batch label", lambda r: setattr(r, "batch_label", "label "), "batch_label"),
    ("whitespace-only batch label", lambda r: setattr(r, "batch_label", "   "), "batch_label"),
    ("no-break space before the batch label", lambda r: setattr(r, "batch_label", "\u00a0label"), "batch_label"),
    ("em space after the batch label", lambda r: setattr(r, "batch_label", "label\u2003"), "batch_label"),
    ("zero-width space after the batch label", lambda r: setattr(r, "batch_label", "label\u200b"), "batch_label"),
    ("256-char batch label", lambda r: setattr(r, "batch_label", "x" * 256), "batch_label"),
    ("37-char essay id", lambda r: setattr(r.essays[2], "essay_id", "e" * 37), "essays[2].essay_id"),
    ("empty essay id", lambda r: setattr(r.essays[0], "essay_id", ""), "essays[0].essay_id"),
    ("essay id with a space", lambda r: setattr(r.essays[0], "essay_id", "anna b"), "essays[0].essay_id"),
    ("101-char assignment id", lambda r: setattr(r, "assignment_id", "a" * 101), "assignment_id"),
    ("request id that is no UUID", lambda r: setattr(r, "request_id", "retry-1"), "request_id"),
    ("a single essay", lambda r: r.essays.pop(), "essays"),
    ("temperature above 2", lambda r: setattr(r.judge, "temperature", 2.01), "judge.temperature"),
    ("negative temperature", lambda r: setattr(r.judge, "temperature", -0.1), "judge.temperature"),
    ("max tokens 0", lambda r: setattr(r.judge, "max_tokens", 0), "judge.max_tokens"),
    ("unknown judge provider", lambda r: setattr(r.judge, "provider", 99), "judge.provider"),
    ("budget 0", lambda r: setattr(r, "comparison_budget", 0), "comparison_budget"),
    ("language that is no tag", lambda r: setattr(r, "language", "English"), "language"),
    ("grade stop for no students", lambda r: setattr(r.grade_stop, "share", 0.0), "grade_stop.share"),
    ("grade stop share above 1", lambda r: setattr(r.grade_stop, "share", 1.5), "grade_stop.share"),
    ("grade stop probability below 0.5", lambda r: setattr(r.grade_stop, "probability", 0.3), "grade_stop.probability"),
    ("grade stop probability of 1", lambda r: setattr(r.grade_stop, "probability", 1.0), "grade_stop.probability"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), SUBMIT_CASES, ids=[c[0] for c in SUBMIT_CASES])
def test_submit_batch_constraint(case: str, mutate, field: str) -> None:
    if case == "a single essay":
        request = submit_batch_request(n_essays=1)
        assert field in violated_fields(request)
        return
    assert field in _broken(mutate)


def test_largest_batch_allowed_and_one_more_refused() -> None:
    ok = submit_batch_request(n_essays=100_000)
    assert violated_fields(ok) == set()
    ok.essays.add(essay_id="one_too_many", text_storage_id=STORAGE_ID)
    assert "essays" in violated_fields(ok)


def test_the_largest_submit_batch_fits_the_message_limit() -> None:
    longest = submit_batch_request(n_essays=100_000)
    for i, essay in enumerate(longest.essays):
        essay.essay_id = f"{i:036d}"
        essay.display_name = "n" * 200
    assert violated_fields(longest) == set()
    assert longest.ByteSize() < MAX_MESSAGE_BYTES


def test_temperature_zero_is_allowed_and_distinct_from_unset() -> None:
    request = submit_batch_request()
    assert not request.judge.HasField("temperature")
    request.judge.temperature = 0.0
    assert request.judge.HasField("temperature")
    assert violated_fields(request) == set()


def test_guest_run_without_assignment_or_prompt_is_valid() -> None:
    request = submit_batch_request()
    request.assignment_id = ""
    request.ClearField("student_prompt_ref")
    assert violated_fields(request) == set()


CONTENT_CASES = [
    ("chunk over 1 MiB", content_pb2.UploadRequest(chunk=b"x" * (1024 * 1024 + 1)), "chunk"),
    ("empty upload message", content_pb2.UploadRequest(), "payload"),
    (
        "content type over 100 chars",
        content_pb2.UploadRequest(header=content_pb2.UploadHeader(kind=1, content_type="t" * 101)),
        "header.content_type",
    ),
    (
        "header without a kind",
        content_pb2.UploadRequest(header=content_pb2.UploadHeader(content_type="text/plain")),
        "header.kind",
    ),
    (
        "declared sha256 that is no sha256",
        content_pb2.UploadRequest(header=content_pb2.UploadHeader(kind=1, content_type="text/plain", sha256="abc")),
        "header.sha256",
    ),
    (
        "negative declared size",
        content_pb2.UploadRequest(header=content_pb2.UploadHeader(kind=1, content_type="text/plain", declared_size=-1)),
        "header.declared_size",
    ),
    ("Get with a checksum for an id", content_pb2.GetRequest(storage_id=SHA256), "storage_id"),
    ("Stat with a bad id", content_pb2.StatRequest(storage_ids=[STORAGE_ID, "nope"]), "storage_ids[1]"),
    ("Stat with no ids", content_pb2.StatRequest(), "storage_ids"),
    ("FindByChecksum with a storage id", content_pb2.FindByChecksumRequest(sha256s=[STORAGE_ID]), "sha256s[0]"),
    ("BatchUpload with no items", content_pb2.BatchUploadRequest(), "items"),
]


@pytest.mark.parametrize(("case", "message", "field"), CONTENT_CASES, ids=[c[0] for c in CONTENT_CASES])
def test_content_constraint(case: str, message, field: str) -> None:
    assert field in violated_fields(message)


def test_valid_content_messages_pass() -> None:
    header = content_pb2.UploadHeader(kind=1, content_type="text/plain", declared_size=5, sha256=SHA256)
    assert violated_fields(content_pb2.UploadRequest(header=header)) == set()
    assert violated_fields(content_pb2.UploadRequest(chunk=b"x" * 1024 * 1024)) == set()
    assert violated_fields(content_pb2.StatRequest(storage_ids=[STORAGE_ID])) == set()


ADMIN_CASES = [
    (
        "assignment id over 100",
        admin_pb2.CreateAssignmentRequest(request_id=str(uuid.uuid4()), assignment_id="a" * 101, grade_scale="x"),
        "assignment_id",
    ),
    (
        "rubric id that is a checksum",
        admin_pb2.CreateAssignmentRequest(
            request_id=str(uuid.uuid4()), assignment_id="a1", grade_scale="x", judge_rubric_storage_id=SHA256
        ),
        "judge_rubric_storage_id",
    ),
    ("page size over 1000", admin_pb2.ListAssignmentsRequest(page_size=1001), "page_size"),
    (
        "anchor storage id that is a checksum",
        admin_pb2.RegisterAnchorRequest(
            request_id=str(uuid.uuid4()), assignment_id="a1", label="A1", grade="B", storage_id=SHA256
        ),
        "storage_id",
    ),
    ("batch page size over 1000", assessment_pb2.ListBatchesRequest(page_size=5000), "page_size"),
    ("comparisons of a malformed batch id", assessment_pb2.ListComparisonsRequest(batch_id="b1"), "batch_id"),
]


@pytest.mark.parametrize(("case", "message", "field"), ADMIN_CASES, ids=[c[0] for c in ADMIN_CASES])
def test_cj_constraint(case: str, message, field: str) -> None:
    assert field in violated_fields(message)


def _request_types():
    """Every request message of every RPC of our services."""
    for module in (content_pb2, admin_pb2, assessment_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield method.input_type


def _string_paths(descriptor, prefix=(), seen=()):
    """(path of fields, leaf field) for every string field reachable from a message type."""
    for field in descriptor.fields:
        path = (*prefix, field)
        if field.type == field.TYPE_STRING:
            yield path
        elif field.type == field.TYPE_MESSAGE and field.message_type.full_name not in seen:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue
            yield from _string_paths(field.message_type, path, (*seen, descriptor.full_name))


def _with_nul(descriptor, path) -> tuple[object, str]:
    """A message of `descriptor` whose string field at `path` holds a NUL; and that field's path."""
    from google.protobuf import message_factory

    message = message_factory.GetMessageClass(descriptor)()
    target, names = message, []
    for field in path[:-1]:
        if field.is_repeated:
            target = getattr(target, field.name).add()
            names.append(f"{field.name}[0]")
        else:
            target = getattr(target, field.name)
            names.append(field.name)
    leaf = path[-1]
    if leaf.is_repeated:
        getattr(target, leaf.name).append("a\x00b")
        names.append(f"{leaf.name}[0]")
    else:
        setattr(target, leaf.name, "a\x00b")
        names.append(leaf.name)
    return message, ".".join(names)


NUL_CASES = [
    (descriptor, path) for descriptor in {d.full_name: d for d in _request_types()}.values()
    for path in _string_paths(descriptor)
]  # fmt: skip


@pytest.mark.parametrize(
    ("descriptor", "path"),
    NUL_CASES,
    ids=[f"{d.name}.{'.'.join(f.name for f in p)}" for d, p in NUL_CASES],
)
def test_every_request_string_field_refuses_nul(descriptor, path) -> None:
    """PostgreSQL cannot store NUL in text: the contract refuses it in every string a request carries."""
    message, field = _with_nul(descriptor, path)
    assert field in violated_fields(message)
