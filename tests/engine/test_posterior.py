"""The final scores are the posterior's moments, sampled: checked against the posterior on a grid."""

from __future__ import annotations

import numpy as np
import pytest

from cj_svc.engine.bradley_terry import BIAS_ALPHA, Comparisons, fit, prior_terms
from cj_svc.engine.population import final_fit
from cj_svc.engine.posterior import Prior, sample

ALPHA = 0.16


def lopsided() -> Comparisons:
    """Essay 0 against essay 1, each shown first half the time; essay 0 wins 9 of 10, so the
    posterior of their difference is skewed: its long side faces outwards."""
    first = np.array([0, 1] * 5)
    winner = np.array([0] * 9 + [1])
    return Comparisons(first, 1 - first, first == winner)


def grid_moments(data: Comparisons, priors: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean and SD of essay 0's centred score, (theta_0 - theta_1) / 2, under the mixture of priors
    (shape, weight), summed over a fine grid of both scores and the position bias."""
    grid = np.linspace(-9, 9, 181)
    bias_grid = np.linspace(-16, 16, 161)
    x0, x1, bias = np.meshgrid(grid, grid, bias_grid, indexing="ij")
    eta = np.where(data.first == 0, 1.0, -1.0)[:, None, None, None] * (x0 - x1)[None] + bias[None]
    won = np.where(data.first_won, 1.0, -1.0)[:, None, None, None]
    log_likelihood = -np.logaddexp(0.0, -won * eta).sum(axis=0) - BIAS_ALPHA * bias**2
    centred = (x0 - x1) / 2
    means, second_moments = [], []
    for shape, _ in priors:
        log_post = log_likelihood - prior_terms(x0, ALPHA, shape)[0] - prior_terms(x1, ALPHA, shape)[0]
        p = np.exp(log_post - log_post.max())
        means.append(np.sum(p * centred) / p.sum())
        second_moments.append(np.sum(p * centred**2) / p.sum())
    # the weights are the priors' posterior probabilities, as population.py passes them
    weights = np.array([w for _, w in priors])
    mean = float(weights @ means)
    return mean, float(np.sqrt(weights @ second_moments - mean**2))


@pytest.mark.parametrize("shapes", [[(0.0, 1.0)], [(0.0, 0.4), (3.0, 0.6)]])
def test_sampled_moments_are_the_posteriors(shapes: list[tuple[float, float]]) -> None:
    data = lopsided()
    priors = [
        Prior(ALPHA, shape, np.append(fit(2, data, ALPHA, shape=shape).scores, 0.0), weight) for shape, weight in shapes
    ]
    moments = sample(2, data, priors)
    mean, sd = grid_moments(data, shapes)
    # within about three Monte Carlo standard errors of 1,600 draws
    assert moments.scores[0] == pytest.approx(mean, abs=0.08 * sd)
    assert moments.scores[1] == pytest.approx(-moments.scores[0])
    assert moments.standard_errors[0] == pytest.approx(sd, rel=0.08)
    assert moments.acceptance > 0.5
    # the Laplace approximation misses both: the mode lies inside the mean, the curvature is too narrow
    mode = fit(2, data, ALPHA)
    if len(shapes) == 1:
        assert mode.scores[0] < mean - 0.5 * sd
        assert mode.standard_errors[0] < 0.88 * sd


def test_final_scores_are_sampled_and_the_same_every_time() -> None:
    """An essay that wins nearly everything: its sampled score lies further out than the mode and
    its standard error is wider; the batch's scores are identical when computed twice."""
    rng = np.random.default_rng(4)
    others = rng.integers(1, 12, 40)
    zero = np.zeros(40, np.int64)
    first_shown = rng.random(40) < 0.5
    data = Comparisons(
        np.where(first_shown, zero, others), np.where(first_shown, others, zero), first_shown == (np.arange(40) > 1)
    )
    sampled, laplace = final_fit(12, data, ALPHA), final_fit(12, data, ALPHA, sampled=False)
    assert sampled.scores[0] > laplace.scores[0] + 0.1
    assert sampled.standard_errors[0] > 1.1 * laplace.standard_errors[0]
    np.testing.assert_array_equal(sampled.scores, final_fit(12, data, ALPHA).scores)
    assert sampled.scores.sum() == pytest.approx(0.0, abs=1e-9)
    assert np.diag(sampled.covariance) == pytest.approx(sampled.standard_errors**2)
