"""Grade projection from anchors: grade centres, bands, and per-essay grade probabilities.

1. Grade centres: a straight line through the anchors' grade means (weighted by their precision)
   places every grade, anchored or not (so the below-lowest grade and grades without anchors are
   extrapolated or interpolated); each anchored grade's centre is then pulled from the line towards
   its own mean as far as that mean's precision and the line's lack of fit allow (partial
   pooling), and the centres are made non-decreasing in grade order by isotonic regression (pool
   adjacent violators, weighted by precision). A single noisy anchor per grade cannot squeeze its
   neighbours' bands to nothing.
2. Bands: boundaries are midpoints between adjacent centres; the lowest grade of the ladder extends
   to -inf and the highest to +inf. The below-lowest grade is a rung of the ladder where the scale has
   one, and its band starts a full band width below the lowest anchor: it is for essays clearly under
   every anchored grade (in bench/grading.py this raised exact agreement and lowered the Brier score in
   every family).
3. P(grade) for an essay is the mass of N(score, SE^2) inside the grade's band, where each
   boundary's uncertainty (from its anchors' standard errors and how far anchors of one grade
   differ) widens the spread: real
   probabilities that sum to 1 and spread as SE grows.
4. The projected grade is the most probable one; on `swedish_8_anchor` the +/- rule of the
   reference applies (position within the band: < 0.25 gives a minus for E, D, C, B, A; > 0.75 a
   plus for E and B; open-ended bands count as the middle).
5. Confidence label from the probability of the projected grade: HIGH >= 0.75, MID >= 0.5, else LOW.
6. When the anchors do not fit the scores (diagnostics.py), confidence is capped (`cap_confidence`)
   and every label is LOW.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from cj_svc.engine.scales import GradeScale

HIGH, MID = 0.75, 0.5
UNRELIABLE_WEIGHT = 0.5  # share of each probability kept when the anchors do not fit


@dataclass(frozen=True)
class Anchor:
    score: float
    grade: str
    standard_error: float = 0.0


@dataclass(frozen=True)
class Calibration:
    ladder: tuple[str, ...]  # grades lowest first, the below-lowest grade included where allowed
    centres: NDArray[np.float64]
    boundaries: NDArray[np.float64]  # len(ladder) - 1 finite boundaries
    boundary_variances: NDArray[np.float64]  # how uncertain each boundary is, from its anchors' scores


@dataclass(frozen=True)
class Projection:
    grade: str
    probabilities: dict[str, float]
    confidence: float
    label: str


class NoProjection(Exception):
    """Grades cannot be projected; the message says why."""


def isotonic(values: NDArray[np.float64], weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Weighted least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [value, weight, count]
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, c2 = blocks.pop()
            v1, w1, c1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.array([value for value, _, count in blocks for _ in range(int(count))])


def calibrate(scale: GradeScale, anchors: list[Anchor]) -> Calibration:
    ladder = scale.ladder
    rung = {grade: position for position, grade in enumerate(ladder)}
    usable = [a for a in anchors if a.grade in rung]
    graded = sorted({rung[a.grade] for a in usable})
    if len(graded) < 2:
        raise NoProjection(
            f"grades need anchors of at least two distinct grades; this batch has "
            f"{len(graded)} ({', '.join(ladder[g] for g in graded) or 'none'})"
        )
    means = np.array([np.mean([a.score for a in usable if rung[a.grade] == g]) for g in graded])
    counts = np.array([sum(rung[a.grade] == g for a in usable) for g in graded], float)
    # Variance of each grade's mean. Its anchors' scores have estimation error (averaged, floored: an
    # anchor score is never exact), and anchors of one grade also differ in how good they are: a band
    # is a range of quality, and where in it the anchors fall is chance. Their scores' spread around
    # their grade's mean (pooled over the grades) holds both.
    own_vars = np.maximum([np.mean([a.standard_error**2 for a in usable if rung[a.grade] == g]) for g in graded], 1e-4)
    deviations = [a.score - means[graded.index(rung[a.grade])] for a in usable]
    freedom = len(usable) - len(graded)
    spread = float(np.sum(np.square(deviations)) / freedom) if freedom > 0 else 0.0
    mean_vars = np.maximum(own_vars, spread) / counts
    grade_positions = np.array(graded, float)
    # A straight line through the grade means (weighted least squares) ...
    design = np.column_stack([np.ones_like(grade_positions), grade_positions])
    weights = 1.0 / mean_vars
    normal = design.T @ (design * weights[:, None])
    coefficients = np.linalg.solve(normal, design.T @ (weights * means))
    if coefficients[1] <= 0:
        raise NoProjection("the anchors' scores do not rise with their grades; check the anchors' grades")
    line_cov = np.linalg.inv(normal)
    residuals = means - design @ coefficients
    # ... and how far real grade means sit from it beyond their own noise (lack of fit).
    lack_of_fit = max(0.0, float(np.mean(residuals**2 - mean_vars))) if len(graded) > 2 else 0.0
    positions = np.arange(len(ladder), dtype=float)
    ladder_design = np.column_stack([np.ones_like(positions), positions])
    centres = ladder_design @ coefficients
    centre_vars = np.einsum("ij,jk,ik->i", ladder_design, line_cov, ladder_design) + lack_of_fit
    # Partial pooling: an anchored grade's centre moves from the line towards its own mean as far
    # as the mean's precision allows.
    for g, mean, variance in zip(graded, means, mean_vars, strict=True):
        shrink = centre_vars[g] / (centre_vars[g] + variance)
        centres[g] = centres[g] + shrink * (mean - centres[g])
        centre_vars[g] = shrink * variance
    centres = isotonic(centres, 1.0 / centre_vars)
    boundaries = (centres[:-1] + centres[1:]) / 2
    if scale.below_lowest_grade is not None:
        # The below-lowest grade is for essays clearly under every anchored grade, not for the lowest
        # grade's own weaker essays: its band starts a full band width below the lowest anchor.
        lowest_anchor = min(a.score for a in usable)
        boundaries[0] = min(boundaries[0], lowest_anchor) - coefficients[1]
    return Calibration(ladder, centres, boundaries, (centre_vars[:-1] + centre_vars[1:]) / 4)


def probabilities(calibration: Calibration, score: float, standard_error: float) -> NDArray[np.float64]:
    """P(grade) for each rung of the ladder: the mass of N(score, SE^2) inside the grade's band, with
    each boundary's own uncertainty added to SE^2; sums to 1."""
    spread = np.sqrt(max(standard_error, 1e-6) ** 2 + calibration.boundary_variances)
    below = np.maximum.accumulate(ndtr((calibration.boundaries - score) / spread))
    mass = np.diff(np.concatenate([[0.0], below, [1.0]]))
    return np.asarray(mass / mass.sum(), np.float64)


def _swedish_suffix(grade: str, calibration: Calibration, score: float) -> str:
    position = calibration.ladder.index(grade)
    bounds = np.concatenate([[-np.inf], calibration.boundaries, [np.inf]])
    lower, upper = bounds[position], bounds[position + 1]
    relative = 0.5 if not (np.isfinite(lower) and np.isfinite(upper)) else (score - lower) / (upper - lower)
    if grade in {"E", "D", "C", "B", "A"} and relative < 0.25:
        return grade + "-"
    if grade in {"E", "B"} and relative > 0.75:
        return grade + "+"
    return grade


def cap_confidence(probs: NDArray[np.float64]) -> NDArray[np.float64]:
    """Grades from anchors that do not fit: half of every probability moved to an even spread over the
    ladder, so no grade is claimed with more than about half the certainty."""
    return UNRELIABLE_WEIGHT * probs + (1 - UNRELIABLE_WEIGHT) / len(probs)


def project(
    scale: GradeScale, calibration: Calibration, score: float, standard_error: float, reliable: bool = True
) -> Projection:
    """The most probable grade and every grade's probability; with `reliable` False (anchors that do not
    fit, see diagnostics.py) the probabilities are capped and the label is LOW."""
    probs = probabilities(calibration, score, standard_error)
    if not reliable:
        probs = cap_confidence(probs)
    best = int(np.argmax(probs))
    grade = calibration.ladder[best]
    if scale.key == "swedish_8_anchor":
        grade = _swedish_suffix(grade, calibration, score)
    confidence = float(probs[best])
    label = "HIGH" if confidence >= HIGH and reliable else "MID" if confidence >= MID and reliable else "LOW"
    return Projection(grade, dict(zip(calibration.ladder, probs.tolist(), strict=True)), confidence, label)


def bands(calibration: Calibration) -> list[tuple[str, float | None, float | None]]:
    """Each grade's interval on the score scale, lowest first: (grade, lower, upper), with None for
    the open ends of the lowest and the highest band."""
    edges: list[float | None] = [None, *(float(b) for b in calibration.boundaries), None]
    return [(grade, edges[i], edges[i + 1]) for i, grade in enumerate(calibration.ladder)]
