"""How many comparisons the engine needs, and how honest its reliability is.

Latent true scores for N essays (scale SD 1.5 and 3.0 logits) plus 9 anchors, one per grade of
`eng5_np_national_9_step` (true grades: bands of equal probability under the true distribution). A
simulated judge answers P(Essay A wins) = 0.97 * sigmoid(theta_A - theta_B + 0.3) + 0.03 * 0.5.
For adaptive and random pairing, medians over the seeds of:
  comparisons per essay until Spearman(estimate, truth) >= 0.90; SSR there beside the true
  reliability corr(estimate, truth)^2; the estimated position bias after 20 comparisons per essay;
  and the prior width (alpha) the engine chose (cj_svc/engine/prior.py). How far the grades can be
  trusted, measured on what the service serves, is bench/grading.py's.
Run: .venv/bin/python bench/cj_efficiency.py [--seeds 20] [--sizes 30 100 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm, spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cj_svc.engine.bradley_terry import Comparisons, fit, judge_position_bias, scale_separation_reliability  # noqa: E402
from cj_svc.engine.pairing import PairingState, next_wave  # noqa: E402
from cj_svc.engine.prior import PriorChoice  # noqa: E402
from cj_svc.engine.scales import get_scale  # noqa: E402

BIAS, LAPSE = 0.3, 0.03
MAX_PER_ESSAY = 40
BIAS_AT = 20
SCALE = get_scale("eng5_np_national_9_step")
GRADES = len(SCALE.grades)


def one_run(n: int, sd: float, seed: int, informative: bool) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    students = rng.normal(0, sd, n)
    anchors = norm.ppf((np.arange(GRADES) + 0.5) / GRADES, scale=sd)
    theta = np.concatenate([students, anchors])
    total = len(theta)
    is_anchor = np.arange(total) >= n
    state = PairingState.new(total, is_anchor)
    result: dict[str, float] = {}
    prior = PriorChoice(total, is_anchor)
    current = None
    pick = np.random.default_rng(seed + 10_000)
    while 2 * len(prior.answers) / total < MAX_PER_ESSAY:
        wave = next_wave(state, pick, informative=informative)
        if not wave:
            break
        won_now = []
        for a, b in wave:
            p = (1 - LAPSE) / (1 + np.exp(-(theta[a] - theta[b] + BIAS))) + LAPSE / 2
            won_now.append(bool(rng.random() < p))
            state.record(a, b)
        prior.add_wave(Comparisons.from_lists([a for a, _ in wave], [b for _, b in wave], won_now))
        current = fit(
            total,
            prior.answers,
            prior.precision,
            start=None if current is None else current.scores,
        )
        state.scores, state.standard_errors, state.covariance = (
            current.scores,
            current.standard_errors,
            current.covariance,
        )
        per_essay = 2 * len(prior.answers) / total
        if "comparisons" not in result and spearmanr(current.scores, theta).statistic >= 0.90:
            result["comparisons"] = per_essay
            result["ssr"] = scale_separation_reliability(current.scores, current.standard_errors)
            result["true_rel"] = float(np.corrcoef(current.scores, theta)[0, 1] ** 2)
            result["alpha"] = prior.alpha
        if "bias" not in result and per_essay >= BIAS_AT:
            result["bias"] = judge_position_bias(current, prior.answers)[0]
        if "comparisons" in result and "bias" in result:
            break
    result.setdefault("comparisons", np.inf)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 100, 300])
    args = parser.parse_args()
    started = time.perf_counter()
    header = (
        f"{'N':>4} {'SD':>4} {'pairing':>8} {'comp/essay':>10} {'A/R':>5} {'SSR':>5} {'true rel':>8} "
        f"{'bias':>5} {'alpha':>6}"
    )
    print(f"medians over {args.seeds} seeds; true position bias {BIAS}")
    print(header)
    for n in args.sizes:
        for sd in (1.5, 3.0):
            medians = {}
            for strategy, informative in (("adaptive", True), ("random", False)):
                runs = [one_run(n, sd, seed, informative) for seed in range(args.seeds)]
                medians[strategy] = {
                    key: float(
                        (np.median if key == "comparisons" else np.nanmedian)([r.get(key, np.nan) for r in runs])
                    )
                    for key in runs[0] | runs[-1]
                    if not key.startswith("_")
                }
            ratio = medians["adaptive"]["comparisons"] / medians["random"]["comparisons"]
            for strategy in ("adaptive", "random"):
                m = medians[strategy]
                print(
                    f"{n:>4} {sd:>4} {strategy:>8} {m['comparisons']:>10.1f} "
                    f"{(f'{ratio:.2f}' if strategy == 'adaptive' else ''):>5} {m['ssr']:>5.2f} {m['true_rel']:>8.2f} "
                    f"{m['bias']:>5.2f} {m['alpha']:>6.2f}",
                    flush=True,
                )
    print(f"took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
