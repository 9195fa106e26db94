"""gRPC adapter of batches: huleedu.cj.v1.AssessmentService."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import grpc
from huleedu.cj.v1 import assessment_pb2, assessment_pb2_grpc
from huleedu.common.v1 import common_pb2

from cj_svc import requests
from cj_svc.batches import EVERYONE, Batches, BatchRequest, BatchView, Caller, EssayInput, Results
from cj_svc.engine.diagnostics import anchor_ranks
from cj_svc.engine.scales import get_scale
from cj_svc.judges.factory import BATCH_API_PROVIDERS
from cj_svc.models import Comparison
from cj_svc.requests import RequestKey
from cj_svc.vocabulary import FINAL_STATES, BatchState, JudgeMode, Winner
from cj_svc.workflow import Workflow
from mesh_common import correlation
from mesh_common.error_codes import ErrorCode
from mesh_server import errors, interceptor, status
from mesh_server.auth import owner_of
from mesh_server.convert import timestamp

# Looking again at least this often sees changes made by another replica.
WATCH_POLL_SECONDS = 0.5


def add_diagnostics(
    message: assessment_pb2.BatchResults, stored: str | None, grade_scale: str | None, note: str
) -> None:
    """The anchor diagnostics and warnings kept with the results (workflow.finalize.StoredGrades), into the answer."""
    if stored is None:
        if grade_scale:  # an assignment's batch without grades: that is the first thing to say
            message.warnings.add(
                code=assessment_pb2.RESULT_WARNING_CODE_GRADES_NOT_PROJECTED, message=f"no grades: {note}"
            )
        return
    found = json.loads(stored)
    diagnostics = message.anchor_diagnostics
    if found["kendall_tau"] is not None:
        diagnostics.kendall_tau = found["kendall_tau"]
    for higher, lower in found["out_of_order"]:
        diagnostics.out_of_order.add(higher_grade_essay_id=higher, lower_grade_essay_id=lower)
    diagnostics.without_wins.extend(found["without_wins"])
    diagnostics.without_losses.extend(found["without_losses"])
    diagnostics.students_above_anchors = found["students_above"]
    diagnostics.students_below_anchors = found["students_below"]
    if found["anchor_win_share"] is not None:
        diagnostics.anchor_win_share = found["anchor_win_share"]
    for code, text in found["warnings"]:
        message.warnings.add(code=assessment_pb2.ResultWarningCode.Value(f"RESULT_WARNING_CODE_{code}"), message=text)
    message.grades_reliable = found["reliable"]


# The contract's enums for the service's values: one table each, so that a value missing from a
# table fails loudly (KeyError) instead of going out as UNSPECIFIED.
BATCH_STATES = {
    BatchState.PENDING: assessment_pb2.BATCH_STATE_PENDING,
    BatchState.RUNNING: assessment_pb2.BATCH_STATE_RUNNING,
    BatchState.FINALIZING: assessment_pb2.BATCH_STATE_FINALIZING,
    BatchState.COMPLETED: assessment_pb2.BATCH_STATE_COMPLETED,
    BatchState.FAILED: assessment_pb2.BATCH_STATE_FAILED,
    BatchState.CANCELLED: assessment_pb2.BATCH_STATE_CANCELLED,
}
STATES_BY_VALUE = {value: state for state, value in BATCH_STATES.items()}
# The contract's judge providers, by the names the judges (and cj-svc --judge-provider) use.
JUDGE_PROVIDERS = {
    assessment_pb2.JUDGE_PROVIDER_HEURISTIC: "heuristic",
    assessment_pb2.JUDGE_PROVIDER_SIMULATED: "simulated",
    assessment_pb2.JUDGE_PROVIDER_OPENAI: "openai",
    assessment_pb2.JUDGE_PROVIDER_ANTHROPIC: "anthropic",
}
# The contract's judge modes, by the names batches store.
JUDGE_MODES = {assessment_pb2.JUDGE_MODE_DIRECT: JudgeMode.DIRECT, assessment_pb2.JUDGE_MODE_BATCH: JudgeMode.BATCH}
WINNERS = {Winner.ESSAY_A: assessment_pb2.WINNER_ESSAY_A, Winner.ESSAY_B: assessment_pb2.WINNER_ESSAY_B}
FINAL_STATE_VALUES = frozenset(BATCH_STATES[state] for state in FINAL_STATES)


def state_value(state: str) -> int:
    return BATCH_STATES[BatchState(state)]


def error_code_value(code: str | None) -> int:
    return status.error_code_value(code) if code else common_pb2.ERROR_CODE_UNSPECIFIED


def batch_message(view: BatchView) -> assessment_pb2.Batch:
    b = view.batch
    return assessment_pb2.Batch(
        batch_id=b.batch_id,
        batch_label=b.batch_label,
        state=state_value(b.state),
        assignment_id=b.assignment_id or "",
        essay_count=view.essay_count,
        anchor_count=view.anchor_count,
        progress=assessment_pb2.BatchProgress(
            comparisons_done=b.comparisons_done,
            comparisons_failed=b.comparisons_failed,
            comparison_budget=b.comparison_budget,
            wave=b.wave,
            current_ssr=b.current_ssr,
            cost_usd=b.cost_usd,
            max_cost_usd=b.max_cost_usd,
        ),
        state_reason=b.state_reason,
        request_id=b.request_id,
        correlation_id=b.correlation_id,
        user_id=b.user_id,
        create_time=timestamp(b.created_at),
        update_time=timestamp(b.updated_at),
    )


def comparison_message(row: Comparison) -> assessment_pb2.Comparison:
    winner = WINNERS[Winner(row.winner)] if row.winner else assessment_pb2.WINNER_UNSPECIFIED
    return assessment_pb2.Comparison(
        comparison_id=row.comparison_id,
        essay_a_id=row.essay_a_id,
        essay_b_id=row.essay_b_id,
        wave=row.wave,
        winner=winner,
        confidence=row.confidence or 0,
        justification=row.justification or "",
        error_code=error_code_value(row.error_code),
        error_message=row.error_message or "",
        attempts=row.attempts,
        correlation_id=row.request_correlation_id,
        create_time=timestamp(row.created_at),
        complete_time=timestamp(row.completed_at),
        cached=row.cached,
        tokens_in=row.tokens_in or 0,
        tokens_out=row.tokens_out or 0,
        tokens_cached=row.tokens_cached or 0,
        cost_usd=row.cost_usd,
    )


def results_message(results: Results, model: str) -> assessment_pb2.BatchResults:
    """The results of a batch whose judge asked `model`."""
    batch = results.batch.batch
    message = assessment_pb2.BatchResults(batch=batch_message(results.batch), grade_scale=batch.grade_scale or "")
    anchors = [e for e in results.essays if e.is_anchor]
    expected: dict[str, int] = {}
    actual: dict[str, int] = {}
    if anchors and batch.grade_scale:
        scale = get_scale(batch.grade_scale)
        expected, actual = anchor_ranks([(e.essay_id, scale.index(e.known_grade), e.score or 0.0) for e in anchors])
    for essay in sorted(results.essays, key=lambda e: (e.rank or 10**9, -(e.score or 0.0))):
        item = message.essays.add(
            essay_id=essay.essay_id,
            display_name=essay.display_name,
            is_anchor=essay.is_anchor,
            score=essay.score or 0.0,
            standard_error=essay.standard_error or 0.0,
            score_low_95=essay.score_low_95 or 0.0,
            score_high_95=essay.score_high_95 or 0.0,
            rank=essay.rank or 0,
            wins=essay.wins,
            losses=essay.losses,
            comparisons=essay.wins + essay.losses,
            known_grade=essay.known_grade or "",
            expected_anchor_rank=expected.get(essay.essay_id, 0),
            actual_anchor_rank=actual.get(essay.essay_id, 0),
        )
        projection = results.projections.get(essay.essay_id)
        if projection is not None and not essay.is_anchor:
            item.projection.grade = projection.grade
            item.projection.confidence_score = projection.confidence
            item.projection.confidence_label = assessment_pb2.ConfidenceLabel.Value(
                f"CONFIDENCE_LABEL_{projection.confidence_label}"
            )
            for grade, probability in json.loads(projection.probabilities).items():
                item.projection.probabilities.add(grade=grade, probability=probability)
    if batch.grade_scale:
        message.grade_ladder.extend(get_scale(batch.grade_scale).ladder)
    if results.result is not None:
        r = results.result
        for grade, lower, upper in json.loads(r.grade_bands or "[]"):
            message.grade_bands.add(grade=grade, lower=lower, upper=upper)
        message.scale_separation_reliability = r.scale_separation_reliability
        message.position_bias = r.position_bias
        message.position_bias_standard_error = r.position_bias_se
        if r.self_consistency is not None:
            message.self_consistency = r.self_consistency
        message.grades_projected = r.grades_projected
        message.projection_note = r.projection_note
        add_diagnostics(message, r.diagnostics, batch.grade_scale, r.projection_note)
    else:
        message.projection_note = f"batch is {batch.state}; grades are projected when it completes"
    for code, count in sorted(results.failures.items(), key=lambda item: str(item[0])):
        message.failures.add(error_code=error_code_value(code), count=count)
    usage = results.usage
    message.judge_usage.CopyFrom(
        assessment_pb2.JudgeUsage(
            provider=batch.judge_provider, model=model, calls=int(usage["calls"]),
            tokens_in=int(usage["tokens_in"]), tokens_out=int(usage["tokens_out"]), mean_latency_ms=float(usage["latency_ms"]),
            cached_answers=int(usage["cached_answers"]), tokens_cached=int(usage["tokens_cached"]),
            tokens_cache_written=int(usage["tokens_cache_written"]), cost_usd=batch.cost_usd,
        )
    )  # fmt: skip
    return message


def caller() -> Caller:
    """Whose batches this RPC may see and change (everyone's on an open mesh)."""
    principal = interceptor.principal.get()
    if principal is None or not principal.token_hash:
        return EVERYONE
    return Caller(
        owner=owner_of(principal),
        sees_all=not principal.isolated,
        may_cancel_others="admin" in principal.roles,
    )


class AssessmentService(assessment_pb2_grpc.AssessmentServiceServicer):
    def __init__(self, workflow: Workflow, batches: Batches) -> None:
        self.workflow = workflow
        self.batches = batches

    async def SubmitBatch(self, request: assessment_pb2.SubmitBatchRequest, context: grpc.aio.ServicerContext):
        judge, stop = request.judge, request.grade_stop
        principal = interceptor.principal.get()
        provider = JUDGE_PROVIDERS[judge.provider] if judge.provider else ""
        judged_by = provider or self.workflow.settings.judge_provider  # the provider the batch will use
        problem = self.workflow.judges.unusable(judged_by)
        if problem:
            raise errors.FailedPrecondition(
                problem, field="judge.provider", error_code=ErrorCode.LLM_CONFIGURATION_ERROR
            )
        mode = JUDGE_MODES.get(judge.mode, JudgeMode.DIRECT)
        if mode == JudgeMode.BATCH and judged_by not in BATCH_API_PROVIDERS:
            raise errors.FailedPrecondition(
                f"JUDGE_MODE_BATCH needs a judge with a batch API ({', '.join(sorted(BATCH_API_PROVIDERS))}), not "
                f"{judged_by!r}; choose one of them, or JUDGE_MODE_DIRECT",
                field="judge.mode",
            )
        if request.HasField("max_cost_usd"):
            unpriced = self.workflow.judging.unpriced(judged_by, judge.model)
            if unpriced:
                raise errors.InvalidArgument(unpriced, field="max_cost_usd")
        view, created = await self.batches.submit(
            BatchRequest(
                # One UUID, however it is spelled (AIP-155): the contract checked it is one.
                request_id=str(uuid.UUID(request.request_id)),
                fingerprint=requests.fingerprint(request),
                owner=owner_of(principal),
                batch_label=request.batch_label,
                essays=[EssayInput(e.essay_id, e.text_storage_id, e.display_name) for e in request.essays],
                prompt_storage_id=request.student_prompt_ref.storage_id
                if request.HasField("student_prompt_ref")
                else "",
                assignment_id=request.assignment_id,
                language=request.language,
                course_code=request.course_code,
                user_id=principal.user_id if principal is not None else request.user_id,
                org_id=request.org_id,
                judge_provider=provider,
                judge_model=judge.model,
                judge_temperature=judge.temperature if judge.HasField("temperature") else None,
                judge_max_tokens=judge.max_tokens if judge.HasField("max_tokens") else None,
                judge_system_prompt=judge.system_prompt,
                judge_mode=mode,
                comparison_budget=request.comparison_budget if request.HasField("comparison_budget") else None,
                seed=request.seed if request.HasField("seed") else None,
                grade_stop_share=stop.share if stop.HasField("share") else None,
                grade_stop_probability=stop.probability if stop.HasField("probability") else None,
                grade_stop_off=stop.off,
                max_cost_usd=request.max_cost_usd if request.HasField("max_cost_usd") else None,
                no_cache=request.no_cache,
                target_reliability=request.target_reliability if request.HasField("target_reliability") else None,
                correlation_id=correlation.current.get(),
                submitted_by=principal,
            )
        )
        self.workflow.launch(view.batch.batch_id)
        return assessment_pb2.SubmitBatchResponse(batch=batch_message(view), created=created)

    async def GetBatch(self, request: assessment_pb2.GetBatchRequest, context: grpc.aio.ServicerContext):
        return assessment_pb2.GetBatchResponse(batch=batch_message(await self.batches.get(request.batch_id, caller())))

    async def ListBatches(self, request: assessment_pb2.ListBatchesRequest, context: grpc.aio.ServicerContext):
        state = STATES_BY_VALUE[request.state] if request.state else None
        views, token = await self.batches.list_batches(request.page_size, request.page_token, state, caller())
        return assessment_pb2.ListBatchesResponse(batches=[batch_message(v) for v in views], next_page_token=token)

    async def WatchBatch(
        self, request: assessment_pb2.WatchBatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[assessment_pb2.WatchBatchResponse]:
        last = None
        watcher = caller()
        while True:
            message = batch_message(await self.batches.get(request.batch_id, watcher))
            snapshot = (message.state, message.progress.SerializeToString(), message.state_reason)
            if snapshot != last:
                yield assessment_pb2.WatchBatchResponse(batch=message)
                last = snapshot
            if message.state in FINAL_STATE_VALUES:
                return
            await self.workflow.wait_for_change(request.batch_id, WATCH_POLL_SECONDS)
            if self.workflow.closing:
                raise errors.Unavailable(
                    "this CJ Service is stopping; watch the batch again (it goes on after the restart, or on "
                    "another replica)"
                )

    async def GetBatchResults(self, request: assessment_pb2.GetBatchResultsRequest, context: grpc.aio.ServicerContext):
        results = await self.batches.results(request.batch_id, caller())
        batch = results.batch.batch
        model = self.workflow.judges.model(batch.judge_provider, batch.judge_model) or results.answered_by
        return assessment_pb2.GetBatchResultsResponse(results=results_message(results, model))

    async def ListComparisons(self, request: assessment_pb2.ListComparisonsRequest, context: grpc.aio.ServicerContext):
        rows, token = await self.batches.comparisons(request.batch_id, request.page_size, request.page_token, caller())
        return assessment_pb2.ListComparisonsResponse(
            comparisons=[comparison_message(r) for r in rows], next_page_token=token
        )

    async def CancelBatch(self, request: assessment_pb2.CancelBatchRequest, context: grpc.aio.ServicerContext):
        key = RequestKey.of("CancelBatch", request)
        view = await requests.once(
            self.batches.sessions, key, lambda: self.workflow.cancel(request.batch_id, request.reason, caller(), key)
        )
        if view is None:  # cancelled by this same request before
            view = await self.batches.get(request.batch_id, caller())
        return assessment_pb2.CancelBatchResponse(batch=batch_message(view))
