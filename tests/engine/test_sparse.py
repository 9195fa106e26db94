"""The engine past DENSE_UP_TO essays: sparse solves, estimated variances, neighbour pairing."""

from __future__ import annotations

import numpy as np
import pytest

from cj_svc.engine import bradley_terry, pairing, sparse
from cj_svc.engine.bradley_terry import Comparisons, fit
from cj_svc.engine.pairing import PairingState, next_wave
from cj_svc.engine.prior import PriorChoice


def adaptive_like(n: int, per_essay: int, seed: int) -> tuple[np.ndarray, Comparisons]:
    """Two random waves, then partners near each other on a noisy view of the true scale."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 1.7, n)
    first, second = [], []
    for wave in range(2 * per_essay):
        order = rng.permutation(n) if wave < 2 else np.argsort(theta + rng.normal(0, 0.5, n))
        offset = 1 if wave < 2 else int(rng.integers(1, 8))
        first.append(order[:-offset:2] if wave >= 2 else order[: n // 2])
        second.append(order[offset::2][: len(first[-1])] if wave >= 2 else order[n // 2 : 2 * (n // 2)])
        first[-1] = first[-1][: len(second[-1])]
    a, b = np.concatenate(first), np.concatenate(second)
    won = rng.random(len(a)) < 1 / (1 + np.exp(-(theta[a] - theta[b] + 0.3)))
    return theta, Comparisons(a, b, won)


@pytest.fixture
def sparse_engine(monkeypatch):
    """The sparse solver and neighbour pairing at any size, so that they can be checked against the
    exact dense ones."""
    monkeypatch.setattr(bradley_terry, "DENSE_UP_TO", 0)
    monkeypatch.setattr(pairing, "DENSE_UP_TO", 0)


@pytest.mark.parametrize("alpha", [0.32, 0.16, 0.04])
@pytest.mark.parametrize("estimate_bias", [True, False])
def test_sparse_fit_equals_the_dense_one_and_its_standard_errors_are_close(
    alpha: float, estimate_bias: bool, monkeypatch
) -> None:
    _, data = adaptive_like(600, per_essay=8, seed=int(alpha * 100))
    exact = fit(600, data, alpha, estimate_bias=estimate_bias)
    monkeypatch.setattr(bradley_terry, "DENSE_UP_TO", 0)
    estimated = fit(600, data, alpha, estimate_bias=estimate_bias)
    assert estimated.covariance is None
    np.testing.assert_allclose(estimated.scores, exact.scores, atol=1e-7)
    assert estimated.position_bias == pytest.approx(exact.position_bias, abs=1e-7)
    assert estimated.position_bias_se == pytest.approx(exact.position_bias_se, rel=1e-6)
    ratio = estimated.standard_errors / exact.standard_errors
    assert np.sqrt(np.mean((ratio - 1) ** 2)) < 0.02 and abs(ratio.mean() - 1) < 0.01
    assert 0.9 < ratio.min() and ratio.max() < 1.1


def test_sparse_fit_with_an_alpha_per_essay_equals_the_dense_one(monkeypatch) -> None:
    _, data = adaptive_like(600, per_essay=8, seed=11)
    alphas = np.where(np.arange(600) % 10 == 0, 0.04, 0.16)  # every tenth essay an anchor, prior twice as wide
    exact = fit(600, data, alphas)
    monkeypatch.setattr(bradley_terry, "DENSE_UP_TO", 0)
    estimated = fit(600, data, alphas)
    np.testing.assert_allclose(estimated.scores, exact.scores, atol=1e-6)
    ratio = estimated.standard_errors / exact.standard_errors
    assert np.sqrt(np.mean((ratio - 1) ** 2)) < 0.02 and abs(ratio.mean() - 1) < 0.01
    assert 0.9 < ratio.min() and ratio.max() < 1.1


@pytest.mark.parametrize("alpha", [0.1, np.linspace(0.02, 0.3, 300)], ids=["one alpha", "alpha per essay"])
def test_solve_agrees_with_a_dense_solve_for_several_right_hand_sides(alpha) -> None:
    _, data = adaptive_like(300, per_essay=5, seed=3)
    p = np.full(len(data), 0.3)
    matrix = sparse.information(data.layout(300), data.first, data.second, p * (1 - p), alpha, 0.01, True)
    rhs = np.random.default_rng(4).normal(size=(301, 3))
    np.testing.assert_allclose(
        sparse.solve(matrix, rhs, alpha, 1e-10), np.linalg.solve(matrix.toarray(), rhs), atol=1e-8
    )


def test_past_the_dense_limit_no_n_by_n_matrix_is_made() -> None:
    n = bradley_terry.DENSE_UP_TO + 1000
    theta, data = adaptive_like(n, per_essay=6, seed=5)
    result = fit(n, data)
    assert result.covariance is None and np.all(result.standard_errors > 0)
    assert np.corrcoef(result.scores, theta)[0, 1] > 0.75  # 6 comparisons per essay
    prior = PriorChoice(n)
    prior.add_wave(data)
    state = PairingState.new(n)
    state.scores, state.standard_errors = result.scores, result.standard_errors
    assert len(next_wave(state, np.random.default_rng(0))) > 0.95 * (n // 2)


def test_neighbour_pairing_keeps_the_invariants_and_prefers_close_scores(sparse_engine) -> None:
    n, anchors = 400, 20
    is_anchor = np.arange(n) >= n - anchors
    state = PairingState.new(n, is_anchor)
    rng = np.random.default_rng(7)
    state.scores = np.random.default_rng(8).normal(0, 2, n)
    state.standard_errors = np.full(n, 0.5)
    gaps = []
    for _ in range(12):
        wave = next_wave(state, rng)
        essays = [e for pair in wave for e in pair]
        assert len(essays) == len(set(essays)) and len(wave) > 0.9 * (n // 2)
        assert not any(is_anchor[a] and is_anchor[b] for a, b in wave)
        for first, second in wave:
            assert (min(first, second), max(first, second)) not in state.asked
            state.record(first, second)
        gaps += [abs(state.scores[a] - state.scores[b]) for a, b in wave]
    assert np.all(np.abs(state.times_first - state.times_second) <= 1)
    random_gap = np.mean(np.abs(np.subtract.outer(state.scores, state.scores)))
    assert np.median(gaps) < 0.25 * random_gap
    again = PairingState.new(n, is_anchor)
    again.scores, again.standard_errors = state.scores, state.standard_errors
    assert next_wave(again, np.random.default_rng(1)) == next_wave(again, np.random.default_rng(1))


def test_relabelling_essays_does_not_change_the_sparse_estimates(sparse_engine) -> None:
    _, data = adaptive_like(500, per_essay=6, seed=9)
    permutation = np.random.default_rng(9).permutation(500)
    relabelled = Comparisons(permutation[data.first], permutation[data.second], data.first_won)
    a, b = fit(500, data), fit(500, relabelled)
    np.testing.assert_allclose(b.scores[permutation], a.scores, atol=1e-8)
    np.testing.assert_allclose(b.standard_errors[permutation], a.standard_errors, rtol=1e-6)
