"""Grade projection from anchors: band boundaries sampled with the anchors' scores, and each
student's grade probabilities averaged over the draws.

The model, sampled by Gibbs sampling (`calibrate`):
1. Each anchor's true score lies inside its grade's band. Given the boundaries, the anchors' scores
   are drawn from their joint posterior (the fit's, normal) truncated to their bands.
2. Given the anchors, a boundary between two grades lies anywhere in the gap between the highest
   anchor below it and the lowest above it (uniform: the spacing of uniform order statistics);
   where grades without anchors lie between, the gap is split by a Dirichlet in which each of those
   grades weighs as much as a band holding the usual number of anchors. Within the anchored range
   each boundary is then redrawn with a random walk on the bands' log widths (SD 1.0 a grade): a
   grade's band is seldom far wider or narrower than its neighbours'. No line is imposed across
   the grades, so bands of unequal width keep their widths (in `bench/grading.py`'s skewed cohort,
   centres forced onto a line left top-label ECE at 0.074; sampled boundaries 0.034-0.042).
3. Beyond the anchored grades the bands are about a typical band wide (the anchors' span over the
   grades it covers), the first starting half a band from the nearest anchored grade's mean anchor.
   Nothing measures those widths, so each is drawn: its log follows a random walk like the one
   inside the anchored range, from the typical width outwards. In `bench/grading.py`'s cohort with anchors
   at 4 of 9 grades, widths fixed at the typical one left the most probable grade 0.009 behind the
   one-hot band, the open bands of grades 1 and 9 drawing students of grades 2 and 8. The
   below-lowest grade, where the scale has one and the scale's lowest grade has anchors
   (`supported_ladder`), is for essays clearly under every anchored grade: its band starts a typical
   band width below the lowest anchor.
4. A student's score, given the anchors' draw, is normal (its conditional from the fit's
   covariance: a student's score and the anchors' share the scale's uncertainty); P(grade) is its
   mass inside each drawn band, averaged over the draws: real probabilities that sum to 1 and
   spread as SE grows.
5. The served bands are each boundary's median over the draws. The projected grade is the most
   probable one; on `swedish_8_anchor` the +/- rule of the reference applies (position within the
   band: < 0.25 gives a minus for E, D, C, B, A; > 0.75 a plus for E and B; open-ended bands count
   as the middle).
6. Confidence label from the probability of the projected grade: HIGH >= 0.75, MID >= 0.5, else LOW.
7. When the anchors do not fit the scores (diagnostics.py), confidence is capped (`cap_confidence`)
   and every label is LOW.

The sampler's seed is fixed: a batch's grades are the same every time they are computed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr, ndtri

from cj_svc.engine.scales import GradeScale

HIGH, MID = 0.75, 0.5
UNRELIABLE_WEIGHT = 0.5  # share of each probability kept when the anchors do not fit
CHAINS, SWEEPS, BURN_IN = 128, 60, 20  # 5,120 draws
SEED = 0
GRID = 48  # points a boundary is redrawn on (`_smooth_widths`)
WIDTH_STEP_SD = 1.0  # SD of the change in log band width from one grade to the next
OUTWARD_WIDTH_SD = 1.0  # the same, going out from the anchored grades (from their typical width)
WORK_PER_BATCH = 20_000_000  # students x draws a batch's probabilities may take; fewer draws beyond


@dataclass(frozen=True)
class Anchor:
    score: float
    grade: str
    standard_error: float = 0.0


@dataclass(frozen=True)
class Calibration:
    ladder: tuple[str, ...]  # grades lowest first, the below-lowest grade included where allowed
    boundaries: NDArray[np.float64]  # len(ladder) - 1 finite boundaries served: medians of the draws
    boundary_draws: NDArray[np.float64]  # draws x (len(ladder) - 1)
    anchor_shifts: NDArray[np.float64]  # draws x anchors: each anchor's drawn score minus its fitted one
    anchor_covariance: NDArray[np.float64]  # of the anchors' fitted scores (anchors x anchors)


@dataclass(frozen=True)
class Projection:
    grade: str
    probabilities: dict[str, float]
    confidence: float
    label: str


class NoProjection(Exception):
    """Grades cannot be projected; the message says why."""


def _truncated_normal(
    mean: NDArray[np.float64],
    sd: float,
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """One draw of N(mean, sd^2) restricted to [lower, upper] for each element (inverse CDF)."""
    low, high = ndtr((lower - mean) / sd), ndtr((upper - mean) / sd)
    u = np.clip(low + (high - low) * rng.random(mean.shape), 1e-12, 1 - 1e-12)
    # where the band lies far in a tail both ends round to one value: the nearer edge
    return np.asarray(np.clip(mean + sd * ndtri(u), lower, upper), np.float64)


def _check_anchors(ladder: tuple[str, ...], anchors: list[Anchor]) -> None:
    rung = {grade: position for position, grade in enumerate(ladder)}
    graded = sorted({rung[a.grade] for a in anchors})
    if len(graded) < 2:
        raise NoProjection(
            f"grades need anchors of at least two distinct grades; this batch has "
            f"{len(graded)} ({', '.join(ladder[g] for g in graded) or 'none'})"
        )
    positions = np.array([rung[a.grade] for a in anchors], float)
    scores = np.array([a.score for a in anchors])
    if np.sum((positions - positions.mean()) * (scores - scores.mean())) <= 0:
        raise NoProjection("the anchors' scores do not rise with their grades; check the anchors' grades")


def supported_ladder(scale: GradeScale, anchors: list[Anchor]) -> tuple[str, ...]:
    """The grades an essay of this batch may have: the scale's, and its below-lowest grade only where
    anchors of the lowest grade (or of the below-lowest one) show where the lowest grade's essays end.
    Without them the lowest grade reaches down without end: in `bench/grading.py`'s cohort with
    anchors at 4 of 9 grades, where no essay lies below the lowest grade, the below-lowest grade took
    2.7 % of the probability and was the most probable grade of 1.2 % of the students."""
    graded = {a.grade for a in anchors}
    if scale.below_lowest_grade is None or graded & {scale.below_lowest_grade, scale.grades[0]}:
        return scale.ladder
    return scale.grades


def calibrate(scale: GradeScale, anchors: list[Anchor], covariance: NDArray[np.float64] | None = None) -> Calibration:
    """Draws of the band boundaries and the anchors' scores (the model in the module's docstring).
    `covariance` is the anchors' joint posterior covariance from the fit (default: independent, each
    with its standard error); anchors whose grade is not on the scale are left out."""
    ladder = supported_ladder(scale, anchors)
    rung = {grade: position for position, grade in enumerate(ladder)}
    keep = [k for k, a in enumerate(anchors) if a.grade in rung]
    usable = [anchors[k] for k in keep]
    _check_anchors(ladder, usable)
    if covariance is None:
        covariance = np.diag([max(a.standard_error, 1e-3) ** 2 for a in usable])
    else:
        covariance = np.asarray(covariance, np.float64)[np.ix_(keep, keep)]
    covariance = covariance + 1e-9 * np.eye(len(usable))
    rng = np.random.default_rng(SEED)
    size = len(ladder)
    fitted = np.array([a.score for a in usable])
    grades = np.array([rung[a.grade] for a in usable])
    precision = np.linalg.inv(covariance)
    conditional_sd = 1 / np.sqrt(np.diag(precision))
    present = np.unique(grades)
    lowest, highest = int(present[0]), int(present[-1])
    per_grade = len(usable) / len(present)  # anchors a band usually holds
    below_lowest = ladder[0] == scale.below_lowest_grade and lowest >= 1  # a rung under every anchor
    # start: the fitted scores, sorted into grade order
    start = np.sort(fitted)[np.argsort(np.argsort(grades + 1e-9 * fitted, kind="stable"), kind="stable")]
    scores = np.tile(start, (CHAINS, 1))
    edges = np.empty((CHAINS, size + 1))
    edges[:, 0], edges[:, size] = -np.inf, np.inf
    kept_edges, kept_shifts = [], []
    for sweep in range(SWEEPS):
        _draw_boundaries(edges, scores, grades, per_grade, lowest, highest, below_lowest, rng)
        for j in range(len(usable)):  # each anchor given the others and its band
            others = (scores - fitted) @ precision[j] - (scores[:, j] - fitted[j]) * precision[j, j]
            mean = fitted[j] - others / precision[j, j]
            scores[:, j] = _truncated_normal(mean, conditional_sd[j], edges[:, grades[j]], edges[:, grades[j] + 1], rng)
        if sweep >= BURN_IN:
            kept_edges.append(edges[:, 1:size].copy())
            kept_shifts.append(scores - fitted)
    boundary_draws = np.concatenate(kept_edges)
    return Calibration(
        ladder, np.median(boundary_draws, axis=0), boundary_draws, np.concatenate(kept_shifts), covariance
    )


def thinned(calibration: Calibration, students: int) -> Calibration:
    """The calibration with every k-th draw, so that `students` projections take at most
    WORK_PER_BATCH draw evaluations (all 5,120 draws up to about 4,000 students)."""
    step = -(-students * len(calibration.boundary_draws) // WORK_PER_BATCH)
    if step <= 1:
        return calibration
    return replace(
        calibration, boundary_draws=calibration.boundary_draws[::step], anchor_shifts=calibration.anchor_shifts[::step]
    )


def _draw_boundaries(
    edges: NDArray[np.float64],
    scores: NDArray[np.float64],
    grades: NDArray[np.int64],
    per_grade: float,
    lowest: int,
    highest: int,
    below_lowest: bool,
    rng: np.random.Generator,
) -> None:
    """Every boundary given the anchors' scores, in place: edges[:, r] is the lower edge of rung r
    (rung 0 being the below-lowest grade where `below_lowest`)."""
    chains, size = edges.shape[0], edges.shape[1] - 1
    width = (scores.max(1) - scores.min(1)) / max(highest - lowest, 1)  # a typical band

    def reach_outwards(count: int) -> NDArray[np.float64]:
        """Distances from the outermost anchored grade's centre to the `count` edges beyond it, going
        outwards (chains x count): half its band, then a band for each grade beyond. Each band's log
        width steps from the typical one by OUTWARD_WIDTH_SD."""
        steps = OUTWARD_WIDTH_SD * rng.standard_normal((chains, count))
        widths = width[:, None] * np.exp(np.cumsum(steps, axis=1))
        return np.asarray(np.cumsum(widths, axis=1) - 0.5 * widths[:, :1], np.float64)

    r = 1
    while r < size:
        s = r  # boundaries r..s share one gap: the rungs between them have no anchors
        while s + 1 < size and not (grades == s).any():
            s += 1
        count = s - r + 1
        below, above = grades < r, grades >= r
        if below.any() and above.any():
            # one spacing on each side of the gap, per_grade + 1 for each grade without anchors
            weights = np.array([1.0] + [per_grade + 1.0] * (count - 1) + [1.0])
            low = scores[:, below].max(1)
            high = np.maximum(scores[:, above].min(1), low)
            shares = np.cumsum(rng.dirichlet(weights, chains), axis=1)[:, :count]
            edges[:, r : s + 1] = low[:, None] + (high - low)[:, None] * shares
        elif above.any():  # under every anchored grade: the edges s, s - 1, ..., r going down
            centre = scores[:, grades == grades[above].min()].mean(1)
            edges[:, r : s + 1] = np.minimum(
                centre[:, None] - reach_outwards(count)[:, ::-1], scores[:, above].min(1)[:, None]
            )
        else:  # over every anchored grade: the edges r, r + 1, ..., s going up
            centre = scores[:, grades == grades[below].max()].mean(1)
            edges[:, r : s + 1] = np.maximum(centre[:, None] + reach_outwards(count), scores[:, below].max(1)[:, None])
        r = s + 1
    if below_lowest:
        edges[:, 1] = np.minimum(edges[:, 1], scores.min(1) - width)
    _smooth_widths(edges, scores, grades, per_grade, lowest, highest, rng)


def _smooth_widths(
    edges: NDArray[np.float64],
    scores: NDArray[np.float64],
    grades: NDArray[np.int64],
    per_grade: float,
    lowest: int,
    highest: int,
    rng: np.random.Generator,
) -> None:
    """Each boundary inside the anchored range redrawn, in place, on a grid over where it may lie (between
    its neighbours and the anchors on either side): the gaps' Dirichlet as a function of this boundary,
    times a random walk on the log widths of the bands with both edges finite (a grade's band is
    seldom far wider or narrower than its neighbours')."""
    chains, size = edges.shape[0], edges.shape[1] - 1
    first, last = max(lowest, 1), min(highest, size - 2)  # the bands with both edges finite
    for k in range(lowest + 1, highest + 1):
        low = np.maximum(edges[:, k - 1], scores[:, grades == k - 1].max(1) if (grades == k - 1).any() else -np.inf)
        high = np.minimum(edges[:, k + 1], scores[:, grades == k].min(1) if (grades == k).any() else np.inf)
        low, high = np.where(np.isfinite(low), low, high - 1), np.where(np.isfinite(high), high, low + 1)
        grid = low[:, None] + (high - low)[:, None] * (np.arange(GRID) + rng.random((chains, 1))) / GRID
        below, above = grid - edges[:, k - 1][:, None], edges[:, k + 1][:, None] - grid
        # the Dirichlet's exponents: per_grade for a grade without anchors, 0 beside anchors
        below_power = 0.0 if (grades == k - 1).any() else per_grade
        above_power = 0.0 if (grades == k).any() else per_grade
        # the random walk's steps this boundary changes: those between bands k - 2 .. k + 1 (edges lo .. hi)
        lo, hi = max(k - 2, first), min(k + 1, last) + 1
        with np.errstate(divide="ignore", invalid="ignore"):
            log_density = np.where(np.isfinite(below), below_power * np.log(np.maximum(below, 1e-12)), 0.0) + np.where(
                np.isfinite(above), above_power * np.log(np.maximum(above, 1e-12)), 0.0
            )
            trial = np.repeat(edges[:, lo : hi + 1, None], GRID, 2)
            trial[:, k - lo, :] = grid
            log_widths = np.log(np.clip(np.diff(trial, axis=1), 1e-9, 1e9))
            log_density = log_density - np.sum(np.diff(log_widths, axis=1) ** 2, axis=1) / (2 * WIDTH_STEP_SD**2)
        log_density = np.where(np.isfinite(log_density), log_density, -np.inf)
        weights = np.exp(log_density - log_density.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        pick = (weights.cumsum(1) < rng.random((chains, 1))).sum(1).clip(0, GRID - 1)
        edges[:, k] = grid[np.arange(chains), pick]


def probabilities(
    calibration: Calibration, score: float, standard_error: float, loadings: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """P(grade) for each rung of the ladder: the mass of the score's normal inside each drawn band,
    averaged over the draws; sums to 1. `loadings` are the score's regression on the anchors'
    scores (cov(score, anchors) @ inv(cov(anchors))): given each draw of the anchors the score's
    mean moves with them and its variance is what they leave."""
    if loadings is None:
        means = np.full(len(calibration.anchor_shifts), score)
        variance = standard_error**2
    else:
        means = score + calibration.anchor_shifts @ loadings
        variance = standard_error**2 - float(loadings @ calibration.anchor_covariance @ loadings)
    spread = np.sqrt(max(variance, 1e-12))
    below = np.maximum.accumulate(ndtr((calibration.boundary_draws - means[:, None]) / spread), axis=1)
    mass = np.diff(np.concatenate([np.zeros((len(means), 1)), below, np.ones((len(means), 1))], axis=1), axis=1)
    mass = mass.mean(axis=0)
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
    scale: GradeScale,
    calibration: Calibration,
    score: float,
    standard_error: float,
    reliable: bool = True,
    loadings: NDArray[np.float64] | None = None,
) -> Projection:
    """The most probable grade and every grade's probability (`probabilities`); with `reliable` False
    (anchors that do not fit, see diagnostics.py) the probabilities are capped and the label is LOW."""
    probs = probabilities(calibration, score, standard_error, loadings)
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
