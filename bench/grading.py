"""How far a teacher can trust the grades the CJ Service serves, over cohorts unlike our own.

Each family changes one thing of a base scenario and runs whole batches through the engine as the
service runs them (adaptive pairing, the prior chosen from the data, the service's default budget of
12 comparisons per essay), then grades them with `cj_svc.engine.grading.grade`, the function whose
output the service stores and serves. Probabilities are measured exactly as served: every rung of
the ladder kept (the below-lowest grade included), nothing renormalised.

Base: N = 100 students with normal true scores (SD 2 logits); the 9 grades of eng5_np_national_9_step
cut at uneven population quantiles; two anchors per grade drawn from inside their band; a logistic
judge with position bias 0.3. Families: judge (probit; 10 % lapses; position bias 0.6; discrimination
varying by pair; right on the true order except 15 % random flips), true scores (lognormal, bimodal,
five tied levels), anchors (only 4 of the 9 grades), and N = 30 and 300.

Each family pools at least 4,000 students (--students): 40 batches, and 134 of N = 30.
Columns (students of all seeds pooled): top-label ECE (10 bins; +/- its standard error over batches,
by resampling whole batches) and classwise ECE; Brier score; exact agreement of the most probable
grade and of the one-hot band (the grade whose served band holds the score), and their difference
averaged over batches +/- its standard error; adjacent agreement of the most probable grade;
coverage of the served 95 % interval (the sampled posterior's 2.5 % and 97.5 % points) of the true
score overall and in the top and bottom tenth of true scores (the truth put on the judge's logit
scale near even pairs: 4 dP/dd at d = 0; not defined for the flipping judge), in the top and bottom
tenth of served scores (S: the essays a teacher sees at the ends of the list; a posterior interval
shrinks the truly extreme towards the middle, so it covers them less often than those served as
extreme), and the same against the pseudo-true scores (PT:
the model fitted to the expected outcome of every comparison made, which is what its scores can at
best recover from a judge it does not fit, such as lapses, probit or varying discrimination; for the
logistic judge the two agree); SSR minus corr(score, truth)^2 over all essays.
Run: .venv/bin/python bench/grading.py [--seeds 40] [--families base probit ...] (about 9-15 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit, ndtr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cj_svc.engine.bradley_terry import Comparisons, Fit, fit  # noqa: E402
from cj_svc.engine.grading import grade, probability_matrix  # noqa: E402
from cj_svc.engine.pairing import PairingState, next_wave  # noqa: E402
from cj_svc.engine.population import final_fit  # noqa: E402
from cj_svc.engine.prior import PriorChoice  # noqa: E402
from cj_svc.engine.scales import get_scale  # noqa: E402

SCALE = get_scale("eng5_np_national_9_step")
LADDER = SCALE.ladder  # "0" (below lowest), "1" .. "9"
PER_ESSAY = 12  # the service's default budget per essay
# cumulative population shares below each boundary between grades 1..9: bands of unequal width
UNEVEN_QUANTILES = np.array([0.04, 0.12, 0.25, 0.42, 0.60, 0.75, 0.87, 0.95])


@dataclass(frozen=True)
class Scenario:
    n: int = 100
    scores: str = "normal"  # normal, lognormal, bimodal, tied
    judge: str = "logistic"  # logistic, probit, flips
    lapse: float = 0.0
    bias: float = 0.3
    discrimination_sd: float = 0.0  # log-SD of a per-pair discrimination factor
    anchor_grades: tuple[int, ...] = tuple(range(1, 10))  # grades (1..9) that have anchors
    anchors_per_grade: int = 2


BASE = Scenario()
FAMILIES = {
    "base": BASE,
    "probit": replace(BASE, judge="probit"),
    "lapse 10%": replace(BASE, lapse=0.10),
    "bias 0.6": replace(BASE, bias=0.6),
    "discrim varies": replace(BASE, discrimination_sd=0.5),
    "15% flips": replace(BASE, judge="flips"),
    "lognormal": replace(BASE, scores="lognormal"),
    "bimodal": replace(BASE, scores="bimodal"),
    "5 tied levels": replace(BASE, scores="tied"),
    "sparse anchors": replace(BASE, anchor_grades=(2, 4, 6, 8)),
    "N=30": replace(BASE, n=30),
    "N=300": replace(BASE, n=300),
}


def draw_scores(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.normal(0, 2.0, size)
    if kind == "lognormal":  # right-skewed, SD about 2
        raw = rng.lognormal(0, 0.8, size)
        return 2.0 * (raw - 1.38) / 1.23
    if kind == "bimodal":
        return np.where(rng.random(size) < 0.5, -1.6, 1.6) + rng.normal(0, 1.0, size)
    if kind == "tied":
        return rng.choice([-3.0, -1.5, 0.0, 1.5, 3.0], size)
    raise ValueError(kind)


def judge_probability(s: Scenario, difference: np.ndarray, factor: np.ndarray | float = 1.0) -> np.ndarray:
    """P(the essay shown first wins) at a true difference, for a discrimination factor."""
    d = (difference + s.bias) * factor
    if s.judge == "logistic":
        p = expit(d)
    elif s.judge == "probit":
        p = ndtr(d)
    elif s.judge == "flips":
        p = np.where(d > 0, 0.85, np.where(d < 0, 0.15, 0.5))
    else:
        raise ValueError(s.judge)
    return (1 - s.lapse) * p + s.lapse / 2


def p_first_wins(s: Scenario, difference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    factor = rng.lognormal(0, s.discrimination_sd, difference.shape) if s.discrimination_sd else 1.0
    return judge_probability(s, difference, factor)


def expected_p_first_wins(s: Scenario, difference: np.ndarray) -> np.ndarray:
    """P(the essay shown first wins) averaged over the judge's discrimination factor (Gauss-Hermite)."""
    if not s.discrimination_sd:
        return judge_probability(s, difference)
    nodes, weights = np.polynomial.hermite_e.hermegauss(24)
    factors = np.exp(s.discrimination_sd * nodes)
    return judge_probability(s, difference[:, None], factors[None, :]) @ (weights / weights.sum())


def pseudo_true_scores(n: int, data: Comparisons, p_first: np.ndarray) -> np.ndarray:
    """The scores the fit would reach if each comparison made were repeated without end: the
    Bradley-Terry model with its order effect fitted to every comparison's expected outcome
    (centred; a vanishing ridge only fixes the origin). For a judge the model fits, these are the
    true scores on its logit scale; for one it does not (lapses, probit, varying discrimination),
    they are what the model can at best recover from these pairs."""
    first, second, ridge = data.first, data.second, 1e-6

    def loss(x: np.ndarray) -> tuple[float, np.ndarray]:
        eta = x[first] - x[second] + x[n]
        residual = p_first - expit(eta)
        gradient = np.empty(n + 1)
        gradient[:n] = np.bincount(second, residual, n) - np.bincount(first, residual, n) + 2 * ridge * x[:n]
        gradient[n] = -residual.sum()
        value = -(p_first * log_expit(eta) + (1 - p_first) * log_expit(-eta)).sum() + ridge * (x[:n] ** 2).sum()
        return float(value), gradient

    solution = minimize(loss, np.zeros(n + 1), jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-9})
    scores = solution.x[:n]
    return scores - scores.mean()


def logit_scale(s: Scenario) -> float | None:
    """The judge's logit scale near even pairs, 4 dP/dd at d = 0 (None where P jumps there)."""
    if s.judge == "flips":
        return None
    slope = 1.0 if s.judge == "logistic" else 4 * 0.3989422804
    discrimination = np.exp(s.discrimination_sd**2 / 2)  # mean of the lognormal factor
    return slope * discrimination * (1 - s.lapse)


def one_batch_setup(s: Scenario, seed: int) -> tuple[np.random.Generator, np.ndarray, list[str], np.ndarray]:
    """(the batch's generator, true scores of students then anchors, anchors' grades, grade bounds)."""
    rng = np.random.default_rng(seed)
    population = draw_scores(s.scores, 200_000, np.random.default_rng(10**6 + seed))
    bounds = np.quantile(population, UNEVEN_QUANTILES)
    students = draw_scores(s.scores, s.n, rng)
    anchor_scores, anchor_grades = [], []
    for g in s.anchor_grades:  # grade g (1..9) lies between bounds[g-2] and bounds[g-1]
        inside = population[
            (population > (bounds[g - 2] if g > 1 else -np.inf)) & (population <= (bounds[g - 1] if g < 9 else np.inf))
        ]
        if len(inside) == 0:  # tied levels: a grade no essay can have gets no anchor
            continue
        anchor_scores += list(rng.choice(inside, s.anchors_per_grade, replace=False))
        anchor_grades += [str(g)] * s.anchors_per_grade
    return rng, np.concatenate([students, anchor_scores]), anchor_grades, bounds


def judge_wave(
    s: Scenario,
    theta: np.ndarray,
    state: PairingState,
    prior: PriorChoice,
    current: Fit | None,
    rng: np.random.Generator,
    pick: np.random.Generator,
    max_pairs: int | None = None,
    informative: bool = True,
) -> Fit | None:
    """One wave as the service runs it: pairs chosen, judged, recorded, the prior fed and the scores
    refitted (warm); the new fit, or None when no pair is left."""
    wave = next_wave(state, pick, max_pairs=max_pairs, informative=informative)
    if not wave:
        return None
    first, second = np.array([a for a, _ in wave]), np.array([b for _, b in wave])
    won = rng.random(len(wave)) < p_first_wins(s, theta[first] - theta[second], rng)
    for a, b in wave:
        state.record(a, b)
    prior.add_wave(Comparisons(first, second, won))
    result = fit(len(theta), prior.answers, prior.precision, start=None if current is None else current.scores)
    state.scores, state.standard_errors, state.covariance = result.scores, result.standard_errors, result.covariance
    return result


def one_batch(s: Scenario, seed: int) -> dict[str, np.ndarray]:
    rng, theta, anchor_grades, bounds = one_batch_setup(s, seed)
    students = theta[: s.n]
    total = len(theta)
    is_anchor = np.arange(total) >= s.n
    state = PairingState.new(total, is_anchor)
    prior = PriorChoice(total, is_anchor)
    current = None
    pick = np.random.default_rng(seed + 7)
    while len(prior.answers) < PER_ESSAY * total // 2:
        judged = judge_wave(s, theta, state, prior, current, rng, pick, PER_ESSAY * total // 2 - len(prior.answers))
        if judged is None:
            break
        current = judged
    answers = prior.answers
    final = final_fit(total, answers, prior.final_precision, is_anchor)  # as the workflow's final numbers
    ids = [f"e{i}" for i in range(total)]
    grades = grade(SCALE, ids, [None] * s.n + anchor_grades, final, answers)
    student_index = np.arange(s.n)
    truth = np.searchsorted(bounds, students) + 1  # ladder index: 0 is the below-lowest "0"
    served_bands = [(LADDER.index(g), -np.inf if lo is None else lo, np.inf if hi is None else hi)
                    for g, lo, hi in grades.bands]  # fmt: skip
    band_of = np.array([next((k for k, lo, hi in served_bands if lo <= x < hi), 0) for x in final.scores[: s.n]])
    scale = logit_scale(s)
    centred_truth = theta - theta.mean()
    pseudo_true = pseudo_true_scores(
        total, answers, expected_p_first_wins(s, theta[answers.first] - theta[answers.second])
    )

    low, high = final.interval_95()

    def covers(target: np.ndarray) -> np.ndarray:
        """Whether each student's 95 % interval, as served, holds its `target` score."""
        return (low[: s.n] <= target[: s.n]) & (target[: s.n] <= high[: s.n])

    return {
        "probs": probability_matrix(grades, LADDER, student_index)
        if grades.projections
        else np.full((s.n, len(LADDER)), np.nan),
        "truth": truth,
        "band": band_of if grades.bands else np.zeros(s.n, int),
        "covered": covers(scale * centred_truth) if scale else np.full(s.n, np.nan),
        "covered_pseudo": covers(pseudo_true),
        "tenth": tenth_of(students),  # 0 bottom tenth, 2 top tenth
        "tenth_served": tenth_of(final.scores[: s.n]),  # the tenths as the teacher sees them
        "ssr_gap": np.array([final.reliability() - np.corrcoef(final.scores, theta)[0, 1] ** 2]),
    }


def tenth_of(scores: np.ndarray) -> np.ndarray:
    """0 for the bottom tenth of `scores`, 2 for the top tenth, 1 between."""
    return np.digitize(scores, np.quantile(scores, [0.1, 0.9]))


def top_label_ece(probs: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == truth
    return _binned_gap(confidence, correct.astype(float), bins)


def classwise_ece(probs: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    """Mean over grades of the binned gap between P(grade) and how often that grade was true."""
    gaps = [_binned_gap(probs[:, k], (truth == k).astype(float), bins) for k in range(probs.shape[1])]
    return float(np.mean(gaps))


def _binned_gap(predicted: np.ndarray, observed: np.ndarray, bins: int) -> float:
    which = np.clip((predicted * bins).astype(int), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.mean() * abs(predicted[inside].mean() - observed[inside].mean())
    return float(gap)


def _share(covered: np.ndarray) -> float:
    """Share of True among the defined values; NaN when none is (the flipping judge has no logit scale)."""
    defined = covered[~np.isnan(covered)]
    return float(defined.mean()) if len(defined) else float("nan")


def summary(runs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    pooled = {key: np.concatenate([r[key] for r in runs]) for key in runs[0]}
    probs, truth = pooled["probs"], pooled["truth"]
    graded = ~np.isnan(probs).any(axis=1)
    probs, truth_g = probs[graded], truth[graded]
    best = probs.argmax(axis=1)
    onehot = np.eye(probs.shape[1])[truth_g]
    covered, tenth, served = pooled["covered"], pooled["tenth"], pooled["tenth_served"]
    pseudo = pooled["covered_pseudo"].astype(float)
    return {
        "graded": graded.mean(),
        "ece": top_label_ece(probs, truth_g), "cw_ece": classwise_ece(probs, truth_g),
        "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1))),
        "exact": float(np.mean(best == truth_g)), "adjacent": float(np.mean(np.abs(best - truth_g) <= 1)),
        "band_exact": float(np.mean(pooled["band"] == truth)),
        "cover": _share(covered), "cover_low": _share(covered[tenth == 0]), "cover_high": _share(covered[tenth == 2]),
        "served_low": _share(covered[served == 0]), "served_high": _share(covered[served == 2]),
        "pseudo": _share(pseudo), "pseudo_low": _share(pseudo[tenth == 0]), "pseudo_high": _share(pseudo[tenth == 2]),
        "ssr_gap": float(np.mean(pooled["ssr_gap"])),
    }  # fmt: skip


def standard_errors(runs: list[dict[str, np.ndarray]], resamples: int = 200) -> dict[str, float]:
    """Standard errors over batches, whose students share their anchors and bands and so are not
    independent: of exact minus band agreement, from the batches' own differences; of top-label
    ECE, by resampling whole batches."""
    differences = []
    for run in runs:
        graded = ~np.isnan(run["probs"]).any(axis=1)
        if graded.any():
            truth = run["truth"][graded]
            differences.append(
                np.mean(run["probs"][graded].argmax(axis=1) == truth) - np.mean(run["band"][graded] == truth)
            )
    rng = np.random.default_rng(0)
    eces = []
    for _ in range(resamples):
        chosen = [runs[k] for k in rng.integers(len(runs), size=len(runs))]
        probs, truth = np.concatenate([r["probs"] for r in chosen]), np.concatenate([r["truth"] for r in chosen])
        graded = ~np.isnan(probs).any(axis=1)
        eces.append(top_label_ece(probs[graded], truth[graded]))
    return {
        "exact_minus_band": float(np.mean(differences)),
        "exact_minus_band_se": float(np.std(differences, ddof=1) / np.sqrt(len(differences))),
        "ece_se": float(np.std(eces, ddof=1)),
    }


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Processes that each run whole batches with one BLAS thread: the workers already fill the
    cores, and BLAS threads on top of them slowed N = 300 from 76 s to over 15 minutes on 2 cores.
    Spawned, so that each worker's BLAS starts with the setting."""
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=40)  # fewer: ECE moves by 0.03 between blocks of 10 seeds
    # Small cohorts run more batches, so that every family's figures pool as many students: with
    # 40 batches of 30 (1,200 students), top-label ECE was 0.065 on seeds 0-39 and 0.028 on 40-119.
    parser.add_argument("--students", type=int, default=4000, help="students pooled per family, at least")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"{args.seeds} seeds per family, more for small cohorts (at least {args.students} students); "
          f"{PER_ESSAY} comparisons per essay; probabilities as served")  # fmt: skip
    print(f"{'family':<15} {'ECE':>11} {'cwECE':>5} {'Brier':>5} {'exact':>5} {'band':>5} {'exact-band':>12} "
          f"{'adj':>5} {'cov':>5} {'low10':>5} {'top10':>5} {'lowS':>5} {'topS':>5} {'covPT':>5} {'lowPT':>5} {'topPT':>5} {'SSRgap':>6}")  # fmt: skip
    for name in args.families:
        seeds = max(args.seeds, -(-args.students // FAMILIES[name].n))
        with worker_pool(args.workers) as pool:
            runs = list(pool.map(one_batch, [FAMILIES[name]] * seeds, range(seeds)))
        m, se = summary(runs), standard_errors(runs)
        print(f"{name:<15} {m['ece']:>5.3f}±{se['ece_se']:.3f} {m['cw_ece']:>5.3f} {m['brier']:>5.3f} {m['exact']:>5.2f} "
              f"{m['band_exact']:>5.2f} {se['exact_minus_band']:>+6.3f}±{se['exact_minus_band_se']:.3f} "
              f"{m['adjacent']:>5.2f} {m['cover']:>5.2f} {m['cover_low']:>5.2f} "
              f"{m['cover_high']:>5.2f} {m['served_low']:>5.2f} {m['served_high']:>5.2f} {m['pseudo']:>5.2f} {m['pseudo_low']:>5.2f} {m['pseudo_high']:>5.2f} "
              f"{m['ssr_gap']:>+6.3f}" + ("" if m["graded"] == 1 else f"  graded {m['graded']:.0%}")
              + ("" if seeds == args.seeds else f"  ({seeds} batches)"),
              flush=True)  # fmt: skip
    print(f"took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
