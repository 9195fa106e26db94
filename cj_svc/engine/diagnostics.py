"""Whether a batch's anchors fit its scores, and the warnings a reader must see before its grades.

Anchors carry the grades: if the judge did not put them in grade order, or they are unlike the
cohort's essays (written for another prompt, at another level), every projected grade is confident
nonsense. These functions measure that from the scores alone and say what it means:
- Kendall tau-b of anchor grade vs anchor score (ties in grade not rewarded);
- every anchor pair out of grade order; anchors that won nothing, or lost nothing;
- students outside the anchored range (their grades are extrapolated);
- the share of anchor-vs-student comparisons the anchors won: about half when they span the cohort.
Grades are unreliable when tau < 0.5 or the anchors won (or lost) nearly all their comparisons with
students; the projection then caps its confidence (projection.cap_confidence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

TAU_FLOOR = 0.5  # below: the anchors' order says little about their grades
WIN_SHARE_EDGE = 0.1  # anchors winning less than this share of their comparisons with students (or more than 1 - it)
LOW_SSR = 0.7  # below: the rank order is not reliable enough to act on


@dataclass(frozen=True)
class AnchorScore:
    essay_id: str
    rung: int  # position of its grade on the scale's ladder, lowest 0
    grade: str
    score: float
    wins: int
    losses: int


@dataclass(frozen=True)
class Diagnostics:
    kendall_tau: float | None
    out_of_order: list[tuple[str, str]]  # (higher grade, lower grade) essay ids
    without_wins: list[str]
    without_losses: list[str]
    students_above: int
    students_below: int
    anchor_win_share: float | None  # of anchor-vs-student comparisons; None when there were none
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (code, message), worst first

    @property
    def reliable(self) -> bool:
        return not any(code == "ANCHORS_DO_NOT_FIT" for code, _ in self.warnings)


def kendall_tau_b(rungs: list[int], scores: list[float]) -> float | None:
    """Kendall's tau-b of grade vs score; None with fewer than two distinct grades or scores."""
    if len(set(rungs)) < 2 or len(set(scores)) < 2:
        return None
    from scipy import stats  # about a second to import: loaded by the first batch with anchors, not at start-up

    return float(stats.kendalltau(rungs, scores, variant="b").statistic)


def out_of_order(anchors: list[AnchorScore]) -> list[tuple[str, str]]:
    """Pairs (higher grade, lower grade) whose scores came out the other way round."""
    found = []
    for a, b in combinations(anchors, 2):
        if a.rung != b.rung and (a.rung - b.rung) * (a.score - b.score) < 0:
            found.append((a.essay_id, b.essay_id) if a.rung > b.rung else (b.essay_id, a.essay_id))
    return found


def diagnose(
    anchors: list[AnchorScore],
    student_scores: list[float],
    anchor_wins_over_students: int,
    anchor_student_comparisons: int,
    ladder: tuple[str, ...],
    ssr: float,
) -> Diagnostics:
    """Everything above, with the warnings it calls for."""
    tau = kendall_tau_b([a.rung for a in anchors], [a.score for a in anchors])
    wrong = out_of_order(anchors)
    no_wins = [a.essay_id for a in anchors if a.wins == 0]
    no_losses = [a.essay_id for a in anchors if a.losses == 0]
    scores = np.asarray(student_scores, float)
    top = max((a.score for a in anchors), default=np.inf)
    bottom = min((a.score for a in anchors), default=-np.inf)
    above, below = int((scores > top).sum()), int((scores < bottom).sum())
    share = anchor_wins_over_students / anchor_student_comparisons if anchor_student_comparisons else None
    warnings: list[tuple[str, str]] = []
    misfit = []
    if tau is not None and tau < TAU_FLOOR:
        misfit.append(f"the anchors' scores follow their grades only weakly (Kendall tau {tau:.2f}, below {TAU_FLOOR})")
    if share is not None and not WIN_SHARE_EDGE <= share <= 1 - WIN_SHARE_EDGE:
        misfit.append(
            f"the anchors won {anchor_wins_over_students} of {anchor_student_comparisons} comparisons with students "
            f"({share:.0%})"
        )
    if misfit:
        warnings.append((
            "ANCHORS_DO_NOT_FIT",
            "grades are not reliable: " + " and ".join(misfit) + "; the anchors may be for another prompt or "
            "level, or graded differently. Confidence is capped; check the anchors before using these grades",
        ))  # fmt: skip
    if wrong:
        listed = ", ".join(f"{hi} above {lo}" for hi, lo in wrong[:5]) + (", ..." if len(wrong) > 5 else "")
        warnings.append(("ANCHORS_OUT_OF_ORDER", f"{len(wrong)} anchor pair(s) out of grade order (by grade, by "
                                                 f"score the other way round): {listed}"))  # fmt: skip
    if no_wins:
        warnings.append(("ANCHOR_WITHOUT_WINS", f"anchor(s) that won no comparison: {', '.join(no_wins)}"))
    if no_losses:
        warnings.append(("ANCHOR_WITHOUT_LOSSES", f"anchor(s) that lost no comparison: {', '.join(no_losses)}"))
    if above or below:
        warnings.append((
            "STUDENTS_OUTSIDE_ANCHORS",
            f"{above} student(s) scored above the highest anchor and {below} below the lowest: their grades are "
            "extrapolated beyond the anchors",
        ))  # fmt: skip
    anchored = {a.rung for a in anchors}
    if anchored:
        inside = [g for rung, g in enumerate(ladder) if min(anchored) < rung < max(anchored) and rung not in anchored]
        if inside:
            warnings.append(("GRADES_WITHOUT_ANCHORS", f"no anchor of grade(s) {', '.join(inside)}: their bands are "
                                                       "inferred from the neighbouring grades, less certainly"))  # fmt: skip
    if ssr < LOW_SSR:
        warnings.append(("LOW_RELIABILITY", f"scale separation reliability is {ssr:.2f} (below {LOW_SSR}): the "
                                            "order of essays is not reliable; more comparisons would help"))  # fmt: skip
    return Diagnostics(tau, wrong, no_wins, no_losses, above, below, share, warnings)


def anchor_ranks(anchors: Sequence[tuple[str, int, float]]) -> tuple[dict[str, int], dict[str, int]]:
    """(expected, actual) rank of each anchor among the anchors, 1 the best, from (essay id, rung of
    its grade on the ladder, score): expected is 1 + how many anchors have a higher grade (ties share
    a rank), actual is the order of the scores."""
    expected = {essay_id: 1 + sum(other > rung for _, other, _ in anchors) for essay_id, rung, _ in anchors}
    by_score = sorted(anchors, key=lambda anchor: -anchor[2])
    return expected, {essay_id: place for place, (essay_id, _, _) in enumerate(by_score, start=1)}
