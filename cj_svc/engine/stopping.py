"""When a batch stops asking for comparisons, as a pure function of its state."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class StopReason(enum.Enum):
    CONTINUE = "continue"
    STABLE = "stable"  # largest score change in the last wave under the threshold
    TARGET_RELIABILITY = "target_reliability"  # SSR reached the target
    GRADES_DECIDED = "grades_decided"  # enough students hold a grade with enough probability
    BUDGET = "budget"  # the comparison budget is used
    COST_CEILING = "cost_ceiling"  # the recorded cost reached the batch's ceiling
    TOO_MANY_FAILURES = "too_many_failures"  # too few comparisons succeeded
    EXHAUSTED = "exhausted"  # no pair can be asked any more


@dataclass(frozen=True)
class StoppingRules:
    stability_threshold: float = 0.05
    min_comparisons_per_essay: float = 6.0
    target_ssr: float = 0.90
    min_success_rate: float = 0.8
    min_attempts_for_failure_check: int = 10
    # Share of students that must hold a grade at the batch's probability (see `grading.decided_share`).
    decided_share: float = 0.9


@dataclass(frozen=True)
class BatchProgress:
    essays: int
    attempted: int  # comparisons with an answer or a final error
    succeeded: int
    budget: int
    max_score_change: float | None  # None before there are two fits to compare
    ssr: float | None
    # Share of students holding a grade at the batch's probability; None without grades or when the
    # batch does not stop for decided grades.
    decided: float | None = None
    cost: float | None = None  # US dollars recorded so far; None: not priced
    max_cost: float | None = None  # the batch's ceiling; None: none


def decide(progress: BatchProgress, rules: StoppingRules = StoppingRules()) -> StopReason:
    """Why to stop now, or CONTINUE. Failure is checked first, then budget, then quality."""
    limit = _limit_reached(progress, rules)
    if limit is not None:
        return limit
    if not _has_minimum_comparisons(progress, rules):
        return StopReason.CONTINUE
    if progress.decided is not None and progress.decided >= rules.decided_share:
        return StopReason.GRADES_DECIDED
    if progress.ssr is not None and progress.ssr >= rules.target_ssr:
        return StopReason.TARGET_RELIABILITY
    if progress.max_score_change is not None and progress.max_score_change < rules.stability_threshold:
        return StopReason.STABLE
    return StopReason.CONTINUE


def weighs_quality(progress: BatchProgress, rules: StoppingRules = StoppingRules()) -> bool:
    """Whether `decide` looks at the batch's quality now (decided grades, reliability, stability):
    no limit has stopped it and each essay has its minimum of comparisons. The decided share costs
    a final fit and a projection, so the workflow computes it only then."""
    return _limit_reached(progress, rules) is None and _has_minimum_comparisons(progress, rules)


def _has_minimum_comparisons(progress: BatchProgress, rules: StoppingRules) -> bool:
    return 2 * progress.succeeded / max(progress.essays, 1) >= rules.min_comparisons_per_essay


def _limit_reached(progress: BatchProgress, rules: StoppingRules) -> StopReason | None:
    """The limit that stops the batch whatever its quality (failures, budget, cost), if any."""
    if progress.attempted >= rules.min_attempts_for_failure_check:
        if progress.succeeded / progress.attempted < rules.min_success_rate:
            return StopReason.TOO_MANY_FAILURES
    if progress.attempted >= progress.budget:
        return StopReason.BUDGET
    if progress.max_cost is not None and progress.cost is not None and progress.cost >= progress.max_cost:
        return StopReason.COST_CEILING
    return None


def affordable(cost: float | None, max_cost: float | None, paid: int, in_flight: int) -> int | None:
    """How many more comparisons fit under the cost ceiling at the mean cost of the `paid` ones so
    far, less those in flight; None when there is no ceiling or no cost to go by yet."""
    if max_cost is None or cost is None or paid == 0 or cost <= 0:
        return None
    return max(0, math.floor((max_cost - cost) / (cost / paid)) - in_flight)
