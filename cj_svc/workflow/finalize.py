"""The end of a batch: the final fit, ranks, wins and losses, grades with their diagnostics, and
the results stored with FINALIZING -> COMPLETED in one transaction, so that it happens once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from cj_svc.batches import transition
from cj_svc.engine.bradley_terry import (
    Alpha,
    Comparisons,
    Fit,
    judge_position_bias,
    self_consistency,
)
from cj_svc.engine.diagnostics import Diagnostics
from cj_svc.engine.grading import Grades, decided_share, grade
from cj_svc.engine.population import final_fit
from cj_svc.engine.prior import PriorChoice
from cj_svc.engine.scales import get_scale
from cj_svc.models import Batch, BatchEssay, BatchResult, GradeProjection
from cj_svc.vocabulary import BatchState, ComparisonStatus
from cj_svc.workflow.offload import off_loop
from cj_svc.workflow.store import RunStore, answered, observe_duration, score_rows
from mesh_server import database


@dataclass
class StoredGrades:
    projections: list[GradeProjection]
    note: str  # why there are none, when there are none
    bands: list[tuple[str, float | None, float | None]]
    diagnostics: Diagnostics | None  # None: a guest run, or no anchors to diagnose

    def stored_diagnostics(self) -> str | None:
        """The JSON kept with the results: the anchor diagnostics, warnings and whether grades are reliable."""
        if self.diagnostics is None:
            return None
        return json.dumps(
            {**asdict(self.diagnostics), "reliable": bool(self.projections) and self.diagnostics.reliable}
        )


@dataclass
class Final:
    fit: Fit
    rank: NDArray[np.int64]
    wins: NDArray[np.int64]
    losses: NDArray[np.int64]
    grades: StoredGrades
    position_bias: float
    position_bias_se: float


def grades_of(batch: Batch, essays: list[BatchEssay], result: Fit, data: Comparisons) -> Grades:
    """What `grading.grade` finds for a batch with a grade scale, from a fit of its essays."""
    return grade(
        get_scale(batch.grade_scale or ""),
        [e.essay_id for e in essays],
        [(e.known_grade or "") if e.is_anchor else None for e in essays],
        result,
        data,
    )


def decided(
    batch: Batch, essays: list[BatchEssay], data: Comparisons, alpha: Alpha, probability: float
) -> float | None:
    """Share of the students whose grade is decided at `probability` now (see stopping.py), from the
    fit the results would be served from if the batch ended here (`final_fit` with the final prior)."""
    return decided_share(grades_of(batch, essays, served_fit(essays, data, alpha), data), probability)


def served_fit(essays: list[BatchEssay], data: Comparisons, alpha: Alpha) -> Fit:
    """The fit a batch's results are served from: `final_fit` with the final prior."""
    return final_fit(len(essays), data, alpha, np.array([e.is_anchor for e in essays], bool))


def projections(batch: Batch, essays: list[BatchEssay], result: Fit, data: Comparisons) -> StoredGrades:
    """Students' grades as rows to store, with what `grading.grade` found (bands, diagnostics)."""
    if not batch.grade_scale:
        return StoredGrades([], "guest run: no assignment, so no grades are projected", [], None)
    found = grades_of(batch, essays, result, data)
    rows = [
        GradeProjection(
            batch_id=batch.batch_id, essay_id=essays[position].essay_id, grade=projection.grade,
            probabilities=json.dumps(projection.probabilities), confidence=projection.confidence,
            confidence_label=projection.label,
        )
        for position, projection in found.projections.items()
    ]  # fmt: skip
    return StoredGrades(rows, found.note, found.bands, found.diagnostics)


def final_numbers(batch: Batch, essays: list[BatchEssay], data: Comparisons, alpha: Alpha) -> Final:
    """The final fit and all that follows from it (CPU-heavy: run off the event loop)."""
    result = served_fit(essays, data, alpha)
    order = np.argsort(-result.scores, kind="stable")
    rank = np.empty(len(essays), np.int64)
    rank[order] = np.arange(1, len(essays) + 1)
    position_bias, position_bias_se = judge_position_bias(result, data)
    return Final(
        grades=projections(batch, essays, result, data),
        fit=result,
        rank=rank,
        wins=np.bincount(np.where(data.first_won, data.first, data.second), minlength=len(essays)),
        losses=np.bincount(np.where(data.first_won, data.second, data.first), minlength=len(essays)),
        position_bias=position_bias,
        position_bias_se=position_bias_se,
    )


async def finalize(store: RunStore, batch_id: str, why: str = "", alpha: Alpha | None = None) -> None:
    """Final scores, ranks and grades; `alpha` is the final prior of the run's choice, as the fit
    takes it (`PriorChoice.final_precision`; after a restart, the choice is replayed from the stored
    answers)."""
    await store.move(batch_id, BatchState.FINALIZING, f"stopped: {why}" if why else None)
    batch, essays = await store.load(batch_id)
    if batch.state != BatchState.FINALIZING:
        return
    _, rows = await store.batch_and_comparisons(batch_id)
    position = {e.essay_id: e.position for e in essays}
    data = answered(rows, position)
    if alpha is None:
        waves = np.array([r.wave for r in rows if r.status == ComparisonStatus.DONE], np.int64)
        is_anchor = np.array([e.is_anchor for e in essays], bool)
        alpha = (await off_loop(PriorChoice.replay, len(essays), data, waves, is_anchor)).final_precision
    final = await off_loop(final_numbers, batch, essays, data, alpha)
    result = final.fit
    stored = final.grades
    now = datetime.now(UTC)
    ssr = result.reliability()

    async def store_results(session: AsyncSession) -> None:
        await session.execute(delete(GradeProjection).where(GradeProjection.batch_id == batch_id))
        await session.execute(delete(BatchResult).where(BatchResult.batch_id == batch_id))
        await session.execute(  # one executemany by primary key
            update(BatchEssay),
            [
                {**row, "rank": int(final.rank[e.position]),
                 "wins": int(final.wins[e.position]), "losses": int(final.losses[e.position])}
                for row, e in zip(score_rows(essays, result), essays, strict=True)
            ],
        )  # fmt: skip
        session.add(
            BatchResult(
                batch_id=batch_id, scale_separation_reliability=ssr,
                position_bias=final.position_bias, position_bias_se=final.position_bias_se,
                self_consistency=self_consistency(data), grade_scale=batch.grade_scale,
                grades_projected=bool(stored.projections), projection_note=stored.note, created_at=now,
                grade_bands=json.dumps(stored.bands) if stored.projections else None,
                diagnostics=stored.stored_diagnostics(),
            )
        )  # fmt: skip
        session.add_all(stored.projections)
        await session.execute(update(Batch).where(Batch.batch_id == batch_id).values(current_ssr=ssr))
        if not await transition(session, batch_id, BatchState.COMPLETED, release=True):
            raise RuntimeError("batch left FINALIZING while its results were computed")  # rolls back
        await observe_duration(session, batch_id, BatchState.COMPLETED)

    await database.write(store.sessions, store_results)
