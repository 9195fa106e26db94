"""The final fit's students' prior may be skewed: skew-normal priors averaged by their evidence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm, skewnorm

from cj_svc.engine import posterior
from cj_svc.engine.bradley_terry import DENSE_UP_TO, Comparisons, fit, prior_terms, scale_separation_reliability
from cj_svc.engine.pairing import PairingState, next_wave
from cj_svc.engine.population import SHAPE_PRIOR, SHAPES, average, evidence_weights, final_fit
from cj_svc.engine.prior import PriorChoice
from tests.engine.test_prior import simulate


@pytest.mark.parametrize("shape", [-4.0, 0.0, 3.0])
def test_prior_terms_are_the_skew_normal_of_mean_zero_and_the_chosen_variance(shape: float) -> None:
    alpha = 0.16
    delta = shape / np.sqrt(1 + shape**2)
    omega = 1 / np.sqrt(2 * alpha * (1 - 2 * delta**2 / np.pi))
    location = -omega * delta * np.sqrt(2 / np.pi)
    assert skewnorm.mean(shape, location, omega) == pytest.approx(0.0, abs=1e-12)
    assert skewnorm.var(shape, location, omega) == pytest.approx(1 / (2 * alpha))
    x = np.linspace(-6, 6, 25)
    value, slope, curvature = prior_terms(x, alpha, shape)
    np.testing.assert_allclose(value, -skewnorm.logpdf(x, shape, location, omega), rtol=1e-10)
    step = 1e-5
    np.testing.assert_allclose(
        slope, (prior_terms(x + step, alpha, shape)[0] - prior_terms(x - step, alpha, shape)[0]) / (2 * step), atol=1e-6
    )
    np.testing.assert_allclose(
        curvature,
        (prior_terms(x + step, alpha, shape)[1] - prior_terms(x - step, alpha, shape)[1]) / (2 * step),
        atol=1e-5,
    )
    assert np.all(curvature > 0)  # log-concave: the fit stays convex
    if shape == 0:
        np.testing.assert_allclose(value, -norm.logpdf(x, 0, np.sqrt(1 / (2 * alpha))))


def test_the_gaussian_shape_is_the_plain_fit() -> None:
    rng = np.random.default_rng(3)
    first, second = rng.integers(0, 20, 200), rng.integers(0, 20, 200)
    keep = first != second
    data = Comparisons(first[keep], second[keep], rng.random(keep.sum()) < 0.6)
    plain, shaped = fit(20, data, 0.16), fit(20, data, 0.16, shape=0.0)
    np.testing.assert_array_equal(plain.scores, shaped.scores)
    assert plain.log_evidence == shaped.log_evidence is not None
    with pytest.raises(ValueError, match="dense"):
        fit(DENSE_UP_TO + 1, data, 0.16, shape=2.0)


@pytest.mark.parametrize("shape", [0.0, 3.0])
def test_log_evidence_is_the_marginal_likelihood(shape: float) -> None:
    """Two essays, 40 answers, no position bias: the Laplace evidence against p(answers) summed on a
    fine grid of both scores (the approximation's own error is 0.01 nats with the Gaussian prior and
    0.06 with the skewed one: their sum is known from the prior alone, so its posterior is as skewed)."""
    rng = np.random.default_rng(5)
    first = rng.integers(0, 2, 40)
    data = Comparisons(first, 1 - first, rng.random(40) < np.where(first == 0, 0.7, 0.3))
    alpha = 0.2
    laplace = fit(2, data, alpha, estimate_bias=False, shape=shape).log_evidence
    grid = np.linspace(-9, 9, 721)
    x0, x1 = np.meshgrid(grid, grid, indexing="ij")
    advantage = np.where(data.first == 0, 1.0, -1.0)[:, None, None] * (x0 - x1)[None]
    won = np.where(data.first_won, 1.0, -1.0)[:, None, None]
    log_likelihood = -np.logaddexp(0.0, -won * advantage).sum(axis=0)
    log_prior = -prior_terms(x0, alpha, shape)[0] - prior_terms(x1, alpha, shape)[0]
    exact = logsumexp(log_likelihood + log_prior) + 2 * np.log(grid[1] - grid[0])
    assert laplace == pytest.approx(exact, abs=0.1)


def test_evidence_weights_are_posterior_model_probabilities() -> None:
    weights = evidence_weights(np.array([-100.0, -100.0 + np.log(3.0)]))
    np.testing.assert_allclose(weights, [0.25, 0.75])
    # weights beforehand count as much as the evidence: 1:3 against 3:1 leaves them even
    np.testing.assert_allclose(evidence_weights(np.array([-100.0, -100.0 + np.log(3.0)]), (0.75, 0.25)), [0.5, 0.5])


def test_a_skewed_cohort_gets_a_skewed_prior_and_an_honest_ssr() -> None:
    """A right-skewed cohort (lognormal true scores) under adaptive pairing: the evidence weighs the
    right-skewed shapes most, and SSR overstates corr(score, truth)^2 less than with the Gaussian."""
    gaps_gaussian, gaps_final, right_skewed = [], [], []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        theta = 2.0 * (rng.lognormal(0, 0.8, 100) - 1.38) / 1.23
        prior, _ = simulate(theta, 12, rng)
        gaussian = fit(len(theta), prior.answers, prior.final_precision)
        final = final_fit(len(theta), prior.answers, prior.final_precision)
        shaped = [fit(len(theta), prior.answers, prior.final_precision, shape=shape) for shape in SHAPES]
        weights = evidence_weights(np.array([f.log_evidence for f in shaped]))
        right_skewed.append(weights[np.array(SHAPES) > 0].sum())
        for result, gaps in ((gaussian, gaps_gaussian), (final, gaps_final)):
            ssr = scale_separation_reliability(result.scores, result.standard_errors)
            gaps.append(ssr - np.corrcoef(result.scores, theta)[0, 1] ** 2)
    assert min(right_skewed) > 0.5
    assert np.mean(gaps_final) < np.mean(gaps_gaussian) - 0.02


def test_a_skewed_cohorts_long_tail_is_covered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lognormal true scores: the skewed priors' Student-t tails let the intervals of the truly top
    essays reach them, where the skew-normal's light tail leaves some outside (over these four
    batches 0.975 of the top tenth covered with them, 0.65 without)."""
    served_dof = posterior.TAIL_DOF
    covered_top = {served_dof: [], 1e9: []}  # degrees of freedom: 1e9 holds every skew scale at 1
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        theta = 2.0 * (rng.lognormal(0, 0.8, 100) - 1.38) / 1.23
        truth = theta - theta.mean()
        top = np.argsort(truth)[-10:]
        prior, _ = simulate(theta, 12, rng)
        for dof, covered in covered_top.items():
            monkeypatch.setattr(posterior, "TAIL_DOF", dof)
            low, high = final_fit(len(theta), prior.answers, prior.final_precision).interval_95()
            if dof == served_dof:
                assert np.mean((low <= truth) & (truth <= high)) >= 0.9
            covered.append(np.mean((low[top] <= truth[top]) & (truth[top] <= high[top])))
    assert np.mean(covered_top[served_dof]) >= 0.9
    assert np.mean(covered_top[served_dof]) >= np.mean(covered_top[1e9]) + 0.1


def test_a_judge_with_no_logit_scale_gets_an_honest_reliability() -> None:
    """A judge right on the order but for 15 % random flips has no logit scale: the scale's unit
    hinges on the lapse rate, which adaptive pairing hardly pins down, and that doubt enters every
    SE. The classical SSR counts it and understates corr(score, truth)^2 (by 0.122 over these eight
    batches of 10 comparisons per essay); the served reliability leaves it out (0.044; 0.021-0.025
    in bench/grading.py at 12 per essay)."""
    served, classical = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        theta = rng.normal(0, 1.5, 60)
        state, prior = PairingState.new(60), PriorChoice(60)
        while len(prior.answers) < 300:
            wave = next_wave(state, rng)
            for a, b in wave:
                state.record(a, b)
            first, second = np.array(wave).T
            right = theta[first] > theta[second]
            prior.add_wave(Comparisons(first, second, np.where(rng.random(len(wave)) < 0.15, ~right, right)))
            current = fit(60, prior.answers, prior.precision)
            state.scores, state.standard_errors, state.covariance = (
                current.scores, current.standard_errors, current.covariance
            )  # fmt: skip
        final = final_fit(60, prior.answers, prior.final_precision)
        truth = np.corrcoef(final.scores, theta)[0, 1] ** 2
        served.append(final.reliability() - truth)
        classical.append(scale_separation_reliability(final.scores, final.standard_errors) - truth)
    assert abs(np.mean(served)) < 0.05
    assert np.mean(classical) < np.mean(served) - 0.05


def test_a_symmetric_cohort_keeps_its_gaussian_scores() -> None:
    """Normal true scores: the average stays close to the Gaussian fit (the same order, and standard
    errors at most a little wider, from the spread between the shapes)."""
    rng = np.random.default_rng(7)
    theta = rng.normal(0, 2.0, 100)
    prior, _ = simulate(theta, 12, rng)
    gaussian = fit(len(theta), prior.answers, prior.final_precision)
    final = final_fit(len(theta), prior.answers, prior.final_precision, sampled=False)
    assert np.corrcoef(final.scores, gaussian.scores)[0, 1] > 0.995
    ratio = np.mean(final.standard_errors) / np.mean(gaussian.standard_errors)
    assert 1.0 <= ratio < 1.1


def test_anchors_keep_a_gaussian_prior() -> None:
    """Only the students' prior is skewed: anchors are picked to span the grades, not drawn from
    the cohort."""
    rng = np.random.default_rng(11)
    theta = rng.lognormal(0, 0.8, 40)
    is_anchor = np.arange(40) >= 32
    prior, _ = simulate(theta, 12, rng, is_anchor=is_anchor)
    alpha = prior.final_precision
    final = final_fit(40, prior.answers, alpha, is_anchor, sampled=False)
    students_only = average(
        [fit(40, prior.answers, alpha, shape=np.where(is_anchor, 0.0, s)) for s in SHAPES], SHAPE_PRIOR
    )
    everyone = average([fit(40, prior.answers, alpha, shape=s) for s in SHAPES], SHAPE_PRIOR)
    np.testing.assert_allclose(final.scores, students_only.scores, atol=1e-5)
    assert np.max(np.abs(final.scores - everyone.scores)) > 1e-3


def test_degenerate_batches_get_finite_scores() -> None:
    """No answers at all, and an essay that won every comparison: every shape keeps the scores and
    their standard errors finite (the prior is proper and log-concave), so the average is too."""
    nothing = final_fit(5, Comparisons.from_lists([], [], []), 0.16)
    np.testing.assert_allclose(nothing.scores, 0.0, atol=1e-9)
    assert np.all(np.isfinite(nothing.standard_errors)) and np.all(nothing.standard_errors > 0)
    losers = np.random.default_rng(2).integers(1, 10, 60)
    zero = np.zeros(60, np.int64)
    # essay 0 shown first and winning, then shown second and winning (the first lost)
    won_all = Comparisons(np.concatenate([zero, losers]), np.concatenate([losers, zero]), np.arange(120) < 60)
    swept = final_fit(10, won_all, 0.16)
    assert np.all(np.isfinite(swept.scores)) and np.all(np.isfinite(swept.standard_errors))
    assert swept.scores[0] == swept.scores.max() and swept.scores[0] < 15
