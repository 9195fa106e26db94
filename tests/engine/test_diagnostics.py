"""Anchor diagnostics: whether anchors fit the scores, and the warnings that follow."""

from __future__ import annotations

import pytest

from cj_svc.engine.diagnostics import AnchorScore, anchor_ranks, diagnose, kendall_tau_b, out_of_order
from cj_svc.engine.scales import get_scale

LADDER = get_scale("eng5_np_national_9_step").ladder  # 0, 1, ..., 9


def anchors(scores: list[float], rungs: list[int] | None = None) -> list[AnchorScore]:
    rungs = rungs or list(range(1, len(scores) + 1))
    return [AnchorScore(f"a{r}_{i}", r, LADDER[r], s, 3, 3) for i, (r, s) in enumerate(zip(rungs, scores, strict=True))]


def test_anchors_in_grade_order_spanning_the_cohort_raise_nothing() -> None:
    found = diagnose(anchors([-2.0, -1.0, 0.0, 1.0, 2.0]), [-1.5, 0.5, 1.5], 30, 60, LADDER, 0.9)
    assert found.kendall_tau == pytest.approx(1.0) and found.out_of_order == []
    assert found.reliable and found.warnings == []


def test_anchors_for_another_prompt_are_flagged_and_grades_marked_unreliable() -> None:
    # scores that ignore the grades, and anchors that lose almost every comparison with students
    found = diagnose(anchors([0.3, -0.2, 0.1, -0.4, 0.0, 0.2]), [1.0, 2.0, 3.0], 1, 109, LADDER, 0.9)
    assert not found.reliable
    code, message = found.warnings[0]
    assert code == "ANCHORS_DO_NOT_FIT" and "won 1 of 109 comparisons with students" in message
    assert "Kendall tau" in message and "Confidence is capped" in message
    assert found.students_above == 3 and found.anchor_win_share == pytest.approx(1 / 109)
    assert {c for c, _ in found.warnings} >= {"ANCHORS_DO_NOT_FIT", "ANCHORS_OUT_OF_ORDER", "STUDENTS_OUTSIDE_ANCHORS"}


def test_every_pair_out_of_order_is_listed_and_grades_without_anchors_are_named() -> None:
    scored = anchors([-2.0, 1.0, 0.0, 2.0], rungs=[1, 2, 3, 6])
    assert out_of_order(scored) == [("a3_2", "a2_1")]
    found = diagnose(scored, [0.5], 10, 20, LADDER, 0.5)
    codes = [c for c, _ in found.warnings]
    assert found.reliable  # tau 0.67: in order enough
    assert codes == ["ANCHORS_OUT_OF_ORDER", "GRADES_WITHOUT_ANCHORS", "LOW_RELIABILITY"]
    assert "no anchor of grade(s) 4, 5" in found.warnings[1][1]


def test_kendall_tau_b_does_not_reward_tied_grades() -> None:
    assert kendall_tau_b([1, 2, 2, 3], [0.1, 0.2, 0.3, 0.4]) == pytest.approx((5 / 6) ** 0.5)
    assert kendall_tau_b([1, 1], [0.0, 1.0]) is None


def test_anchor_ranks_expected_from_grades_with_ties_and_actual_from_scores() -> None:
    expected, actual = anchor_ranks([("a", 2, 0.5), ("b", 1, 1.5), ("c", 2, -0.5), ("d", 0, -2.0)])
    assert expected == {"a": 1, "c": 1, "b": 3, "d": 4}  # two anchors of the top grade share rank 1
    assert actual == {"b": 1, "a": 2, "c": 3, "d": 4}
