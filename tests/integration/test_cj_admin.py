"""AdminService through real Content and CJ servers, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import grpc
import pytest
from huleedu.cj.v1 import admin_pb2
from huleedu.common.v1 import common_pb2

from tests.support.cj import create_assignment, register_anchor, store_texts
from tests.support.grpc_client import error_reason, field_violations


def rid() -> str:
    return str(uuid.uuid4())


async def test_grade_scales_exactly_as_specified(mesh) -> None:
    scales = {s.key: s for s in (await mesh.admin.ListGradeScales(admin_pb2.ListGradeScalesRequest())).grade_scales}
    assert sorted(scales) == ["eng5_np_legacy_9_step", "eng5_np_national_9_step", "swedish_8_anchor"]
    swedish = scales["swedish_8_anchor"]
    assert [g.label for g in swedish.grades] == ["F", "E", "D", "D+", "C", "C+", "B", "A"]
    assert [g.prior for g in swedish.grades] == [0.02, 0.08, 0.15, 0.20, 0.25, 0.15, 0.10, 0.05]
    assert not swedish.allows_below_lowest
    legacy = (await mesh.admin.GetGradeScale(admin_pb2.GetGradeScaleRequest(key="eng5_np_legacy_9_step"))).grade_scale
    assert [g.label for g in legacy.grades] == ["F+", "E-", "E+", "D-", "D+", "C-", "C+", "B", "A"]
    assert legacy.allows_below_lowest and legacy.below_lowest_grade == "F"
    assert scales["eng5_np_national_9_step"].below_lowest_grade == "0"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.admin.GetGradeScale(admin_pb2.GetGradeScaleRequest(key="letters"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "swedish_8_anchor" in caught.value.details()


async def test_assignment_lifecycle(mesh) -> None:
    created = await create_assignment(mesh, "eng5-a")
    assert created.grade_scale == "eng5_np_legacy_9_step" and len(created.student_prompt_storage_id) == 32
    got = (await mesh.admin.GetAssignment(admin_pb2.GetAssignmentRequest(assignment_id="eng5-a"))).assignment
    assert got == created
    for i in range(3):
        await mesh.admin.CreateAssignment(
            admin_pb2.CreateAssignmentRequest(request_id=rid(), assignment_id=f"z-{i}", grade_scale="swedish_8_anchor")
        )
    page = await mesh.admin.ListAssignments(admin_pb2.ListAssignmentsRequest(page_size=2))
    rest = await mesh.admin.ListAssignments(
        admin_pb2.ListAssignmentsRequest(page_size=2, page_token=page.next_page_token)
    )
    assert [a.assignment_id for a in [*page.assignments, *rest.assignments]] == ["eng5-a", "z-0", "z-1", "z-2"]
    assert rest.next_page_token == ""
    updated = await mesh.admin.UpdateAssignment(
        admin_pb2.UpdateAssignmentRequest(request_id=rid(), assignment_id="eng5-a", instructions="New rubric text")
    )
    assert updated.assignment.instructions == "New rubric text" and updated.assignment.course_code == "ENG5"
    with pytest.raises(grpc.aio.AioRpcError) as immutable:
        await mesh.admin.UpdateAssignment(
            admin_pb2.UpdateAssignmentRequest(request_id=rid(), assignment_id="eng5-a", grade_scale="swedish_8_anchor")
        )
    assert (
        immutable.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "cannot change" in immutable.value.details()
    )
    await mesh.admin.DeleteAssignment(admin_pb2.DeleteAssignmentRequest(request_id=rid(), assignment_id="eng5-a"))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await mesh.admin.GetAssignment(admin_pb2.GetAssignmentRequest(assignment_id="eng5-a"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND and "eng5-a" in gone.value.details()
    assert error_reason(gone.value) == "RESOURCE_NOT_FOUND"


async def test_unknown_scale_and_missing_content_refused(mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as scale:
        await mesh.admin.CreateAssignment(
            admin_pb2.CreateAssignmentRequest(request_id=rid(), assignment_id="x", grade_scale="gcse_9")
        )
    assert scale.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "eng5_np_national_9_step" in scale.value.details() and "grade_scale" in field_violations(scale.value)
    missing = "a" * 32
    with pytest.raises(grpc.aio.AioRpcError) as rubric:
        await mesh.admin.CreateAssignment(
            admin_pb2.CreateAssignmentRequest(
                request_id=rid(), assignment_id="x", grade_scale="swedish_8_anchor", judge_rubric_storage_id=missing
            )
        )
    assert rubric.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert missing in rubric.value.details() and "judge_rubric_storage_id" in field_violations(rubric.value)
    with pytest.raises(grpc.aio.AioRpcError) as nothing:
        await mesh.admin.ListAnchors(admin_pb2.ListAnchorsRequest(assignment_id="nope"))
    assert nothing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_anchor_rules(mesh) -> None:
    await create_assignment(mesh, "eng5-b")
    first = await register_anchor(mesh, "eng5-b", "A1", "B", "An anchor essay of grade B.")
    assert first.created and first.anchor.grade == "B" and first.anchor.grade_scale == "eng5_np_legacy_9_step"
    again = await register_anchor(mesh, "eng5-b", "A1", "C+", "A different text, regraded.")
    assert not again.created and again.anchor.grade == "C+"
    below = await register_anchor(mesh, "eng5-b", "A2", "F", "Below the lowest grade.")
    assert below.anchor.grade == "F"
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await register_anchor(mesh, "eng5-b", "A3", "D", "Not a grade of this scale.")
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "E-" in wrong.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as unstored:
        await mesh.admin.RegisterAnchor(
            admin_pb2.RegisterAnchorRequest(
                request_id=rid(), assignment_id="eng5-b", label="A4", grade="B", storage_id="b" * 32
            )
        )
    assert unstored.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "b" * 32 in unstored.value.details()
    anchors = (await mesh.admin.ListAnchors(admin_pb2.ListAnchorsRequest(assignment_id="eng5-b"))).anchors
    assert [(a.label, a.grade) for a in anchors] == [("A1", "C+"), ("A2", "F")]
    await mesh.admin.DeleteAnchor(admin_pb2.DeleteAnchorRequest(request_id=rid(), assignment_id="eng5-b", label="A2"))
    anchors = (await mesh.admin.ListAnchors(admin_pb2.ListAnchorsRequest(assignment_id="eng5-b"))).anchors
    assert [a.label for a in anchors] == ["A1"]
    swedish = await mesh.admin.CreateAssignment(
        admin_pb2.CreateAssignmentRequest(request_id=rid(), assignment_id="sv", grade_scale="swedish_8_anchor")
    )
    assert swedish.assignment.grade_scale == "swedish_8_anchor"
    (text_id,) = await store_texts(mesh.content, ["x"])
    with pytest.raises(grpc.aio.AioRpcError) as no_below:
        await mesh.admin.RegisterAnchor(
            admin_pb2.RegisterAnchorRequest(
                request_id=rid(), assignment_id="sv", label="L", grade="0", storage_id=text_id
            )
        )
    assert no_below.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_admin_needs_a_token_with_the_admin_role_when_tokens_are_configured(mesh) -> None:
    from mesh_server.auth import hash_token

    tokens = f"{hash_token('admin-secret')}:admin+user,{hash_token('user-secret')}:user"
    await mesh.restart_cj(tokens=tokens)
    request = admin_pb2.ListGradeScalesRequest()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await mesh.admin.ListGradeScales(request)
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await mesh.admin.ListGradeScales(request, metadata=(("authorization", "Bearer guess"),))
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as role:
        await mesh.admin.ListGradeScales(request, metadata=(("authorization", "Bearer user-secret"),))
    assert role.value.code() == grpc.StatusCode.PERMISSION_DENIED and "admin" in role.value.details()
    ok = await mesh.admin.ListGradeScales(request, metadata=(("authorization", "Bearer admin-secret"),))
    assert len(ok.grade_scales) == 3


async def test_correlation_id_passed_on_to_the_content_service(mesh) -> None:
    import logging

    from mesh_common import correlation

    seen: list[tuple[str, str]] = []

    class Capture(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            seen.append((record.getMessage(), correlation.current.get()))  # runs in the handler's context
            return True

    logger = logging.getLogger("mesh.rpc")
    capture = Capture()
    logger.addFilter(capture)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        (prompt_id,) = await store_texts(mesh.content, ["a prompt"], common_pb2.CONTENT_KIND_STUDENT_PROMPT)
        await mesh.admin.CreateAssignment(
            admin_pb2.CreateAssignmentRequest(
                request_id=rid(),
                assignment_id="traced",
                grade_scale="swedish_8_anchor",
                student_prompt_storage_id=prompt_id,
            ),
            metadata=(("x-correlation-id", "trace-abc-123"),),
        )
    finally:
        logger.removeFilter(capture)
        logger.setLevel(level)
    content_calls = [cid for message, cid in seen if "ContentService/Stat" in message]
    assert content_calls == ["trace-abc-123"]


async def test_a_change_sent_again_with_its_request_id_is_not_done_twice(mesh) -> None:
    create = admin_pb2.CreateAssignmentRequest(
        request_id=rid(), assignment_id="eng5-again", grade_scale="swedish_8_anchor"
    )
    first = (await mesh.admin.CreateAssignment(create)).assignment
    again = (await mesh.admin.CreateAssignment(create)).assignment  # a retry: answered, not ALREADY_EXISTS
    assert again == first
    # a new request with the same id is refused, naming request_id
    other = admin_pb2.CreateAssignmentRequest(request_id=create.request_id, assignment_id="eng5-other", grade_scale="swedish_8_anchor")  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.admin.CreateAssignment(other)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in field_violations(caught.value) and "different CreateAssignment" in caught.value.details()
    # ... while a new request id for the same assignment is a new request: it exists already
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.admin.CreateAssignment(admin_pb2.CreateAssignmentRequest(
            request_id=rid(), assignment_id="eng5-again", grade_scale="swedish_8_anchor"))  # fmt: skip
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS

    (storage_id,) = await store_texts(mesh.content, ["An anchor essay."], common_pb2.CONTENT_KIND_ANCHOR_ESSAY)
    register = admin_pb2.RegisterAnchorRequest(
        request_id=rid(), assignment_id="eng5-again", label="a1", grade="C", storage_id=storage_id
    )
    assert (await mesh.admin.RegisterAnchor(register)).created
    replayed = await mesh.admin.RegisterAnchor(register)
    assert not replayed.created and replayed.anchor.grade == "C"
    delete = admin_pb2.DeleteAnchorRequest(request_id=rid(), assignment_id="eng5-again", label="a1")
    await mesh.admin.DeleteAnchor(delete)
    await mesh.admin.DeleteAnchor(delete)  # a retry of a delete that happened: OK, not NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a new delete of what is gone is NOT_FOUND
        await mesh.admin.DeleteAnchor(admin_pb2.DeleteAnchorRequest(request_id=rid(), assignment_id="eng5-again", label="a1"))  # fmt: skip
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    delete_assignment = admin_pb2.DeleteAssignmentRequest(request_id=rid(), assignment_id="eng5-again")
    await mesh.admin.DeleteAssignment(delete_assignment)
    await mesh.admin.DeleteAssignment(delete_assignment)
