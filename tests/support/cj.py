"""Building CJ requests in tests: upload texts, create assignments, register anchors, submit."""

from __future__ import annotations

import uuid

from huleedu.cj.v1 import admin_pb2, assessment_pb2
from huleedu.common.v1 import common_pb2
from huleedu.content.v1 import content_pb2


async def store_texts(content_stub, texts: list[str], kind: int = common_pb2.CONTENT_KIND_ESSAY_TEXT) -> list[str]:
    response = await content_stub.BatchUpload(
        content_pb2.BatchUploadRequest(
            items=[content_pb2.BatchUploadItem(kind=kind, content_type="text/plain", content=t.encode()) for t in texts]
        )
    )
    return [r.storage_id for r in response.results]


async def create_assignment(
    mesh,
    assignment_id: str = "eng5-test",
    scale: str = "eng5_np_legacy_9_step",
    prompt: str = "Write about a place you love.",
):
    (prompt_id,) = await store_texts(mesh.content, [prompt], common_pb2.CONTENT_KIND_STUDENT_PROMPT)
    response = await mesh.admin.CreateAssignment(
        admin_pb2.CreateAssignmentRequest(
            request_id=str(uuid.uuid4()), assignment_id=assignment_id, grade_scale=scale, course_code="ENG5",
            instructions="Judge content, structure and language.", student_prompt_storage_id=prompt_id,
        )
    )  # fmt: skip
    return response.assignment


async def register_anchor(mesh, assignment_id: str, label: str, grade: str, text: str):
    (storage_id,) = await store_texts(mesh.content, [text], common_pb2.CONTENT_KIND_ANCHOR_ESSAY)
    return await mesh.admin.RegisterAnchor(
        admin_pb2.RegisterAnchorRequest(
            request_id=str(uuid.uuid4()), assignment_id=assignment_id, label=label, grade=grade, storage_id=storage_id
        )
    )


def submit_request(storage_ids: list[str], **fields) -> assessment_pb2.SubmitBatchRequest:
    return assessment_pb2.SubmitBatchRequest(
        request_id=fields.pop("request_id", str(uuid.uuid4())),
        batch_label=fields.pop("batch_label", "test batch"),
        essays=[common_pb2.EssayRef(essay_id=f"s{i:03d}", text_storage_id=s) for i, s in enumerate(storage_ids)],
        **fields,
    )


async def watch_to_end(mesh, batch_id: str, timeout: float = 120):
    import asyncio

    last = None
    async with asyncio.timeout(timeout):
        async for update in mesh.assessment.WatchBatch(assessment_pb2.WatchBatchRequest(batch_id=batch_id)):
            last = update.batch
    return last


async def wait_until_done(stub, batch_id: str, comparisons: int, timeout: float = 30) -> None:
    """Poll a batch (possibly served by another process) until that many comparisons are answered."""
    import asyncio

    async with asyncio.timeout(timeout):
        while (  # noqa: ASYNC110 - polling another process
            await stub.GetBatch(assessment_pb2.GetBatchRequest(batch_id=batch_id))
        ).batch.progress.comparisons_done < comparisons:
            await asyncio.sleep(0.05)
