"""How many comparisons until students' grades are decided: the share of students whose most probable
grade has probability >= 0.8 (and >= 0.5), as served by `grading.grade` from the final fit the batch
would end with at that point, against comparisons per essay.

Same scenarios as bench/grading.py (its base family by default: 100 students, 9 grades of unequal
width, two anchors per grade, a logistic judge), run far past the service's default budget, with
random pairing and with the service's adaptive pairing, same seeds. The figure a grading stop rule
would need: comparisons per essay until 90 % of students hold a grade at P >= 0.8 (and >= 0.5), the
median over seeds, and adaptive over random.
Run: .venv/bin/python bench/grade_decisions.py [--families base probit] [--seeds 6] [--per-essay 60]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.grading import FAMILIES, LADDER, SCALE, Scenario, judge_wave, one_batch_setup, worker_pool  # noqa: E402
from cj_svc.engine.grading import grade, probability_matrix  # noqa: E402
from cj_svc.engine.pairing import PairingState  # noqa: E402
from cj_svc.engine.population import final_fit  # noqa: E402
from cj_svc.engine.prior import PriorChoice  # noqa: E402

CHECKPOINTS = (12, 24, 36, 48, 60)  # comparisons per essay (each essay judged this often)
LEVELS = (0.5, 0.8)  # grade probabilities at which "90 % of students decided" is timed


def decided_curve(
    s: Scenario, seed: int, informative: bool, per_essay: int
) -> tuple[dict[int, tuple[float, float]], dict[float, float]]:
    """({comparisons per essay: (share at P >= 0.8, share at P >= 0.5)} at each checkpoint,
    {level: comparisons per essay when 90 % of students first held a grade at P >= level (nan: not
    within `per_essay`)})."""
    rng, theta, anchor_grades, _ = one_batch_setup(s, seed)
    total = len(theta)
    is_anchor = np.arange(total) >= s.n
    state = PairingState.new(total, is_anchor)
    prior = PriorChoice(total, is_anchor)
    pick = np.random.default_rng(seed + 7)
    ids = [f"e{i}" for i in range(total)]
    current = None
    shares: dict[int, tuple[float, float]] = {}
    reached = dict.fromkeys(LEVELS, float("nan"))
    checkpoints = [c for c in CHECKPOINTS if c <= per_essay]
    while checkpoints:
        judged = judge_wave(s, theta, state, prior, current, rng, pick, informative=informative)
        if judged is None:
            break
        current = judged
        done = 2 * len(prior.answers) / total
        served = final_fit(total, prior.answers, prior.final_precision, is_anchor)  # as results would serve it
        grades = grade(SCALE, ids, [None] * s.n + anchor_grades, served, prior.answers)
        top = probability_matrix(grades, LADDER, np.arange(s.n)).max(axis=1) if grades.projections else np.zeros(1)
        for level in LEVELS:
            if np.isnan(reached[level]) and np.mean(top >= level) >= 0.9:
                reached[level] = done
        if done >= checkpoints[0]:
            shares[checkpoints.pop(0)] = (float(np.mean(top >= 0.8)), float(np.mean(top >= 0.5)))
    return shares, reached


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", nargs="+", default=["base", "probit"])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--per-essay", type=int, default=60)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    checkpoints = [c for c in CHECKPOINTS if c <= args.per_essay]
    print(f"{args.seeds} seeds; share of students at P >= 0.8 (P >= 0.5) by comparisons per essay; then the median")
    print("comparisons per essay until 90 % of students hold a grade at P >= 0.5 and >= 0.8 (-: not within the cap)")
    header = " ".join(f"{c:>11}" for c in checkpoints)
    print(f"{'family':<15} {'pairing':<9} {header} {'to 90%@0.5':>11} {'to 90%@0.8':>11}")
    with worker_pool(args.workers) as pool:
        for name in args.families:
            medians = {}
            for informative, label in ((False, "random"), (True, "adaptive")):
                runs = list(
                    pool.map(
                        decided_curve,
                        [FAMILIES[name]] * args.seeds,
                        range(args.seeds),
                        [informative] * args.seeds,
                        [args.per_essay] * args.seeds,
                    )
                )
                cells = [
                    f"{np.mean([r[c][0] for r, _ in runs]):.2f} ({np.mean([r[c][1] for r, _ in runs]):.2f})"
                    for c in checkpoints
                ]
                medians[label] = {
                    level: float(np.median([reached[level] for _, reached in runs]))  # nan when most did not
                    for level in LEVELS
                }
                to = " ".join(f"{'-' if np.isnan(m) else f'{m:.1f}':>11}" for m in medians[label].values())
                print(f"{name:<15} {label:<9} " + " ".join(f"{cell:>11}" for cell in cells) + f" {to}")
            ratio = medians["adaptive"][0.5] / medians["random"][0.5]
            print(f"{name:<15} adaptive / random, comparisons to 90 % at P >= 0.5: {ratio:.2f}")


if __name__ == "__main__":
    main()
