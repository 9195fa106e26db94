"""The final scores: the students' prior may be skewed, as real cohorts often are.

A Gaussian prior assumes a symmetric cohort. Many are skewed (most essays middling and a few
excellent, or the reverse), and then the Gaussian squeezes the long tail towards the middle and its
scores look more reliable than they are: in `bench/grading.py`'s lognormal cohort SSR overstated
corr(score, truth)^2 by 0.086, and the 95 % intervals of the top tenth held the truth 34 % of the
time.

So the final fit tries the students' prior as a skew-normal of the chosen width with each shape
in `SHAPES` (0 is the Gaussian; the anchors keep theirs: they are picked to span the grades, not
drawn from the cohort) and averages the fits by their evidence (the Laplace approximation of
p(answers), `Fit.log_evidence`): each essay's score is the weighted mean of the fits' scores and its
variance the weighted mean of their variances plus the spread between them. An average, not a
choice: in symmetric cohorts of 100 and 300 students the evidence favoured a skewed shape in about
half of the batches by chance. The shape it favoured, used alone, cost the base cohort's intervals
some coverage (0.93 to 0.92 overall, 0.82 to 0.79 in the bottom tenth); the average cost less (0.93,
0.81). In the lognormal cohort the evidence put most weight on shapes 2 and 4, and SSR overstated
by 0.03 instead of 0.09.

Beforehand a cohort is taken to be as likely symmetric as skewed (`SHAPE_PRIOR`: half the weight on
the Gaussian), not each shape alike, which left four fifths of it on skewed shapes: a skewed prior in
a symmetric cohort leaves the scores on its long side too far out. On bench/grading.py's batches with
position bias 0.6, the most probable grade then agreed with the truth 0.008 less often than the
one-hot band (0.014 less with the shapes alike), and in the lognormal cohort SSR overstated by 0.029
(0.023).

The average's scores and standard errors are then replaced by the posterior's means and SDs under
the same mixture of priors, sampled (`posterior.py`): the modes and curvatures of the Laplace
approximation sit too near the middle and too narrow for essays that win or lose most comparisons.

The skewed shapes are sampled with a Student-t tail on their long side (`posterior.Prior.heavy_tails`,
4 degrees of freedom): a cohort whose evidence favours a skewed prior departs from the normal, and a
skew-normal's long tail is too light for one as skewed as the lognormal cohort (skewness 3.7; a
skew-normal's is at most about 1). In bench/grading.py the lognormal cohort's 95 % intervals covered
its top tenth 0.74 of the time with the skew-normal's tail, and now 0.91 (0.93 to 0.95 overall; the
bottom tenth 0.91 to 0.93, its SSR gap +0.027 to +0.000). Student-t tails on both sides (each
essay's whole prior variance scaled) covered the top as well (0.90) but spread the crowded bottom
outwards (0.89). Student-t tails on every prior, the Gaussian too, cost the probit judge's tails
(0.97 and 0.96 to 0.87 and 0.88); with 8 degrees of freedom the lognormal top tenth reached only
0.85. The weights still come from the skew-normal Laplace fits: a t prior's fit is not log-concave.

Past DENSE_UP_TO essays the fit has no evidence (the sparse solver does not factor the matrix), and
the prior stays Gaussian.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp

from cj_svc.engine import posterior
from cj_svc.engine.bradley_terry import DENSE_UP_TO, Alpha, Comparisons, Fit, fit

SHAPES = (-4.0, -2.0, 0.0, 2.0, 4.0)  # skew-normal shapes tried for the students' prior
SHAPE_PRIOR = (0.125, 0.125, 0.5, 0.125, 0.125)  # beforehand a cohort is as likely symmetric as skewed
MIN_WEIGHT = 0.01  # shapes of less weight in the average are not sampled


def final_fit(
    n: int, data: Comparisons, alpha: Alpha, is_anchor: NDArray[np.bool_] | None = None, sampled: bool = True
) -> Fit:
    """The batch's final scores: fits with the students' prior of each shape in SHAPES, averaged by
    their evidence (`average`); a Gaussian prior alone past DENSE_UP_TO essays. With `sampled`, the
    scores and standard errors are then the mixture posterior's means and SDs (`sampled_moments`)."""
    gaussian = fit(n, data, alpha)
    if n > DENSE_UP_TO or gaussian.log_evidence is None:
        return gaussian
    students = np.ones(n, bool) if is_anchor is None else ~is_anchor
    shapes = [np.where(students, shape, 0.0) for shape in SHAPES]
    fits = [
        gaussian if shape == 0 else fit(n, data, alpha, start=gaussian.scores, shape=per_essay)
        for shape, per_essay in zip(SHAPES, shapes, strict=True)
    ]
    laplace = average(fits, SHAPE_PRIOR)
    if not sampled or not len(data):
        return laplace
    weights = evidence_weights(np.array([f.log_evidence for f in fits], np.float64), SHAPE_PRIOR)
    priors = [
        posterior.Prior(alpha, per_essay, np.append(f.scores, f.position_bias), float(weight), heavy_tails=shape != 0)
        for f, shape, per_essay, weight in zip(fits, SHAPES, shapes, weights, strict=True)
        if weight >= MIN_WEIGHT
    ]
    return sampled_moments(laplace, posterior.sample(n, data, priors))


def sampled_moments(laplace: Fit, moments: posterior.Moments) -> Fit:
    """The Laplace fit with the sampled means, SDs and 95 % intervals in place of its modes and
    curvature-based SEs. The covariance keeps the Laplace correlations (a few thousand draws
    estimate hundreds of them too noisily), scaled to the sampled SDs."""
    assert laplace.covariance is not None
    ratio = moments.standard_errors / laplace.standard_errors
    return replace(
        laplace,
        scores=moments.scores,
        standard_errors=moments.standard_errors,
        covariance=laplace.covariance * ratio[:, None] * ratio[None, :],
        position_bias=moments.position_bias,
        position_bias_se=moments.position_bias_se,
        low_95=moments.low_95,
        high_95=moments.high_95,
        sampled_reliability=moments.reliability,
    )


def evidence_weights(
    log_evidences: NDArray[np.float64], prior_weights: tuple[float, ...] | None = None
) -> NDArray[np.float64]:
    """Posterior weights of models, from their log evidences and their weights beforehand (equal
    when not given)."""
    if prior_weights is not None:
        log_evidences = log_evidences + np.log(prior_weights)
    weights = np.exp(log_evidences - np.max(log_evidences))
    return np.asarray(weights / weights.sum(), np.float64)


def average(fits: list[Fit], prior_weights: tuple[float, ...] | None = None) -> Fit:
    """The mixture of dense fits weighted by their evidence (and their weights beforehand): its
    means, and its covariance (the fits' own, averaged, plus the spread of their means)."""
    if any(f.covariance is None or f.log_evidence is None for f in fits):
        raise ValueError("only dense fits (with a covariance and an evidence) can be averaged")
    beforehand = np.full(len(fits), 1 / len(fits)) if prior_weights is None else np.asarray(prior_weights)
    log_joint = np.array([f.log_evidence for f in fits], np.float64) + np.log(beforehand)
    weights = evidence_weights(log_joint)
    means = np.array([f.scores for f in fits])
    scores = weights @ means
    apart = means - scores
    covariance = np.einsum("k,kij->ij", weights, np.array([f.covariance for f in fits])) + apart.T @ (
        weights[:, None] * apart
    )
    biases = np.array([f.position_bias for f in fits])
    bias = float(weights @ biases)
    bias_variance = float(weights @ (np.array([f.position_bias_se for f in fits]) ** 2 + (biases - bias) ** 2))
    return Fit(
        scores=scores,
        standard_errors=np.sqrt(np.maximum(np.diag(covariance), 1e-12)),
        covariance=covariance,
        position_bias=bias,
        position_bias_se=float(np.sqrt(bias_variance)),
        iterations=max(f.iterations for f in fits),
        log_evidence=float(logsumexp(log_joint)),  # of the models together
    )
