"""gRPC adapter of assignments, anchors and grade scales: huleedu.cj.v1.AdminService."""

from __future__ import annotations

import grpc
from google.protobuf.message import Message
from huleedu.cj.v1 import admin_pb2, admin_pb2_grpc
from huleedu.common.v1 import common_pb2

from cj_svc import models, requests
from cj_svc.admin import AdminStore, known_scale
from cj_svc.engine.scales import SCALES, GradeScale
from cj_svc.requests import RequestKey
from mesh_server.convert import timestamp


def scale_message(scale: GradeScale) -> common_pb2.GradeScale:
    return common_pb2.GradeScale(
        key=scale.key,
        display_name=scale.display_name,
        grades=[common_pb2.Grade(label=g, prior=p) for g, p in zip(scale.grades, scale.priors, strict=True)],
        allows_below_lowest=scale.below_lowest_grade is not None,
        below_lowest_grade=scale.below_lowest_grade or "",
    )


def assignment_message(row: models.Assignment) -> admin_pb2.Assignment:
    return admin_pb2.Assignment(
        assignment_id=row.assignment_id,
        course_code=row.course_code,
        instructions=row.instructions,
        grade_scale=row.grade_scale,
        student_prompt_storage_id=row.student_prompt_storage_id or "",
        judge_rubric_storage_id=row.judge_rubric_storage_id or "",
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
    )


def anchor_message(row: models.Anchor) -> admin_pb2.Anchor:
    return admin_pb2.Anchor(
        assignment_id=row.assignment_id,
        label=row.label,
        grade=row.grade,
        grade_scale=row.grade_scale,
        storage_id=row.storage_id,
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
    )


def _optional(request: Message, field: str) -> str | None:
    return getattr(request, field) if request.HasField(field) else None


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: AdminStore) -> None:
        self.store = store

    async def CreateAssignment(self, request: admin_pb2.CreateAssignmentRequest, context: grpc.aio.ServicerContext):
        key = RequestKey.of("CreateAssignment", request)
        row = await requests.once(
            self.store.sessions,
            key,
            lambda: self.store.create_assignment(
                request.assignment_id, request.grade_scale, request.course_code, request.instructions,
                request.student_prompt_storage_id, request.judge_rubric_storage_id, key,
            ),
        )  # fmt: skip
        if row is None:  # created by this same request before
            row = await self.store.get_assignment(request.assignment_id)
        return admin_pb2.CreateAssignmentResponse(assignment=assignment_message(row))

    async def GetAssignment(self, request: admin_pb2.GetAssignmentRequest, context: grpc.aio.ServicerContext):
        return admin_pb2.GetAssignmentResponse(
            assignment=assignment_message(await self.store.get_assignment(request.assignment_id))
        )

    async def ListAssignments(self, request: admin_pb2.ListAssignmentsRequest, context: grpc.aio.ServicerContext):
        rows, next_token = await self.store.list_assignments(request.page_size, request.page_token)
        return admin_pb2.ListAssignmentsResponse(
            assignments=[assignment_message(r) for r in rows], next_page_token=next_token
        )

    async def UpdateAssignment(self, request: admin_pb2.UpdateAssignmentRequest, context: grpc.aio.ServicerContext):
        fields = ("course_code", "instructions", "grade_scale", "student_prompt_storage_id", "judge_rubric_storage_id")
        key = RequestKey.of("UpdateAssignment", request)
        changes = {f: _optional(request, f) for f in fields}
        row = await requests.once(
            self.store.sessions, key, lambda: self.store.update_assignment(request.assignment_id, key, **changes)
        )
        if row is None:  # updated by this same request before
            row = await self.store.get_assignment(request.assignment_id)
        return admin_pb2.UpdateAssignmentResponse(assignment=assignment_message(row))

    async def DeleteAssignment(self, request: admin_pb2.DeleteAssignmentRequest, context: grpc.aio.ServicerContext):
        key = RequestKey.of("DeleteAssignment", request)
        await requests.once(self.store.sessions, key, lambda: self.store.delete_assignment(request.assignment_id, key))
        return admin_pb2.DeleteAssignmentResponse()

    async def RegisterAnchor(self, request: admin_pb2.RegisterAnchorRequest, context: grpc.aio.ServicerContext):
        key = RequestKey.of("RegisterAnchor", request)
        registered = await requests.once(
            self.store.sessions,
            key,
            lambda: self.store.register_anchor(
                request.assignment_id, request.label, request.grade, request.storage_id, key
            ),
        )
        if registered is None:  # registered by this same request before
            row, created = await self.store.get_anchor(request.assignment_id, request.label), False
        else:
            row, created = registered
        return admin_pb2.RegisterAnchorResponse(anchor=anchor_message(row), created=created)

    async def ListAnchors(self, request: admin_pb2.ListAnchorsRequest, context: grpc.aio.ServicerContext):
        rows = await self.store.list_anchors(request.assignment_id)
        return admin_pb2.ListAnchorsResponse(anchors=[anchor_message(r) for r in rows])

    async def DeleteAnchor(self, request: admin_pb2.DeleteAnchorRequest, context: grpc.aio.ServicerContext):
        key = RequestKey.of("DeleteAnchor", request)
        await requests.once(
            self.store.sessions, key, lambda: self.store.delete_anchor(request.assignment_id, request.label, key)
        )
        return admin_pb2.DeleteAnchorResponse()

    async def ListGradeScales(self, request: admin_pb2.ListGradeScalesRequest, context: grpc.aio.ServicerContext):
        return admin_pb2.ListGradeScalesResponse(grade_scales=[scale_message(SCALES[k]) for k in sorted(SCALES)])

    async def GetGradeScale(self, request: admin_pb2.GetGradeScaleRequest, context: grpc.aio.ServicerContext):
        return admin_pb2.GetGradeScaleResponse(grade_scale=scale_message(SCALES[known_scale(request.key, "key")]))
