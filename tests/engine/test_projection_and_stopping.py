"""Grade projection and stopping rules."""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cj_svc.engine import projection
from cj_svc.engine.grading import Grades, decided_share
from cj_svc.engine.projection import (
    Anchor,
    Calibration,
    NoProjection,
    bands,
    calibrate,
    probabilities,
    project,
    thinned,
)
from cj_svc.engine.scales import SCALES, get_scale
from cj_svc.engine.stopping import BatchProgress, StoppingRules, StopReason, decide, weighs_quality

LEGACY = get_scale("eng5_np_legacy_9_step")
SWEDISH = get_scale("swedish_8_anchor")


def legacy_anchors(se: float = 0.3) -> list[Anchor]:
    return [Anchor(-3 + 0.75 * i, grade, se) for i, grade in enumerate(LEGACY.grades)]


@functools.cache
def one_anchor_per_grade(scale: str) -> Calibration:
    return calibrate(get_scale(scale), [Anchor(i - 3.0, g, 0.4) for i, g in enumerate(get_scale(scale).grades)])


@settings(max_examples=60, deadline=None)
@given(score=st.floats(-20, 20), se=st.floats(0.0, 5.0), scale=st.sampled_from(sorted(SCALES)))
def test_probabilities_sum_to_one(score: float, se: float, scale: str) -> None:
    probs = probabilities(one_anchor_per_grade(scale), score, se)
    assert np.all(probs >= 0) and abs(probs.sum() - 1) < 1e-9


def test_probabilities_spread_when_se_is_large() -> None:
    calibration = calibrate(LEGACY, legacy_anchors())
    sharp = project(LEGACY, calibration, 0.0, 0.1)
    vague = project(LEGACY, calibration, 0.0, 2.0)
    assert sharp.grade == vague.grade == "D+"
    # one anchor per grade: even a sure score is only as sure as where its band's edges lie
    assert sharp.confidence > 0.7 and vague.confidence < 0.4
    assert sum(p > 0.05 for p in vague.probabilities.values()) >= 4
    assert sharp.label == "HIGH" and vague.label == "LOW"


def test_fewer_than_two_anchor_grades_gives_no_projection_with_reason() -> None:
    with pytest.raises(NoProjection, match="at least two distinct grades"):
        calibrate(LEGACY, [Anchor(0.0, "C+"), Anchor(0.5, "C+")])


def test_below_lowest_grade_reachable_where_the_scale_has_one() -> None:
    calibration = calibrate(LEGACY, legacy_anchors())
    assert calibration.ladder[0] == "F"
    assert project(LEGACY, calibration, -8.0, 0.2).grade == "F"
    assert calibrate(SWEDISH, [Anchor(0, "E"), Anchor(1, "C")]).ladder[0] == "F"  # no extra rung


def test_below_lowest_grade_only_well_below_every_anchor() -> None:
    # the lowest grade's weaker essays keep the lowest grade; only essays a band width under the
    # lowest anchor are given the below-lowest one
    anchors = legacy_anchors()  # F+ at -3.0, one grade every 0.75
    calibration = calibrate(LEGACY, anchors)
    assert project(LEGACY, calibration, -3.4, 0.05).grade == "F+"
    assert calibration.boundaries[0] < -3.0 - 0.7
    assert project(LEGACY, calibration, -4.6, 0.05).grade == "F"


def test_no_below_lowest_grade_without_anchors_of_the_lowest_grade() -> None:
    # anchors from the second grade up: nothing shows where the lowest grade's essays end, so the
    # lowest grade reaches down without end and no essay, however far down, gets the below-lowest one
    anchors = [a for a in legacy_anchors(0.1) if a.grade != LEGACY.grades[0]]
    calibration = calibrate(LEGACY, anchors)
    assert calibration.ladder == LEGACY.grades
    far_down = project(LEGACY, calibration, -9.0, 0.3)
    assert far_down.grade == LEGACY.grades[0] and LEGACY.below_lowest_grade not in far_down.probabilities
    assert bands(calibration)[0] == (LEGACY.grades[0], None, pytest.approx(calibration.boundaries[0]))
    # an anchor of the below-lowest grade itself shows it
    below = calibrate(LEGACY, [Anchor(-5.0, "F", 0.1), *anchors])
    assert below.ladder == LEGACY.ladder and project(LEGACY, below, -9.0, 0.3).grade == "F"


def test_each_boundary_lies_in_the_gap_between_its_grades_anchors() -> None:
    # bands of unequal width (each twice the one below): no line is imposed across the grades, so
    # every served boundary sits between the anchors of the grades on either side of it, and a
    # wider gap leaves the boundary less certain
    edges = [-4.0 + 0.25 * (2**k - 1) for k in range(9)]
    anchors = [Anchor(position, grade, 0.05) for position, grade in zip(edges, LEGACY.grades, strict=True)]
    calibration = calibrate(LEGACY, anchors)
    inner = calibration.boundaries[1:]  # the first is the below-lowest grade's
    assert np.all((np.array(edges[:-1]) < inner) & (inner < np.array(edges[1:])))
    spread = calibration.boundary_draws[:, 1:].std(axis=0)
    assert np.all(np.diff(spread) > 0)


def test_neighbouring_bands_of_like_width_pin_their_boundaries_closer(monkeypatch: pytest.MonkeyPatch) -> None:
    # anchors a band apart: a grade's band is seldom far wider or narrower than its neighbours', so
    # each boundary is surer than anywhere in its gap alike (uniform: SD gap / sqrt(12))
    anchors = [Anchor(-3 + 0.75 * i, grade, 0.05) for i, grade in enumerate(LEGACY.grades)]
    smoothed = calibrate(LEGACY, anchors).boundary_draws[:, 2:-1].std(axis=0).mean()
    monkeypatch.setattr(projection, "WIDTH_STEP_SD", 1e6)
    alike = calibrate(LEGACY, anchors).boundary_draws[:, 2:-1].std(axis=0).mean()
    assert alike == pytest.approx(0.75 / np.sqrt(12), rel=0.05)
    assert smoothed < 0.95 * alike


def test_a_score_that_moves_with_the_anchors_is_surer_of_its_grade() -> None:
    # a student and the anchors share the scale's uncertainty (their scores are correlated): given
    # where the anchors really lie, the student's grade is surer than its own SE alone says
    anchors = legacy_anchors(se=0.5)
    shared = 0.2  # covariance every score shares with every other
    covariance = np.full((len(anchors), len(anchors)), shared) + np.diag(np.full(len(anchors), 0.25 - shared))
    calibration = calibrate(LEGACY, anchors, covariance)
    loadings = np.linalg.solve(calibration.anchor_covariance, np.full(len(anchors), shared))
    together = project(LEGACY, calibration, 0.0, 0.5, loadings=loadings)
    alone = project(LEGACY, calibration, 0.0, 0.5)
    assert together.confidence > alone.confidence + 0.05


def test_grades_are_the_same_every_time_they_are_computed() -> None:
    first, again = calibrate(LEGACY, legacy_anchors()), calibrate(LEGACY, legacy_anchors())
    assert np.array_equal(first.boundary_draws, again.boundary_draws)
    assert project(LEGACY, first, 0.3, 0.4) == project(LEGACY, again, 0.3, 0.4)


def test_large_batches_use_fewer_draws_with_the_same_grades() -> None:
    calibration = calibrate(LEGACY, legacy_anchors())
    assert thinned(calibration, 100) is calibration
    few = thinned(calibration, 100_000)
    assert 100 < len(few.boundary_draws) < len(calibration.boundary_draws) / 10
    full, thin = probabilities(calibration, 0.4, 0.3), probabilities(few, 0.4, 0.3)
    assert thin.sum() == pytest.approx(1.0) and np.abs(full - thin).max() < 0.05


def test_grades_without_anchors_get_bands_in_order() -> None:
    calibration = calibrate(LEGACY, [Anchor(-2.0, "E-"), Anchor(2.0, "B")])
    assert np.all(np.diff(calibration.boundaries) > 0)
    assert (
        -2.0
        < calibration.boundaries[calibration.ladder.index("E-")]
        < calibration.boundaries[calibration.ladder.index("B") - 1]
        < 2.0
    )
    assert project(LEGACY, calibration, 0.0, 0.05).grade in {"D-", "D+", "C-"}


def test_bands_beyond_the_anchored_grades_have_widths_nothing_measures() -> None:
    # anchors of D-..C+ exactly a band (0.75) apart: the edges below D- and above C+ lie about half a
    # band beyond their anchors, each further edge a band further out, and the further out the less sure
    anchors = [Anchor(0.75 * i, grade, 0.01) for i, grade in enumerate(("D-", "D+", "C-", "C+"))]
    calibration = calibrate(LEGACY, anchors)
    below_d = calibration.boundary_draws[:, calibration.ladder.index("D-") - 1]
    above_c = calibration.boundary_draws[:, calibration.ladder.index("C+")]
    assert np.median(below_d) == pytest.approx(-0.375, abs=0.05)
    assert np.median(above_c) == pytest.approx(2.25 + 0.375, abs=0.05)
    assert below_d.std() > 0.3 and above_c.std() > 0.3  # a band's width may well be half or twice the typical
    spread = calibration.boundary_draws.std(axis=0)
    outer = calibration.ladder.index("C+")
    assert np.all(np.diff(spread[outer:]) > 0)


def test_anchors_out_of_order_still_give_bands_in_order() -> None:
    anchors = legacy_anchors()
    anchors[2] = Anchor(1.0, anchors[2].grade, 0.3)  # an E+ scoring like a C+
    calibration = calibrate(LEGACY, anchors)
    assert np.all(np.diff(calibration.boundary_draws, axis=1) >= 0)
    assert np.all(np.diff(calibration.boundaries) >= 0)


def test_capped_confidence_claims_no_grade_with_more_than_about_half_certainty() -> None:
    calibration = calibrate(LEGACY, legacy_anchors())
    sure = project(LEGACY, calibration, 4.0, 0.05)
    capped = project(LEGACY, calibration, 4.0, 0.05, reliable=False)
    assert sure.label == "HIGH" and sure.confidence > 0.9
    assert capped.grade == sure.grade and capped.label == "LOW"
    assert capped.confidence <= 0.5 + 0.5 / len(calibration.ladder) + 1e-9
    assert sum(capped.probabilities.values()) == pytest.approx(1.0)


def test_swedish_plus_minus_rule() -> None:
    anchors = [Anchor(float(i), g, 0.2) for i, g in enumerate(SWEDISH.grades)]
    calibration = calibrate(SWEDISH, anchors)
    e_low, e_high = calibration.boundaries[0], calibration.boundaries[1]
    width = e_high - e_low
    assert project(SWEDISH, calibration, e_low + 0.1 * width, 0.01).grade == "E-"
    assert project(SWEDISH, calibration, e_low + 0.9 * width, 0.01).grade == "E+"
    assert project(SWEDISH, calibration, e_low + 0.5 * width, 0.01).grade == "E"
    assert project(SWEDISH, calibration, 20.0, 0.01).grade == "A"  # open-ended band: no suffix
    assert project(SWEDISH, calibration, -20.0, 0.01).grade == "F"


@pytest.mark.parametrize(
    ("progress", "reason"),
    [
        (BatchProgress(10, 20, 10, 100, 0.01, 0.95), StopReason.TOO_MANY_FAILURES),
        (BatchProgress(10, 100, 95, 100, 0.5, 0.5), StopReason.BUDGET),
        (BatchProgress(10, 20, 20, 100, 0.001, 0.99), StopReason.CONTINUE),  # too few per essay yet
        (BatchProgress(10, 40, 40, 100, 0.5, 0.95), StopReason.TARGET_RELIABILITY),
        (BatchProgress(10, 40, 40, 100, 0.01, 0.5), StopReason.STABLE),
        (BatchProgress(10, 40, 40, 100, None, None), StopReason.CONTINUE),
        (BatchProgress(10, 40, 40, 100, 0.2, 0.5), StopReason.CONTINUE),
        (BatchProgress(10, 40, 40, 100, 0.2, 0.5, decided=0.9), StopReason.GRADES_DECIDED),
        (BatchProgress(10, 40, 40, 100, 0.2, 0.95, decided=0.95), StopReason.GRADES_DECIDED),  # said first
        (BatchProgress(10, 40, 40, 100, 0.2, 0.5, decided=0.89), StopReason.CONTINUE),
        (BatchProgress(10, 20, 20, 100, 0.2, 0.5, decided=1.0), StopReason.CONTINUE),  # too few per essay yet
        (BatchProgress(10, 100, 100, 100, 0.2, 0.5, decided=1.0), StopReason.BUDGET),
    ],
)
def test_stopping_says_why(progress: BatchProgress, reason: StopReason) -> None:
    assert decide(progress) == reason


@pytest.mark.parametrize(
    ("progress", "weighed"),
    [
        (BatchProgress(10, 20, 20, 100, 0.2, 0.5), False),  # 4 comparisons per essay, 6 needed
        (BatchProgress(10, 30, 30, 100, 0.2, 0.5), True),
        (BatchProgress(10, 100, 100, 100, 0.2, 0.5), False),  # the budget stops it first
        (BatchProgress(10, 40, 20, 100, 0.2, 0.5), False),  # too many failures
        (BatchProgress(10, 40, 40, 100, 0.2, 0.5, cost=2.0, max_cost=1.0), False),  # the cost ceiling
    ],
)
def test_the_decided_share_is_weighed_only_where_it_can_stop_the_batch(progress: BatchProgress, weighed: bool) -> None:
    """The workflow computes the decided share (a final fit and a projection each wave) only where
    `decide` would look at it: any share decides nothing elsewhere."""
    assert weighs_quality(progress) == weighed
    share_decides = decide(replace(progress, decided=1.0)) == StopReason.GRADES_DECIDED
    assert share_decides == weighed


def test_a_batch_may_ask_for_another_share_of_decided_grades() -> None:
    progress = BatchProgress(10, 40, 40, 100, 0.2, 0.5, decided=0.6)
    assert decide(progress) == StopReason.CONTINUE
    assert decide(progress, StoppingRules(decided_share=0.5)) == StopReason.GRADES_DECIDED


def test_decided_share_counts_students_whose_grade_reaches_the_probability() -> None:
    scale = get_scale("eng5_np_legacy_9_step")
    anchors = [Anchor(-4.0 + i, grade, 0.1) for i, grade in enumerate(scale.grades)]
    calibration = calibrate(scale, anchors)
    # Two students in the middle of a band with small SEs (decided), two on boundaries (not).
    students = {0: (0.0, 0.05), 1: (2.0, 0.05), 2: (0.5, 0.3), 3: (-1.5, 0.3)}
    projections = {i: project(scale, calibration, score, se) for i, (score, se) in students.items()}
    grades = Grades(projections, "", bands(calibration), None)  # type: ignore[arg-type]
    assert decided_share(grades, 0.8) == 0.5
    assert decided_share(Grades({}, "no anchors", [], None), 0.8) is None  # type: ignore[arg-type]
