"""From a batch's final fit to what it serves about grades: diagnostics, bands and projections.

The workflow stores what `grade` returns, and `bench/grading.py` measures the same function's
output, so the figures there are what a client of the service is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from cj_svc.engine.bradley_terry import Comparisons, Fit
from cj_svc.engine.diagnostics import AnchorScore, Diagnostics, diagnose
from cj_svc.engine.projection import Anchor, NoProjection, Projection, bands, calibrate, project, thinned
from cj_svc.engine.scales import GradeScale


@dataclass(frozen=True)
class Grades:
    projections: dict[int, Projection]  # by essay position; students only, empty when none were projected
    note: str  # why none were projected
    bands: list[tuple[str, float | None, float | None]]
    diagnostics: Diagnostics


def grade(
    scale: GradeScale, essay_ids: list[str], known_grades: list[str | None], result: Fit, data: Comparisons
) -> Grades:
    """Grades of a batch whose essays (by position) are anchors where `known_grades` has a grade.

    Diagnostics are always computed; projections need anchors of two grades whose scores rise with
    them, and have their confidence capped when the anchors do not fit (diagnostics.py)."""
    n = len(essay_ids)
    is_anchor = np.array([g is not None for g in known_grades], bool)
    rung = {grade: position for position, grade in enumerate(scale.ladder)}
    winner = np.where(data.first_won, data.first, data.second)
    loser = np.where(data.first_won, data.second, data.first)
    wins, losses = np.bincount(winner, minlength=n), np.bincount(loser, minlength=n)
    mixed = is_anchor[data.first] != is_anchor[data.second]
    anchors = [i for i in range(n) if is_anchor[i]]
    found = diagnose(
        [AnchorScore(essay_ids[i], rung[g], g, float(result.scores[i]), int(wins[i]), int(losses[i]))
         for i in anchors if (g := known_grades[i] or "") in rung],
        [float(result.scores[i]) for i in range(n) if not is_anchor[i]],
        int(is_anchor[winner][mixed].sum()), int(mixed.sum()), scale.ladder,
        result.reliability(),
    )  # fmt: skip
    graded = [i for i in anchors if (known_grades[i] or "") in rung]
    students = [i for i in range(n) if not is_anchor[i]]
    covariance = None if result.covariance is None else result.covariance[np.ix_(graded, graded)]
    try:
        calibration = calibrate(
            scale,
            [Anchor(float(result.scores[i]), known_grades[i] or "", float(result.standard_errors[i])) for i in graded],
            covariance,
        )
    except NoProjection as reason:
        unprojected = replace(found, warnings=[("GRADES_NOT_PROJECTED", f"no grades: {reason}"), *found.warnings])
        return Grades({}, str(reason), [], unprojected)
    calibration = thinned(calibration, len(students))
    # each student's regression on the anchors' scores: they share the scale's uncertainty
    loadings = (
        np.zeros((len(students), len(graded)))
        if result.covariance is None
        else np.linalg.solve(calibration.anchor_covariance, result.covariance[np.ix_(graded, students)]).T
    )
    projections = {
        i: project(
            scale, calibration, float(result.scores[i]), float(result.standard_errors[i]), found.reliable, loadings[k]
        )
        for k, i in enumerate(students)
    }
    return Grades(projections, "", bands(calibration), found)


def decided_share(grades: Grades, probability: float) -> float | None:
    """Share of the students whose most probable grade has at least this probability (its
    confidence as served, capped when the anchors do not fit); None when no grades were projected."""
    if not grades.projections:
        return None
    return float(np.mean([p.confidence >= probability for p in grades.projections.values()]))


def probability_matrix(grades: Grades, ladder: tuple[str, ...], students: NDArray[np.int64]) -> NDArray[np.float64]:
    """Rows of P(grade) over the ladder for the given students, exactly as projected (0 for a grade
    the projection ruled out, such as a below-lowest grade the anchors do not support)."""
    return np.array([[grades.projections[int(i)].probabilities.get(g, 0.0) for g in ladder] for i in students])
