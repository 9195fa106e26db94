"""The CJ Service accepts only storage ids of intact content of the right kind, and no NUL in any
string it would store; on SQLite and PostgreSQL, through real Content and CJ servers."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import grpc
import pytest
from huleedu.cj.v1 import admin_pb2
from huleedu.common.v1 import common_pb2

from tests.support.cj import create_assignment, register_anchor, store_texts, submit_request
from tests.support.grpc_client import error_reason, field_violations

ESSAYS = [f"Essay number {i}, about rivers and the towns beside them." for i in range(3)]


def prompt_ref(storage_id: str) -> common_pb2.StorageReference:
    return common_pb2.StorageReference(kind=common_pb2.CONTENT_KIND_STUDENT_PROMPT, storage_id=storage_id)


async def batch_count(mesh) -> int:
    from huleedu.cj.v1 import assessment_pb2

    return len((await mesh.assessment.ListBatches(assessment_pb2.ListBatchesRequest())).batches)


@pytest.mark.parametrize("how", ["flipped byte", "deleted"])
async def test_submit_refuses_damaged_essays_and_prompts_naming_them(mesh, how: str) -> None:
    from tests.support.blobs import damage

    ids = await store_texts(mesh.content, ESSAYS)
    (prompt_id,) = await store_texts(mesh.content, ["Write about a river."], common_pb2.CONTENT_KIND_STUDENT_PROMPT)
    await damage(mesh.content_app, ids[1], how)
    with pytest.raises(grpc.aio.AioRpcError) as essay:
        await mesh.assessment.SubmitBatch(submit_request(ids))
    assert essay.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "essay s001" in essay.value.details() and ids[1] in essay.value.details()
    assert "upload the same file again" in essay.value.details()
    assert error_reason(essay.value) == "CONTENT_DAMAGED"
    assert "essays[1].text_storage_id" in field_violations(essay.value)

    (fresh,) = await store_texts(mesh.content, [ESSAYS[1]])  # the repair: same bytes, same id
    assert fresh == ids[1]
    await damage(mesh.content_app, prompt_id, how)
    with pytest.raises(grpc.aio.AioRpcError) as prompt:
        await mesh.assessment.SubmitBatch(submit_request(ids, student_prompt_ref=prompt_ref(prompt_id)))
    assert prompt.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "the student prompt" in prompt.value.details() and prompt_id in prompt.value.details()
    assert await batch_count(mesh) == 0  # nothing was persisted
    await store_texts(mesh.content, ["Write about a river."], common_pb2.CONTENT_KIND_STUDENT_PROMPT)
    accepted = await mesh.assessment.SubmitBatch(submit_request(ids, student_prompt_ref=prompt_ref(prompt_id)))
    assert len(accepted.batch.batch_id) == 32


async def test_references_must_point_at_content_of_their_kind(mesh) -> None:
    ids = await store_texts(mesh.content, ESSAYS)
    with pytest.raises(grpc.aio.AioRpcError) as prompt:  # an essay's blob as the prompt
        await mesh.assessment.SubmitBatch(submit_request(ids, student_prompt_ref=prompt_ref(ids[0])))
    assert prompt.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "stored as a essay text, not as a student prompt" in prompt.value.details()
    assert "student_prompt_ref.storage_id" in field_violations(prompt.value)
    (rubric_id,) = await store_texts(mesh.content, ["Judge the ideas first."], common_pb2.CONTENT_KIND_JUDGE_RUBRIC)
    with pytest.raises(grpc.aio.AioRpcError) as essay:  # a rubric as an essay
        await mesh.assessment.SubmitBatch(submit_request([ids[0], rubric_id]))
    assert "essay s001" in essay.value.details() and "judge rubric" in essay.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as assignment:  # an essay as the assignment's prompt
        await mesh.admin.CreateAssignment(
            admin_pb2.CreateAssignmentRequest(request_id=str(uuid.uuid4()), assignment_id="a1",
                                              grade_scale="swedish_8_anchor", student_prompt_storage_id=ids[0])
        )  # fmt: skip
    assert assignment.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "student_prompt_storage_id" in field_violations(assignment.value)
    await create_assignment(mesh, "a2", "swedish_8_anchor")
    with pytest.raises(grpc.aio.AioRpcError) as anchor:  # a prompt as an anchor essay
        await mesh.admin.RegisterAnchor(
            admin_pb2.RegisterAnchorRequest(request_id=str(uuid.uuid4()), assignment_id="a2", label="A1", grade="A",
                                            storage_id=(await create_assignment(mesh, "a3")).student_prompt_storage_id)
        )  # fmt: skip
    assert anchor.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "anchor A1" in anchor.value.details()
    # An essay's text registered as an anchor is fine: both kinds are essays.
    await register_anchor(mesh, "a2", "B1", "B", ESSAYS[2])


async def test_nul_in_strings_is_invalid_argument_and_nothing_is_stored(mesh) -> None:
    ids = await store_texts(mesh.content, ESSAYS)
    refusals = [
        mesh.assessment.SubmitBatch(submit_request(ids, batch_label="label\x00")),
        mesh.assessment.SubmitBatch(submit_request(ids, course_code="ENG\x005", user_id="ada")),
        mesh.admin.CreateAssignment(
            admin_pb2.CreateAssignmentRequest(request_id=str(uuid.uuid4()), assignment_id="n1",
                                              grade_scale="swedish_8_anchor", instructions="Judge\x00 this.")
        ),
    ]  # fmt: skip
    fields = ["batch_label", "course_code", "instructions"]
    for call, field in zip(refusals, fields, strict=True):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(refused.value)
    assert await batch_count(mesh) == 0
    listed = await mesh.admin.ListAssignments(admin_pb2.ListAssignmentsRequest())
    assert list(listed.assignments) == []


async def test_a_prompt_stored_with_nul_before_the_rule_is_refused_not_internal(mesh) -> None:
    """Content stored before texts were checked may hold NUL; no database can store it as text."""
    from content_svc.store import Description

    ids = await store_texts(mesh.content, ESSAYS)
    store = mesh.content_app.store
    old = "ab" * 16
    text = b"Write about\x00 a river."
    await store.blobs.write_small({old: text})
    description = Description(kind="CONTENT_KIND_STUDENT_PROMPT", content_type="text/plain")
    await store._insert([store._row(old, hashlib.sha256(text).hexdigest(), len(text), description, "")])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.assessment.SubmitBatch(submit_request(ids, student_prompt_ref=prompt_ref(old)))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "NUL" in refused.value.details()
    assert await batch_count(mesh) == 0


async def test_a_text_damaged_during_a_batch_fails_only_itself(mesh) -> None:
    """The workflow fetches texts a hundred per BatchGet; one damaged text must not take the others down."""
    from cj_svc.content_client import ContentClient
    from cj_svc.workflow.judging import Texts
    from mesh_server import errors
    from tests.support.blobs import damage

    texts = [f"Essay {i} on bridges and the people who build them." for i in range(150)]
    ids = await store_texts(mesh.content, texts)
    await damage(mesh.content_app, ids[42], "flipped byte")
    client = ContentClient(mesh.content_app.address)
    fetching = Texts(client, ids)
    try:
        results = await asyncio.gather(*(fetching.get(i) for i in ids), return_exceptions=True)
    finally:
        fetching.close()
        await client.close()
    assert isinstance(results[42], errors.DataLoss) and results[42].error_code == "CONTENT_DAMAGED"
    assert [r for i, r in enumerate(results) if i != 42] == [t for i, t in enumerate(texts) if i != 42]


async def test_an_essay_longer_than_the_cj_service_reads_is_refused_at_submit(sqlite_url, tmp_path) -> None:
    """A Content Service may take texts larger than Get answers (--max-text-bytes); the CJ Service
    refuses them at submit, naming the essay, instead of failing them later."""
    from huleedu.cj.v1 import assessment_pb2_grpc
    from huleedu.content.v1 import content_pb2_grpc

    from tests.conftest import start_cj, start_content
    from tests.support.content import upload
    from tests.support.grpc_client import channel

    content = await start_content(sqlite_url, tmp_path / "blobs", max_text_bytes=6 * 1024 * 1024)
    cj = await start_cj(f"sqlite:///{tmp_path / 'cj.db'}", content.address, judge_provider="simulated")
    try:
        async with channel(content.address) as content_channel, channel(cj.address) as cj_channel:
            content_stub = content_pb2_grpc.ContentServiceStub(content_channel)
            (short,) = await store_texts(content_stub, ["short"])
            long = await upload(content_stub, b"long " * 1_000_000, chunk=1024 * 1024)
            ids = [short, long.storage_id]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await assessment_pb2_grpc.AssessmentServiceStub(cj_channel).SubmitBatch(submit_request(ids))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "essay s001" in refused.value.details() and "5000000 bytes" in refused.value.details()
        assert "essays[1].text_storage_id" in field_violations(refused.value)
    finally:
        await cj.stop()
        await content.stop()


async def test_a_judge_the_service_cannot_use_is_refused_before_any_batch_exists(mesh, tmp_path, monkeypatch) -> None:
    """The hosted APIs need a key: without one, SubmitBatch says so instead of failing every comparison."""
    from huleedu.cj.v1 import assessment_pb2

    from tests.runner.test_runner_cli import essays_folder, runner

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ids = await store_texts(mesh.content, ESSAYS)
    request = submit_request(ids, judge=assessment_pb2.JudgeConfig(provider=assessment_pb2.JUDGE_PROVIDER_OPENAI))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.assessment.SubmitBatch(request)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "OPENAI_API_KEY is not set" in refused.value.details()
    assert error_reason(refused.value) == "LLM_CONFIGURATION_ERROR"
    assert "judge.provider" in field_violations(refused.value)
    assert await batch_count(mesh) == 0
    # The runner exits 2 (a refused request) with that message, and nothing was submitted.
    result = await runner(mesh, "run", str(essays_folder(tmp_path, n=3)), "--provider", "openai",
                          "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert result.code == 2, result.output
    assert "OPENAI_API_KEY" in result.output and "Traceback" not in result.output
    assert await batch_count(mesh) == 0


async def test_essay_ids_must_be_unique_at_any_size_and_batches_past_9999_are_accepted(mesh) -> None:
    from huleedu.cj.v1 import assessment_pb2

    small = submit_request(await store_texts(mesh.content, ESSAYS))
    small.essays[2].essay_id = small.essays[0].essay_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.assessment.SubmitBatch(small)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "essays[0] and essays[2]" in field_violations(refused.value)["essays"]
    # Past the 9,999 that a CEL uniqueness rule allowed: distinct texts (so no essay is a duplicate).
    texts = [f"Essay {i}: rivers, towns and the bridges between them." for i in range(10_500)]
    ids: list[str] = []
    for start in range(0, len(texts), 1000):
        ids += await store_texts(mesh.content, texts[start : start + 1000])
    large = submit_request(ids)
    large.essays[10_400].essay_id = large.essays[3].essay_id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.assessment.SubmitBatch(large)
    assert "essays[3] and essays[10400]" in field_violations(refused.value)["essays"]
    assert await batch_count(mesh) == 0
    large.essays[10_400].essay_id = "s10400"
    accepted = await mesh.assessment.SubmitBatch(large, timeout=60)
    assert accepted.created and accepted.batch.essay_count == 10_500
    await mesh.assessment.CancelBatch(
        assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=accepted.batch.batch_id)
    )
