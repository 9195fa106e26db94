"""Bradley-Terry scores, standard errors, position bias, SSR and self-consistency."""

from __future__ import annotations

import choix
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cj_svc.engine.bradley_terry import (
    Comparisons,
    fit,
    judge_position_bias,
    scale_separation_reliability,
    self_consistency,
)


def simulate(n: int, m: int, seed: int, bias: float = 0.0, sd: float = 1.5) -> tuple[np.ndarray, Comparisons]:
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, sd, n)
    first = rng.integers(0, n, m)
    second = (first + rng.integers(1, n, m)) % n
    won = rng.random(m) < 1 / (1 + np.exp(-(theta[first] - theta[second] + bias)))
    return theta, Comparisons(first, second, won)


def test_equals_choix_penalized_mle_without_bias() -> None:
    _, data = simulate(40, 300, seed=1)
    pairs = [
        (int(a), int(b)) if w else (int(b), int(a))
        for a, b, w in zip(data.first, data.second, data.first_won, strict=True)
    ]
    expected = choix.opt_pairwise(40, pairs, alpha=0.01)
    ours = fit(40, data, alpha=0.01, estimate_bias=False)
    np.testing.assert_allclose(ours.scores, expected - expected.mean(), atol=1e-5)


def test_scores_centred_and_standard_errors_finite_and_positive_even_for_all_wins() -> None:
    # essay 0 wins everything, essay 1 loses everything
    first = [0, 0, 0, 2, 3, 1, 1, 2, 4, 3]
    second = [2, 3, 4, 1, 1, 4, 2, 3, 0, 4]
    won = [True, True, True, True, True, False, False, True, False, True]
    result = fit(5, Comparisons.from_lists(first, second, won))
    assert abs(result.scores.sum()) < 1e-9
    assert np.all(np.isfinite(result.standard_errors)) and np.all(result.standard_errors > 0)
    assert int(np.argmax(result.scores)) == 0 and int(np.argmin(result.scores)) == 1


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 12), m=st.integers(5, 60), seed=st.integers(0, 10_000))
def test_relabelling_essays_does_not_change_results(n: int, m: int, seed: int) -> None:
    _, data = simulate(n, m, seed)
    permutation = np.random.default_rng(seed).permutation(n)
    relabelled = Comparisons(permutation[data.first], permutation[data.second], data.first_won)
    a, b = fit(n, data), fit(n, relabelled)
    np.testing.assert_allclose(b.scores[permutation], a.scores, atol=1e-6)
    np.testing.assert_allclose(b.standard_errors[permutation], a.standard_errors, atol=1e-6)
    assert abs(a.position_bias - b.position_bias) < 1e-6


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 10), seed=st.integers(0, 10_000))
def test_an_essay_that_beats_every_other_ranks_first(n: int, seed: int) -> None:
    _, data = simulate(n, 4 * n, seed)
    champion_first = [0] * (n - 1)
    others = list(range(1, n))
    first = np.concatenate([data.first, champion_first, others])
    second = np.concatenate([data.second, others, champion_first])
    won = np.concatenate([data.first_won, [True] * (n - 1), [False] * (n - 1)])
    # remove the champion's losses from the random part
    keep = ~(((first == 0) & ~won) | ((second == 0) & won))
    result = fit(n, Comparisons(first[keep], second[keep], won[keep]))
    assert int(np.argmax(result.scores)) == 0


def test_standard_errors_shrink_as_comparisons_are_added() -> None:
    _, data = simulate(30, 1200, seed=3)
    previous = None
    for m in (150, 300, 600, 1200):
        part = Comparisons(data.first[:m], data.second[:m], data.first_won[:m])
        mean_se = fit(30, part).standard_errors.mean()
        if previous is not None:
            assert mean_se < previous
        previous = mean_se


def test_position_bias_is_estimated() -> None:
    theta, data = simulate(100, 4000, seed=4, bias=0.3)
    result = fit(100, data)
    assert abs(result.position_bias - 0.3) < 0.1
    assert 0 < result.position_bias_se < 0.1
    assert np.corrcoef(result.scores, theta)[0, 1] > 0.9


def test_position_bias_on_the_true_scale_undoes_the_attenuation_of_uncertain_scores() -> None:
    # Five comparisons per essay on a wide scale: the fitted order effect sits beside uncertain
    # scores and comes out too small (about 0.49 of 0.6); the judge's bias is corrected for that.
    estimates = []
    for seed in range(10):
        _, data = simulate(200, 1000, seed=seed, bias=0.6, sd=3.0)
        result = fit(200, data, alpha=0.08)
        estimates.append((result.position_bias, judge_position_bias(result, data)[0]))
    fitted, corrected = np.mean(estimates, axis=0)
    assert fitted < corrected and abs(corrected - 0.6) < abs(fitted - 0.6)


def test_ssr_formula() -> None:
    scores = np.array([-2.0, 0.0, 2.0])
    ses = np.array([0.5, 0.5, 0.5])
    # shrunken scores: the unshrunk spread is var(scores) + mean(SE^2)
    spread = np.var(scores) + 0.25
    assert scale_separation_reliability(scores, ses) == pytest.approx((spread - 0.25) / spread)
    assert scale_separation_reliability(np.zeros(3), ses) == 0.0


def test_self_consistency_counts_pairs_asked_both_ways() -> None:
    data = Comparisons.from_lists(
        first=[0, 1, 2, 3, 0],
        second=[1, 0, 3, 2, 2],
        first_won=[True, False, True, True, True],  # 0 beats 1 twice; 2 then 3 win
    )
    assert self_consistency(data) == 0.5
    assert self_consistency(Comparisons.from_lists([0], [1], [True])) is None
