"""Valid example messages that tests then break one field at a time."""

from __future__ import annotations

import uuid

from huleedu.cj.v1 import assessment_pb2
from huleedu.common.v1 import common_pb2

STORAGE_ID = "0123456789abcdef0123456789abcdef"
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def submit_batch_request(n_essays: int = 3) -> assessment_pb2.SubmitBatchRequest:
    return assessment_pb2.SubmitBatchRequest(
        request_id=str(uuid.uuid4()),
        batch_label="Year 9 persuasive essays",
        essays=[
            common_pb2.EssayRef(essay_id=f"student_{i:03d}", text_storage_id=f"{i:032x}", display_name=f"S{i}")
            for i in range(n_essays)
        ],
        student_prompt_ref=common_pb2.StorageReference(
            kind=common_pb2.CONTENT_KIND_STUDENT_PROMPT, storage_id=STORAGE_ID, path_hint="prompt.md"
        ),
        assignment_id="eng5-2026-autumn",
        language="en",
        course_code="ENG5",
    )
