"""Engine speed and the sparse solver's accuracy, from 1,000 to 100,000 essays.

Part 1, accuracy: a batch of 1,000 essays run with adaptive pairing (10 comparisons per essay), then
fitted both ways: the dense solver (exact inverse) and the sparse one that larger cohorts use
(estimated variances). Per prior width: the largest score difference, and the sparse standard errors
over the exact ones (mean, RMS error, the top and bottom tenth of the scale, min, max).

Part 2, speed: one whole wave as the workflow runs it, at the worst point: the fit (warm from the
last wave's scores) with its standard errors, the prior choice scoring the wave and refitting its
candidates, and the next wave's pairs. Comparisons are 10 per essay, in waves shaped like adaptive
pairing (two random waves, then partners near each other on a noisy view of the true scale). Each
size runs in its own process, whose peak resident memory is reported.
Targets: 10,000 essays / 100,000 comparisons under 1 s; 100,000 / 1,000,000 under 10 s and 2 GiB.
Run: .venv/bin/python bench/engine_speed.py [--sizes 1000 2000 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cj_svc.engine import bradley_terry  # noqa: E402
from cj_svc.engine.bradley_terry import Comparisons, fit  # noqa: E402
from cj_svc.engine.pairing import PairingState, next_wave  # noqa: E402
from cj_svc.engine.prior import ALPHAS, REFIT_GROWTH, PriorChoice  # noqa: E402

PER_ESSAY = 10  # comparisons per essay: each essay is in 20 of them


def waves_like_adaptive(n: int, seed: int = 0) -> tuple[np.ndarray, Comparisons, np.ndarray]:
    """True scores, comparisons, and each comparison's wave."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 1.7, n)
    first, second, waves = [], [], []
    for wave in range(2 * PER_ESSAY):
        if wave < 2:
            order = rng.permutation(n)
            a, b = order[: n // 2], order[n // 2 : 2 * (n // 2)]
        else:  # neighbours on a view of the scale that sharpens wave by wave
            order = np.argsort(theta + rng.normal(0, 0.6 / (1 + wave / 4), n))
            offset = int(rng.integers(1, 13))
            a, b = order[:-offset:2], order[offset::2]
            a, b = a[: min(len(a), len(b))], b[: min(len(a), len(b))]
        first.append(a)
        second.append(b)
        waves.append(np.full(len(a), wave))
    a, b = np.concatenate(first), np.concatenate(second)
    won = rng.random(len(a)) < 1 / (1 + np.exp(-(theta[a] - theta[b] + 0.2)))
    return theta, Comparisons(a, b, won), np.concatenate(waves)


def adaptive_batch(n: int, seed: int = 0) -> Comparisons:
    """A batch run by the engine itself: adaptive pairing, a logistic judge, SD 1.7 logits."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 1.7, n)
    state = PairingState.new(n)
    first: list[int] = []
    second: list[int] = []
    won: list[bool] = []
    result = None
    while len(first) < PER_ESSAY * n:
        if result is not None:
            state.scores, state.standard_errors, state.covariance = (
                result.scores,
                result.standard_errors,
                result.covariance,
            )
        for a, b in next_wave(state, rng):
            state.record(a, b)
            first.append(a)
            second.append(b)
            won.append(bool(rng.random() < 1 / (1 + np.exp(-(theta[a] - theta[b])))))
        result = fit(n, Comparisons.from_lists(first, second, won), start=None if result is None else result.scores)
    return Comparisons.from_lists(first, second, won)


def accuracy(n: int = 1000) -> None:
    data = adaptive_batch(n)
    print(f"sparse standard errors against the exact inverse: {n} essays, {len(data)} comparisons, adaptive")
    print(f"{'prior SD':>8} {'max |score diff|':>17} {'mean':>6} {'RMS err':>8} {'tails':>6} {'min':>6} {'max':>6}")
    limit = bradley_terry.DENSE_UP_TO
    for alpha in sorted(ALPHAS, reverse=True):
        exact = fit(n, data, alpha)
        bradley_terry.DENSE_UP_TO = 0
        try:
            estimated = fit(n, data, alpha)
        finally:
            bradley_terry.DENSE_UP_TO = limit
        ratio = estimated.standard_errors / exact.standard_errors
        order = np.argsort(exact.scores)
        tails = np.concatenate([order[: n // 10], order[-(n // 10) :]])
        print(
            f"{(2 * alpha) ** -0.5:>8.2f} {np.max(np.abs(estimated.scores - exact.scores)):>17.1e} {ratio.mean():>6.3f}"
            f" {np.sqrt(np.mean((ratio - 1) ** 2)):>8.4f} {ratio[tails].mean():>6.3f} {ratio.min():>6.3f}"
            f" {ratio.max():>6.3f}"
        )


def one_wave(n: int) -> dict[str, float]:
    """Times of the last wave's work, when the prior's candidates are due to be refitted."""
    theta, data, waves = waves_like_adaptive(n)
    seen = waves < waves.max()
    # The prior's candidates were last fitted on the waves before `due`; the answers since have
    # grown past REFIT_GROWTH, so adding them refits.
    due = int(np.searchsorted(np.cumsum(np.bincount(waves)), len(data) / REFIT_GROWTH, side="right"))
    prior = PriorChoice(n)
    prior.add_wave(Comparisons(data.first[waves < due], data.second[waves < due], data.first_won[waves < due]))
    newest = waves >= due
    previous = fit(n, Comparisons(data.first[seen], data.second[seen], data.first_won[seen]), prior.alpha)
    state = PairingState.new(n)
    for a, b in zip(data.first.tolist(), data.second.tolist(), strict=True):
        state.record(a, b)
    started = time.perf_counter()
    result = fit(n, data, prior.alpha, start=previous.scores)
    fitted = time.perf_counter()
    prior.add_wave(Comparisons(data.first[newest], data.second[newest], data.first_won[newest]))
    chosen = time.perf_counter()
    state.scores, state.standard_errors, state.covariance = result.scores, result.standard_errors, result.covariance
    pairs = next_wave(state, np.random.default_rng(0))
    paired = time.perf_counter()
    return {
        "essays": n,
        "comparisons": len(data),
        "fit": fitted - started,
        "prior": chosen - fitted,
        "pairs": paired - chosen,
        "wave": paired - started,
        "new pairs": len(pairs),
        "spearman": float(np.corrcoef(np.argsort(np.argsort(result.scores)), np.argsort(np.argsort(theta)))[0, 1]),
        "peak MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 10000, 100000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a single size, in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_wave(args.one)))
        return
    accuracy()
    print()
    print(f"one wave (solver: dense up to {bradley_terry.DENSE_UP_TO:,} essays, sparse beyond)")
    print(
        f"{'essays':>7} {'comparisons':>12} {'fit+SE s':>9} {'prior s':>8} {'pairs s':>8} {'wave s':>7}"
        f" {'spearman':>9} {'peak MiB':>9}"
    )
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(
            f"{n:>7} {row['comparisons']:>12} {row['fit']:>9.3f} {row['prior']:>8.3f} {row['pairs']:>8.3f}"
            f" {row['wave']:>7.3f} {row['spearman']:>9.3f} {row['peak MiB']:>9.0f}"
        )


if __name__ == "__main__":
    main()
