"""Bradley-Terry scores with an order effect, standard errors, and reliability.

Model: P(the essay shown first wins) = sigmoid(theta_first - theta_second + bias). The fit is the
penalized maximum-likelihood estimate with choix's regularization convention (objective
-loglik + alpha * sum(theta^2), i.e. a Gaussian prior of variance 1/(2 alpha)); with bias 0 it equals
`choix.opt_pairwise(n, data, alpha)`, which the tests check. `alpha` may also be one value per essay
(anchors are given a wider prior than students, see `prior.precisions`). It is found by Newton's method, which
converges in a few steps and is much faster than choix's general optimizers at 1,000+ essays.
Dense fits may take a skew-normal prior of the same variance instead (`prior_terms`), and report
their evidence, with which `population.py` averages priors of several shapes.

Up to `DENSE_UP_TO` essays the Newton system is solved densely and the standard errors come from the
exact inverse. Beyond, the comparison graph is sparse (each essay meets a few dozen others), so the
system is solved by conjugate gradients and the variances are estimated (`sparse.py`): national
cohorts of 100,000 essays fit in seconds and a few hundred MB instead of 80 GB per matrix.

The prior matters: when pairs are chosen from earlier outcomes (adaptive pairing), near-flat
estimates spread the scale out far beyond the truth and make SSR overstate reliability (Bramley &
Vitello 2019; 2-3x the true spread at 100-300 essays in simulation). With a prior about as wide as
the real scale, the scores and standard errors are posterior means and SDs, whose meaning does not
depend on how the pairs were chosen. `prior.PriorChoice` picks that width from the data; the
default below (SD 1.77 logits) is its starting point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import cho_factor, cho_solve, lapack
from scipy.special import log_ndtr

from cj_svc.engine import sparse
from cj_svc.engine.sparse import Alpha as Alpha  # the fit takes it: re-exported

DENSE_UP_TO = 2000  # essays: beyond, the sparse solver (its error is measured in bench/engine_speed.py)
DEFAULT_ALPHA = 0.16  # prior variance 1 / (2 alpha): SD 1.77 logits
MAX_STEP = 2.0  # logits: the largest move of one score in one Newton step
BIAS_ALPHA = 0.01  # the position bias gets its own weak prior: the scores' prior says nothing about it


@dataclass(frozen=True)
class Comparisons:
    """Outcomes: `first[k]` was shown as Essay A, `second[k]` as Essay B, `first_won[k]` says who won."""

    first: NDArray[np.int64]
    second: NDArray[np.int64]
    first_won: NDArray[np.bool_]

    @classmethod
    def from_lists(cls, first: list[int], second: list[int], first_won: list[bool]) -> Comparisons:
        return cls(np.asarray(first, np.int64), np.asarray(second, np.int64), np.asarray(first_won, bool))

    def __len__(self) -> int:
        return len(self.first)

    def layout(self, n: int) -> sparse.Layout:
        """The sparse information matrix's layout for these comparisons among n essays, worked out
        once and kept (fits of several prior widths share it)."""
        kept: dict[int, sparse.Layout] = self.__dict__.setdefault("_layouts", {})  # not a field
        if n not in kept:
            kept[n] = sparse.Layout.of(n, self.first, self.second)
        return kept[n]


@dataclass(frozen=True)
class Fit:
    scores: NDArray[np.float64]  # centred: they sum to zero
    standard_errors: NDArray[np.float64]  # under the sum-to-zero constraint; finite and > 0
    # Of the centred scores (n x n; its diagonal is standard_errors^2); None beyond DENSE_UP_TO essays,
    # where only the variances are estimated.
    covariance: NDArray[np.float64] | None
    position_bias: float  # logits of advantage for the essay shown first, beside these scores
    position_bias_se: float
    iterations: int
    # log p(answers) under the prior, by the Laplace approximation; None beyond DENSE_UP_TO essays
    log_evidence: float | None = None
    # The scores' 95 % credible intervals where the posterior was sampled (posterior.py); None where
    # they are score +/- 1.96 SE (`interval_95`).
    low_95: NDArray[np.float64] | None = None
    high_95: NDArray[np.float64] | None = None
    # Where the posterior was sampled: the posterior mean of corr(true scores, scores)^2 (posterior.py).
    sampled_reliability: float | None = None

    def reliability(self) -> float:
        """The scale's reliability as served: the sampled posterior's estimate of corr(true scores,
        scores)^2 where there is one, else the classical SSR from the SEs."""
        if self.sampled_reliability is not None:
            return self.sampled_reliability
        return scale_separation_reliability(self.scores, self.standard_errors)

    def interval_95(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Each score's 95 % interval: the sampled posterior's 2.5 % and 97.5 % points, else
        score +/- 1.96 SE (the normal approximation)."""
        if self.low_95 is not None and self.high_95 is not None:
            return self.low_95, self.high_95
        return self.scores - 1.96 * self.standard_errors, self.scores + 1.96 * self.standard_errors

    def pair_variance(self, first: NDArray[np.int64], second: NDArray[np.int64]) -> NDArray[np.float64]:
        """Var(theta_first - theta_second) for each pair; without the covariance, the scores are
        taken as independent (their covariance is small beside their variances in a sparse graph)."""
        if self.covariance is not None:
            return difference_variance(self.covariance, first, second)
        variances = self.standard_errors**2
        return variances[first] + variances[second]


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _information(n: int, data: Comparisons, weights: NDArray[np.float64], alpha: Alpha) -> NDArray[np.float64]:
    """Penalized Fisher information over (theta_0..theta_{n-1}, bias)."""
    info = np.zeros((n + 1, n + 1))
    a, b = data.first, data.second
    diag = np.bincount(a, weights, n) + np.bincount(b, weights, n)
    np.add.at(info, (a, b), -weights)
    np.add.at(info, (b, a), -weights)
    info[np.arange(n), np.arange(n)] += diag + 2 * alpha
    cross = np.bincount(a, weights, n) - np.bincount(b, weights, n)
    info[:n, n] = cross
    info[n, :n] = cross
    info[n, n] = weights.sum() + 2 * BIAS_ALPHA
    return info


def _inverse_and_log_det(matrix: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
    """Inverse and log determinant of a symmetric positive definite matrix, from its Cholesky
    factor (LAPACK potri: about 3x faster than solving against the identity)."""
    factor, lower = cho_factor(matrix, check_finite=False)
    log_det = 2 * float(np.sum(np.log(np.diag(factor))))
    inverse, status = lapack.dpotri(factor, lower=lower)
    if status != 0:
        raise np.linalg.LinAlgError(f"potri failed with status {status}")
    # potri fills one triangle; mirror it into the other
    below = np.tril_indices(len(matrix), -1)
    if lower:
        inverse.T[below] = inverse[below]
    else:
        inverse[below] = inverse.T[below]
    return np.asarray(inverse, np.float64), log_det


def prior_terms(
    x: NDArray[np.float64],
    alpha: Alpha,
    shape: NDArray[np.float64] | float,
    skew_scale: NDArray[np.float64] | float = 1.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The scores' prior: skew-normal with mean 0, variance 1 / (2 alpha) and skewness `shape`
    (0 is the Gaussian, positive a long upper tail). Per essay: -log density, its derivative and
    its second derivative (positive: the prior is log-concave, so the fit stays convex).

    A skew-normal is xi + omega (delta |Z0| + sqrt(1 - delta^2) Z1), Z0 and Z1 standard normal.
    `skew_scale` u multiplies the variance of the skewing part delta |Z0| only, location kept: the
    result is again skew-normal, of shape `shape` sqrt(u) and scale omega sqrt(delta^2 u + 1 - delta^2)
    (posterior.py draws u per essay, which makes the long side's tail heavier and leaves the short
    side's as it is)."""
    shape = np.asarray(shape, np.float64)
    delta = shape / np.sqrt(1 + shape**2)
    omega = 1 / np.sqrt(2 * np.asarray(alpha) * (1 - 2 * delta**2 / np.pi))  # scale of that variance
    location = -omega * delta * np.sqrt(2 / np.pi)  # puts the mean at 0
    omega = omega * np.sqrt(delta**2 * skew_scale + 1 - delta**2)
    shape = shape * np.sqrt(skew_scale)
    z = (x - location) / omega
    log_cdf = log_ndtr(shape * z)
    mills = np.exp(-0.5 * (shape * z) ** 2 - 0.5 * np.log(2 * np.pi) - log_cdf)  # phi / Phi
    value = np.log(omega) + 0.5 * np.log(2 * np.pi) - np.log(2) + 0.5 * z**2 - log_cdf
    slope = (z - shape * mills) / omega
    curvature = (1 + shape**2 * mills * (shape * z + mills)) / omega**2
    return value, slope, curvature


def _objective(
    x: NDArray[np.float64],
    data: Comparisons,
    y: NDArray[np.float64],
    alpha: Alpha,
    n: int,
    shape: NDArray[np.float64] | float = 0.0,
) -> float:
    """Penalized negative log-likelihood (the Gaussian prior's constant left out)."""
    prior = np.sum(alpha * x[:n] * x[:n]) if not np.any(shape) else np.sum(prior_terms(x[:n], alpha, shape)[0])
    return float(_negative_log_likelihood(x, data, y, n) + prior + BIAS_ALPHA * x[n] ** 2)


def _negative_log_likelihood(x: NDArray[np.float64], data: Comparisons, y: NDArray[np.float64], n: int) -> float:
    """-log p(answers | scores x[:n], bias x[n])."""
    eta = x[data.first] - x[data.second] + x[n]
    # log(1 + exp(-eta)) for wins, log(1 + exp(eta)) for losses, computed stably
    return float(np.logaddexp(0.0, np.where(y > 0, -eta, eta)).sum())


def fit(
    n: int,
    data: Comparisons,
    alpha: Alpha = DEFAULT_ALPHA,
    estimate_bias: bool = True,
    start: NDArray[np.float64] | None = None,
    tolerance: float = 1e-7,
    max_iterations: int = 50,
    precise: bool = True,
    shape: NDArray[np.float64] | float = 0.0,
) -> Fit:
    """Penalized ML scores, their standard errors and the position bias, from pairwise outcomes.

    `precise=False` is for fits that only predict (the prior's candidates): past DENSE_UP_TO essays
    they stop at a looser tolerance (0.01 logits) and keep the local variances, without the probe
    correction. `shape` (one, or one per essay) makes the prior skew-normal (`prior_terms`); dense
    fits only."""
    if np.any(np.asarray(alpha) <= 0):
        raise ValueError("alpha must be > 0: it keeps scores finite for essays that won or lost everything")
    dense = n <= DENSE_UP_TO
    skewed = bool(np.any(shape))
    if skewed and not dense:
        raise ValueError(f"a skewed prior needs the dense fit (at most {DENSE_UP_TO} essays)")
    if not dense and not precise:
        tolerance = max(tolerance, 1e-2)  # logits: nothing a prediction would notice
    x = np.zeros(n + 1)
    if start is not None:
        x[:n] = start
    y = data.first_won.astype(float)
    a, b = data.first, data.second

    def information(p: NDArray[np.float64], local_alpha: Alpha) -> Any:
        """`local_alpha`: the Gaussian prior's, or the alpha with the skewed prior's curvature."""
        if not dense:
            return sparse.information(data.layout(n), a, b, p * (1 - p), local_alpha, BIAS_ALPHA, estimate_bias)
        info = _information(n, data, p * (1 - p), local_alpha)
        if not estimate_bias:
            info[n, :n] = info[:n, n] = 0.0
            info[n, n] = 1.0
        return info

    def prior_slope_and_alpha(scores: NDArray[np.float64]) -> tuple[NDArray[np.float64], Alpha]:
        """The prior's pull on the scores, and the alpha whose Gaussian has its curvature there."""
        if not skewed:
            return 2 * alpha * scores, alpha
        _, slope, curvature = prior_terms(scores, alpha, shape)
        return slope, curvature / 2

    iterations = 0
    before = _objective(x, data, y, alpha, n, shape)
    while iterations < max_iterations:
        iterations += 1
        p = _sigmoid(x[a] - x[b] + x[n])
        residual = y - p
        gradient = np.empty(n + 1)
        pull, local_alpha = prior_slope_and_alpha(x[:n])
        gradient[:n] = np.bincount(a, residual, n) - np.bincount(b, residual, n) - pull
        gradient[n] = residual.sum() - 2 * BIAS_ALPHA * x[n] if estimate_bias else 0.0
        info = information(p, local_alpha)
        if dense:
            step = cho_solve(cho_factor(info, check_finite=False), gradient, check_finite=False)
        else:
            step = sparse.solve(info, gradient, alpha)
        # Damped Newton: no score moves more than MAX_STEP at once (an essay that won nearly every
        # comparison has a nearly flat likelihood, whose Newton step can be tens of logits and
        # would make the line search shrink every other essay's step too), then the step is
        # halved until the objective does not get worse.
        step = np.clip(step, -MAX_STEP, MAX_STEP)
        scale = 1.0
        after = _objective(x + step, data, y, alpha, n, shape)
        while after > before + 1e-12 and scale > 1e-4:
            scale /= 2
            after = _objective(x + scale * step, data, y, alpha, n, shape)
        x += scale * step
        before = after
        if np.max(np.abs(scale * step)) < tolerance:
            break
    _, local_alpha = prior_slope_and_alpha(x[:n])
    info = information(_sigmoid(x[a] - x[b] + x[n]), local_alpha)
    scores = x[:n] - x[:n].mean()
    log_evidence = None
    if dense:
        covariance, log_det = _inverse_and_log_det(info)
        log_likelihood = -_negative_log_likelihood(x, data, y, n)
        log_evidence = _log_evidence(log_likelihood, x, alpha, shape, log_det, estimate_bias)
        # Sum-to-zero constraint: the covariance of the centred scores is P C P with P = I - 11'/n.
        theta_cov = covariance[:n, :n]
        row_means = theta_cov.mean(axis=1)
        centred_dense = theta_cov - row_means[:, None] - row_means[None, :] + theta_cov.mean()
        centred: NDArray[np.float64] | None = centred_dense
        variances, bias_variance = np.diag(centred_dense), covariance[n, n]
    else:
        centred = None
        variances, bias_variance = sparse.centred_variances(info, scores, alpha, probe=precise)
    return Fit(
        scores=scores,
        standard_errors=np.sqrt(np.maximum(variances, 1e-12)),
        covariance=centred,
        position_bias=float(x[n]) if estimate_bias else 0.0,
        position_bias_se=float(np.sqrt(bias_variance)) if estimate_bias else 0.0,
        iterations=iterations,
        log_evidence=log_evidence,
    )


def _log_evidence(
    log_likelihood: float,
    x: NDArray[np.float64],
    alpha: Alpha,
    shape: NDArray[np.float64] | float,
    log_det: float,
    estimate_bias: bool,
) -> float:
    """log p(answers) by the Laplace approximation at the fit's mode `x` (scores, then the bias):
    log-likelihood + log prior (normalised) + (d/2) log(2 pi) - (1/2) log det(information).
    Without a bias, the information's bias row is the identity's, which adds nothing to log det."""
    n = len(x) - 1
    log_prior = -np.sum(prior_terms(x[:n], alpha, shape)[0])
    dimensions = n
    if estimate_bias:
        log_prior += -BIAS_ALPHA * x[n] ** 2 - 0.5 * np.log(np.pi / BIAS_ALPHA)
        dimensions += 1
    return float(log_likelihood + log_prior + 0.5 * dimensions * np.log(2 * np.pi) - 0.5 * log_det)


def difference_variance(
    covariance: NDArray[np.float64], first: NDArray[np.int64], second: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Var(theta_first - theta_second) for each pair, from the scores' covariance."""
    return covariance[first, first] + covariance[second, second] - 2 * covariance[first, second]


def judge_position_bias(result: Fit, data: Comparisons) -> tuple[float, float]:
    """The judge's advantage for the essay shown first, and its SE, on the scale of the true scores.

    A logistic model's coefficients shrink by about sqrt(1 + pi v / 8) beside a part of the linear
    predictor it cannot see, of variance v: here the uncertainty of the (shrunken) scores, averaged
    over the comparisons. This undoes that; the fit's own `position_bias` goes with its scores."""
    if not len(data):
        return result.position_bias, result.position_bias_se
    v = result.pair_variance(data.first, data.second)
    attenuation = float(np.sqrt(1.0 + np.pi * np.mean(v) / 8.0))
    return result.position_bias * attenuation, result.position_bias_se * attenuation


def scale_separation_reliability(scores: NDArray[np.float64], standard_errors: NDArray[np.float64]) -> float:
    """SSR = (var(theta) - mean(SE^2)) / var(theta), the share of the scale's variance that is not error.

    `scores` are penalized (shrunken) estimates, so var(theta), the spread the estimates would have
    without shrinkage, is var(scores) + mean(SE^2); SSR is then var(scores) / (var(scores) + mean(SE^2)).
    0 when the scores do not vary."""
    variance = float(np.var(scores))
    if variance <= 0:
        return 0.0
    return variance / (variance + float(np.mean(standard_errors**2)))


def self_consistency(data: Comparisons) -> float | None:
    """Share of pairs asked in both orders that got the same winner both times.

    Answers are matched in order: the k-th answer with the lower index first is compared with the
    k-th answer with it second. None when no pair was asked in both orders.
    """
    lower_first: dict[tuple[int, int], list[int]] = {}
    lower_second: dict[tuple[int, int], list[int]] = {}
    for first, second, first_won in zip(
        data.first.tolist(), data.second.tolist(), data.first_won.tolist(), strict=True
    ):
        winner = first if first_won else second
        pair = (min(first, second), max(first, second))
        (lower_first if first < second else lower_second).setdefault(pair, []).append(winner)
    agree = total = 0
    for pair, forward in lower_first.items():
        for left, right in zip(forward, lower_second.get(pair, []), strict=False):
            total += 1
            agree += left == right
    return agree / total if total else None
