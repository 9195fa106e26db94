"""The assessment workflow through real Content and CJ servers, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import uuid

import grpc
import numpy as np
import pytest
from huleedu.cj.v1 import assessment_pb2
from huleedu.common.v1 import common_pb2
from scipy.stats import spearmanr

from tests.support.cj import create_assignment, register_anchor, store_texts, submit_request, watch_to_end
from tests.support.messages import SHA256

LEGACY = ["F+", "E-", "E+", "D-", "D+", "C-", "C+", "B", "A"]


def essay_text(i: int) -> str:
    return f"Student essay {i}. " + "Some words about the topic. " * (5 + i % 7)


async def scored_mesh(mesh, tmp_path, students: int = 24, **overrides):
    """Assignment with 9 anchors (one per grade) and student essays with known true scores."""
    rng = np.random.default_rng(7)
    truth = {f"s{i:03d}": float(s) for i, s in enumerate(rng.normal(0, 2.0, students))}
    texts = {essay_id: essay_text(i) for i, essay_id in enumerate(truth)}
    anchors = {grade: -4 + i for i, grade in enumerate(LEGACY)}
    anchor_texts = {grade: f"Anchor essay graded {grade}." for grade in LEGACY}
    scores = {hashlib.sha256(texts[e].encode()).hexdigest(): truth[e] for e in truth}
    scores |= {hashlib.sha256(anchor_texts[g].encode()).hexdigest(): float(anchors[g]) for g in LEGACY}
    scores_file = tmp_path / "true_scores.json"
    scores_file.write_text(json.dumps(scores))
    await mesh.restart_cj(judge_provider="simulated", simulated_scores_file=str(scores_file), **overrides)
    await create_assignment(mesh, "eng5-w")
    for i, grade in enumerate(LEGACY):
        await register_anchor(mesh, "eng5-w", f"anchor_{i}", grade, anchor_texts[grade])
    storage_ids = await store_texts(mesh.content, [texts[e] for e in truth])
    return truth, storage_ids


async def test_students_and_anchors_complete_with_grades(mesh, tmp_path) -> None:
    truth, storage_ids = await scored_mesh(mesh, tmp_path)
    submitted = await mesh.assessment.SubmitBatch(
        submit_request(storage_ids, assignment_id="eng5-w", comparison_budget=300)
    )
    assert submitted.created and submitted.batch.state == assessment_pb2.BATCH_STATE_PENDING
    assert submitted.batch.essay_count == 24 and submitted.batch.anchor_count == 9
    assert not submitted.batch.progress.HasField("current_ssr")  # no fit yet: unset, not 0
    final = await watch_to_end(mesh, submitted.batch.batch_id)
    assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason
    assert final.progress.HasField("current_ssr") and 0 < final.progress.current_ssr <= 1
    results = (
        await mesh.assessment.GetBatchResults(assessment_pb2.GetBatchResultsRequest(batch_id=final.batch_id))
    ).results
    students = [e for e in results.essays if not e.is_anchor]
    anchors = [e for e in results.essays if e.is_anchor]
    assert len(students) == 24 and len(anchors) == 9
    assert results.grades_projected
    for essay in students:
        assert essay.projection.grade in ["F", *LEGACY]
        assert abs(sum(p.probability for p in essay.projection.probabilities) - 1) < 1e-6
        assert essay.standard_error > 0
        # the sampled posterior's 95 % interval, served as is
        assert essay.score_low_95 < essay.score < essay.score_high_95
    rho = spearmanr([e.score for e in students], [truth[e.essay_id] for e in students]).statistic
    print(f"\nSpearman with the true scores: {rho:.3f}; SSR {results.scale_separation_reliability:.3f}; "
          f"position bias {results.position_bias:.2f}; comparisons {final.progress.comparisons_done}")  # fmt: skip
    assert rho > 0.75  # one batch that stops at its reliability target; bench/cj_efficiency.py measures quality
    assert {e.known_grade for e in anchors} == set(LEGACY)
    assert sorted(e.expected_anchor_rank for e in anchors) == list(range(1, 10))
    assert results.judge_usage.calls == final.progress.comparisons_done + final.progress.comparisons_failed
    assert sorted(e.rank for e in results.essays) == list(range(1, 34))


async def test_rate_limits_are_retried_to_completion(mesh, tmp_path) -> None:
    _, storage_ids = await scored_mesh(mesh, tmp_path, students=10, simulated_failure_rate=0.3)
    submitted = await mesh.assessment.SubmitBatch(
        submit_request(storage_ids, assignment_id="eng5-w", comparison_budget=60)
    )
    final = await watch_to_end(mesh, submitted.batch.batch_id)
    assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason
    page = await mesh.assessment.ListComparisons(
        assessment_pb2.ListComparisonsRequest(batch_id=final.batch_id, page_size=1000)
    )
    assert any(c.attempts > 1 for c in page.comparisons), "no comparison needed a retry"
    assert sum(c.winner != 0 for c in page.comparisons) == final.progress.comparisons_done


async def test_authentication_errors_fail_the_batch_and_store_codes_as_text(mesh, tmp_path) -> None:
    _, storage_ids = await scored_mesh(
        mesh, tmp_path, students=6, simulated_failure_rate=1.0, simulated_failure_code="AUTHENTICATION_ERROR"
    )
    submitted = await mesh.assessment.SubmitBatch(submit_request(storage_ids, assignment_id="eng5-w"))
    final = await watch_to_end(mesh, submitted.batch.batch_id)
    assert final.state == assessment_pb2.BATCH_STATE_FAILED
    assert "AUTHENTICATION_ERROR" in final.state_reason
    from sqlalchemy import text

    from mesh_server import database

    engine = database.create_engine(mesh.cj_database_url)
    try:
        async with engine.connect() as connection:
            stored = (
                await connection.execute(
                    text("SELECT DISTINCT error_code, attempts FROM comparisons WHERE batch_id = :b"),
                    {"b": final.batch_id},
                )
            ).all()
    finally:
        await engine.dispose()
    assert stored == [("AUTHENTICATION_ERROR", 1)]  # as text, and not retried
    page = await mesh.assessment.ListComparisons(assessment_pb2.ListComparisonsRequest(batch_id=final.batch_id))
    assert {c.error_code for c in page.comparisons} == {common_pb2.ERROR_CODE_AUTHENTICATION_ERROR}


async def test_submit_checks_before_storing_anything(mesh, tmp_path) -> None:
    storage_ids = await store_texts(mesh.content, ["one essay", "another essay"])
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await mesh.assessment.SubmitBatch(submit_request(storage_ids, assignment_id="no-such-assignment"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-assignment" in unknown.value.details() and "create-assignment" in unknown.value.details()
    checksum_prompt = submit_request(storage_ids)
    checksum_prompt.student_prompt_ref.kind = common_pb2.CONTENT_KIND_STUDENT_PROMPT
    checksum_prompt.student_prompt_ref.storage_id = SHA256
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await mesh.assessment.SubmitBatch(checksum_prompt)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    missing_prompt = submit_request(storage_ids)
    missing_prompt.student_prompt_ref.kind = common_pb2.CONTENT_KIND_STUDENT_PROMPT
    missing_prompt.student_prompt_ref.storage_id = "c" * 32
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await mesh.assessment.SubmitBatch(missing_prompt)
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "c" * 32 in missing.value.details()
    listed = await mesh.assessment.ListBatches(assessment_pb2.ListBatchesRequest())
    assert list(listed.batches) == []


async def test_same_request_id_same_batch_different_request_refused(mesh) -> None:
    storage_ids = await store_texts(mesh.content, ["first essay text", "second essay text", "third essay"])
    request = submit_request(storage_ids, comparison_budget=3)
    first = await mesh.assessment.SubmitBatch(request)
    again = await mesh.assessment.SubmitBatch(request)
    assert again.batch.batch_id == first.batch.batch_id and not again.created
    changed = submit_request(storage_ids, request_id=request.request_id, batch_label="another label")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.assessment.SubmitBatch(changed)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS and "request_id" in refused.value.details()
    final = await watch_to_end(mesh, first.batch.batch_id)
    assert final.state == assessment_pb2.BATCH_STATE_COMPLETED  # a guest run: ranking without grades
    results = (
        await mesh.assessment.GetBatchResults(assessment_pb2.GetBatchResultsRequest(batch_id=final.batch_id))
    ).results
    assert not results.grades_projected and "guest" in results.projection_note
    assert len(results.essays) == 3


async def test_cancel_stops_promptly(mesh, tmp_path) -> None:
    await mesh.restart_cj(judge_provider="simulated", simulated_latency_ms=200, batch_concurrency=2)
    storage_ids = await store_texts(mesh.content, [f"essay number {i}" for i in range(12)])
    submitted = await mesh.assessment.SubmitBatch(submit_request(storage_ids))
    await mesh.assessment.CancelBatch(
        assessment_pb2.CancelBatchRequest(
            request_id=submitted.batch.request_id, batch_id=submitted.batch.batch_id, reason="test"
        )
    )
    final = await watch_to_end(mesh, submitted.batch.batch_id, timeout=10)
    assert final.state == assessment_pb2.BATCH_STATE_CANCELLED and final.state_reason == "test"


async def test_page_tokens_are_checked_not_trusted(mesh) -> None:
    from huleedu.cj.v1 import admin_pb2

    storage_ids = await store_texts(mesh.content, [f"paged essay {i}" for i in range(5)])
    batches = [
        (await mesh.assessment.SubmitBatch(submit_request(storage_ids, comparison_budget=4))).batch for _ in range(2)
    ]
    finals = [await watch_to_end(mesh, b.batch_id) for b in batches]
    seen, token = [], ""
    while True:  # paging reaches every comparison once
        page = await mesh.assessment.ListComparisons(
            assessment_pb2.ListComparisonsRequest(batch_id=finals[0].batch_id, page_size=1, page_token=token)
        )
        seen += [c.comparison_id for c in page.comparisons]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == finals[0].progress.comparisons_done + finals[0].progress.comparisons_failed
    first = await mesh.assessment.ListComparisons(
        assessment_pb2.ListComparisonsRequest(batch_id=finals[0].batch_id, page_size=1)
    )
    batches_page = await mesh.assessment.ListBatches(assessment_pb2.ListBatchesRequest(page_size=1))
    refusals = {
        "garbage": [
            mesh.assessment.ListComparisons(
                assessment_pb2.ListComparisonsRequest(batch_id=finals[0].batch_id, page_token=bad)
            )
            for bad in ("zzzz", "!", seen[0])
        ]
        + [mesh.assessment.ListBatches(assessment_pb2.ListBatchesRequest(page_token=bad)) for bad in ("zzzz", "!")]
        + [mesh.admin.ListAssignments(admin_pb2.ListAssignmentsRequest(page_token=bad)) for bad in ("zzzz", "!")],
        "another list's": [
            mesh.assessment.ListComparisons(  # the first batch's token on the second batch
                assessment_pb2.ListComparisonsRequest(batch_id=finals[1].batch_id, page_token=first.next_page_token)
            ),
            mesh.admin.ListAssignments(admin_pb2.ListAssignmentsRequest(page_token=batches_page.next_page_token)),
        ],
    }
    for what, calls in refusals.items():
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
            assert "page_token" in refused.value.details(), what


@pytest.mark.parametrize("off", [False, True], ids=["grade stop on", "grade stop off"])
async def test_a_batch_stops_once_its_grades_are_decided_unless_asked_not_to(mesh, tmp_path, off: bool) -> None:
    _, storage_ids = await scored_mesh(mesh, tmp_path)
    stop = assessment_pb2.GradeStop(share=0.2, probability=0.5, off=off)
    submitted = await mesh.assessment.SubmitBatch(
        submit_request(storage_ids, assignment_id="eng5-w", comparison_budget=2000, grade_stop=stop)
    )
    final = await watch_to_end(mesh, submitted.batch.batch_id)
    assert final.state == assessment_pb2.BATCH_STATE_COMPLETED, final.state_reason
    if off:
        assert "grades_decided" not in final.state_reason
    else:
        assert final.state_reason == "stopped: grades_decided"
        results = (
            await mesh.assessment.GetBatchResults(assessment_pb2.GetBatchResultsRequest(batch_id=final.batch_id))
        ).results
        decided = [e for e in results.essays if not e.is_anchor and e.projection.confidence_score >= 0.5]
        assert len(decided) >= 0.2 * 24  # what the rule saw at its last wave, as served


async def test_cancel_sent_again_answers_and_its_request_id_is_not_reused(mesh) -> None:
    await mesh.restart_cj(judge_provider="simulated", simulated_latency_ms=200, batch_concurrency=1)
    storage_ids = await store_texts(mesh.content, [essay_text(i) for i in range(4)])
    first, second = [
        (await mesh.assessment.SubmitBatch(submit_request(storage_ids, comparison_budget=100))).batch.batch_id
        for _ in range(2)
    ]
    cancel = assessment_pb2.CancelBatchRequest(request_id=str(uuid.uuid4()), batch_id=first, reason="by mistake")
    assert (await mesh.assessment.CancelBatch(cancel)).batch.state == assessment_pb2.BATCH_STATE_CANCELLED
    again = await mesh.assessment.CancelBatch(cancel)
    assert again.batch.state == assessment_pb2.BATCH_STATE_CANCELLED and again.batch.state_reason == "by mistake"
    reused = assessment_pb2.CancelBatchRequest(request_id=cancel.request_id, batch_id=second)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.assessment.CancelBatch(reused)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in caught.value.details()
    got = (await mesh.assessment.GetBatch(assessment_pb2.GetBatchRequest(batch_id=second))).batch
    assert got.state != assessment_pb2.BATCH_STATE_CANCELLED  # the refused request changed nothing


async def test_a_batch_stops_at_its_own_reliability_target(mesh, tmp_path) -> None:
    texts = [f"essay {i} on the shore, " * (3 + i) for i in range(12)]
    truth = {hashlib.sha256(t.encode()).hexdigest(): -3.0 + 0.6 * i for i, t in enumerate(texts)}
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    await mesh.restart_cj(judge_provider="simulated", simulated_scores_file=str(tmp_path / "truth.json"))
    storage_ids = await store_texts(mesh.content, texts)
    finals = {}
    for target in (0.6, 0.95):
        request = submit_request(storage_ids, comparison_budget=400, seed=5, target_reliability=target)
        batch = (await mesh.assessment.SubmitBatch(request)).batch
        finals[target] = await watch_to_end(mesh, batch.batch_id)
    low, high = finals[0.6], finals[0.95]
    assert low.state_reason == "stopped: target_reliability" and low.progress.current_ssr >= 0.6
    assert high.progress.comparisons_done > low.progress.comparisons_done
    assert high.state_reason != "stopped: target_reliability" or high.progress.current_ssr >= 0.95
