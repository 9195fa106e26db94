"""Engine speed: fit + standard errors + the next wave's pairs, from 100 to 3,000 essays.

Each size gets 10 comparisons per essay (1,000 essays -> 10,000 comparisons), from a cold start.
Target: under 1 s at 1,000 essays on this 2-core machine. Also timed: re-choosing the prior's width
(engine/prior.py: a wave scored and every candidate refitted, warm), which happens each time the
answers have grown by a quarter.
Run: .venv/bin/python bench/engine_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cj_svc.engine.bradley_terry import Comparisons, fit  # noqa: E402
from cj_svc.engine.pairing import PairingState, next_wave  # noqa: E402
from cj_svc.engine.prior import PriorChoice  # noqa: E402


def case(n: int, seed: int = 0) -> tuple[float, float, int, float]:
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 1.5, n)
    m = 10 * n
    first = rng.integers(0, n, m)
    second = (first + rng.integers(1, n, m)) % n
    won = rng.random(m) < 1 / (1 + np.exp(-(theta[first] - theta[second] + 0.3)))
    state = PairingState.new(n)
    for a, b in zip(first.tolist(), second.tolist(), strict=True):
        state.record(a, b)
    started = time.perf_counter()
    result = fit(n, Comparisons(first, second, won))
    fitted = time.perf_counter()
    state.scores, state.standard_errors, state.covariance = result.scores, result.standard_errors, result.covariance
    wave = next_wave(state, np.random.default_rng(seed))
    paired = time.perf_counter()
    # The prior choice after the last waves (a fifth of the answers), those before already added.
    last = m - m // 5
    prior = PriorChoice(n)
    prior.add_wave(Comparisons(first[:last], second[:last], won[:last]))
    before = time.perf_counter()
    prior.add_wave(Comparisons(first[last:], second[last:], won[last:]))
    return fitted - started, paired - fitted, len(wave), time.perf_counter() - before


def main() -> None:
    print(
        f"{'essays':>7} {'comparisons':>12} {'fit + SE s':>11} {'next wave s':>12} {'total s':>8} {'pairs':>6}"
        f" {'prior refit s':>14}"
    )
    for n in (100, 300, 1000, 2000, 3000):
        times = [case(n, seed) for seed in range(3)]
        fit_s = min(t[0] for t in times)
        pair_s = min(t[1] for t in times)
        prior_s = min(t[3] for t in times)
        print(
            f"{n:>7} {10 * n:>12} {fit_s:>11.3f} {pair_s:>12.3f} {fit_s + pair_s:>8.3f} {times[0][2]:>6}"
            f" {prior_s:>14.3f}"
        )


if __name__ == "__main__":
    main()
