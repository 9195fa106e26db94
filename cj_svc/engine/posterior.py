"""The scores' posterior by sampling, where the Laplace approximation falls short.

A fit's scores are the posterior's mode and its standard errors the curvature there (the Laplace
approximation). For an essay that wins or loses most of its comparisons the posterior is skewed:
its long side faces outwards, so the mean lies further out than the mode and the spread is wider
than the curvature says. In `bench/grading.py`'s base cohort the posterior means lay about 10 %
further out than the modes, and score +/- 1.96 SE held the true score in 74 % and 81 % of the bottom
and top tenth (91 % overall).

So the final scores are the posterior's moments, sampled by Hamiltonian Monte Carlo (Neal 2011, "MCMC
using Hamiltonian dynamics"): `CHAINS` chains run side by side as matrix products, each started near
a mode and scaled by the diagonal of the information there, which leaves the posterior nearly round
(the comparison graph couples the scores only weakly). A mixture of priors (population.py averages
skew-normal shapes by their evidence) is sampled by giving each prior its own chains and weighing
their draws by the prior's weight. The seed is fixed, so a batch's scores are the same every time.
Each score's 95 % interval is served as sampled, the draws' 2.5 % and 97.5 % points: where the
posterior is skewed it reaches further out than in, which score +/- 1.96 SD does not. In
bench/grading.py that raised the coverage of the truly bottom and top tenth by up to 0.04 (base
0.91 and 0.92 to 0.93 and 0.92; N = 300 0.90 and 0.90 to 0.91 and 0.91).

The prior's width is sampled too. It was chosen from a grid a factor of sqrt(2) apart in SD (prior.py),
and a chosen width held fixed makes every interval as sure of it as if it were known: the truly
extreme essays, which the prior pulls in hardest, are left outside their intervals. So each chain
also draws the prior's variance, all essays' together (the anchors keep their multiple), by Metropolis
steps on its log, under an inverse-gamma prior whose mode is the chosen variance (`WIDTH_SHAPE`). In
bench/grading.py's batches this raised the coverage of the bottom and top tenth in base from 0.83
and 0.88 to 0.90 and 0.92. Shape 3 rather than 1: with 1, an essay that won all of its 120
comparisons in a batch of 10 came out at 16.7 +/- 11.3 logits (7.97 +/- 2.7 with 3; 5.6 +/- 1.1 with the width fixed).

The judge may lapse. A judge (an LLM as much as a person) now and then answers against a clear
difference, and the plain Bradley-Terry likelihood can explain such an upset only by scores closer
together: the whole scale shrinks and the truly extreme essays fall outside their intervals. So each
answer's likelihood is lapse / 2 + (1 - lapse) sigma(margin), where `lapse` is the share of answers
given at random, and each chain draws the lapse rate by a Metropolis step on its logit under a
Beta(1, 9) prior (`LAPSE_PRIOR`: mean 10 %, densest at 0), so a judge who never lapses costs little.
In bench/grading.py (served intervals) the judge with 10 % lapses went from coverage 0.89 overall and
0.69 and 0.68 in the bottom and top tenth to 0.95, 0.89 and 0.91 with a Beta(1, 19) prior; position
bias 0.6 from 0.94, 0.87 and 0.88 to 0.96, 0.95 and 0.93; varying discrimination from 0.87, 0.68 and
0.71 to 0.93, 0.89 and 0.90. Beta(1, 9) then raised the tails that stayed short (40 batches each:
10 % lapses 0.89 and 0.90 to 0.94 and 0.94; varying discrimination 0.87 and 0.83 to 0.90 and 0.88)
and left every family's served SSR within 0.04 and its ECE within its noise (about +/- 0.008).
The price of sampling the rate: the classical SSR, var(scores) / (var(scores) + mean(SE^2)),
understates corr(score, truth)^2 a little more, and for a judge that is a step function (right on
the order but for 15 % flips: no logit scale at all) by 0.07-0.12: there the scale hinges on the
lapse rate, the sampled prior width follows it out, and the doubt about the scale's unit enters
every SE. That doubt moves all essays alike and changes neither their order nor their grades, so the
reliability served with the final scores is the posterior mean of corr(true scores, scores)^2
(`expected_squared_correlation`), which leaves it out: in bench/grading.py it is within 0.04 of
corr(score, truth)^2 in every family (the step function -0.026, base -0.014).
Adaptive pairing compares near pairs, where a lapse and a close call look alike, so the data say
little about the rate: its posterior mean was 0.04 in base, 0.06 with 10 % lapses and 0.10 with
15 % flips (8 bench batches each). The scores integrate over it; it is not served as a judge's
diagnostic, which it would understate (0.07 for a simulated judge lapsing half the time).
Beta(1, 6) covered about as well as Beta(1, 9) over 120 batches (both before the burn-in's steps were
averaged) but raised the step function's ECE (0.052 against 0.048-0.049); Beta(1, 49) and
Beta(1, 99) covered less.

A skewed prior may have a heavy tail on its long side (`Prior.heavy_tails`; population.py gives one
to its skewed shapes). A skew-normal is xi + omega (delta |Z0| + sqrt(1 - delta^2) Z1); each essay's
skewing part delta |Z0| is scaled by sqrt(u), u ~ inverse-gamma(TAIL_DOF / 2, TAIL_DOF / 2) its own,
which each chain draws by a Metropolis step on log u (`prior_terms`' skew_scale). |Z0| sqrt(u) is a
half Student-t of TAIL_DOF degrees of freedom: the long side's tail is Student-t, the short side
keeps the skew-normal's. Scaling each essay's whole prior variance instead (Student-t tails on both
sides) spread a lognormal cohort's crowded bottom outwards: in bench/grading.py its bottom tenth was
covered 0.89 of the time, now 0.93, and the bimodal cohort's SSR overstated by 0.042, now 0.031.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from numpy.typing import NDArray
from scipy.special import expit, log_expit, logit

from cj_svc.engine.bradley_terry import BIAS_ALPHA, Alpha, Comparisons, prior_terms

CHAINS = 16
BURN_IN = 60  # iterations per chain, discarded
KEPT = 100  # iterations per chain kept: CHAINS x KEPT draws
LEAPFROG_STEPS = 8
STEP_SIZE = 0.45  # the first leapfrog step, in units of each coordinate's local posterior SD
TARGET_ACCEPTANCE = 0.8  # the burn-in tunes the step to accept about this share of proposals
WIDTH_STEPS = 3  # Metropolis updates of each chain's prior width per iteration (0: the width is fixed)
WIDTH_PROPOSAL_SD = 0.3  # of the log of the prior's variance
WIDTH_SHAPE = 3.0  # of the inverse-gamma prior on the prior's variance (see log_hyperprior)
SEED = 0
LAPSE_PRIOR: tuple[float, float] | None = (1.0, 9.0)  # Beta prior on the judge's lapse rate (None: no lapses)
LAPSE_START = 0.02  # each chain's lapse rate before its first update
LAPSE_PROPOSAL_SD = 0.3  # of the lapse rate's logit
TAIL_DOF = 4.0  # of the Student-t tails of heavy-tailed priors
SKEW_SCALE_PROPOSAL_SD = 0.7  # of the log of an essay's skew scale


@dataclass(frozen=True)
class Moments:
    """The posterior's mean, SD and 95 % interval of the centred scores, and the position bias's
    mean and SD."""

    scores: NDArray[np.float64]  # centred: they sum to zero
    standard_errors: NDArray[np.float64]
    position_bias: float
    position_bias_se: float
    acceptance: float  # share of proposals accepted
    low_95: NDArray[np.float64]  # each score's 2.5 % point
    high_95: NDArray[np.float64]  # each score's 97.5 % point
    lapse_rate: float  # the posterior mean of the share of answers the judge gave at random
    reliability: float  # the posterior mean of corr(true scores, scores)^2 (see `expected_squared_correlation`)


@dataclass(frozen=True)
class Prior:
    """One prior of the mixture: per essay its alpha (variance 1 / (2 alpha)) and skew-normal shape,
    a mode to start from (scores, then the bias) and its weight."""

    alpha: Alpha
    shape: NDArray[np.float64] | float
    mode: NDArray[np.float64]
    weight: float
    heavy_tails: bool = False  # a Student-t tail of TAIL_DOF degrees of freedom on the long side (none if shape 0)


def share_chains(weights: NDArray[np.float64]) -> NDArray[np.int64]:
    """The prior each of the CHAINS chains samples: every prior gets one, the rest go by weight
    (highest averages, as seats are shared among parties), so each draw's weight is about equal."""
    counts = np.ones(len(weights), np.int64)
    for _ in range(CHAINS - len(weights)):
        counts[np.argmax(weights / counts)] += 1
    return np.repeat(np.arange(len(weights)), counts)


def sample(n: int, data: Comparisons, priors: list[Prior]) -> Moments:
    """Posterior moments of the Bradley-Terry scores (with the order effect) under a mixture of priors."""
    weights = np.array([p.weight for p in priors], np.float64)
    weights = weights / weights.sum()
    owner = share_chains(weights)  # the prior each chain samples
    chain_weight = weights[owner] / np.bincount(owner, minlength=len(priors))[owner]
    alpha = np.column_stack([np.broadcast_to(np.asarray(priors[k].alpha, np.float64), (n,)) for k in owner])
    shape = np.column_stack([np.broadcast_to(np.asarray(priors[k].shape, np.float64), (n,)) for k in owner])
    start = np.column_stack([priors[k].mode for k in owner])

    m = len(data)
    design = scipy.sparse.csr_matrix(
        (
            np.tile([1.0, -1.0, 1.0], m),
            (np.repeat(np.arange(m), 3), np.column_stack([data.first, data.second, np.full(m, n)]).ravel()),
        ),
        shape=(m, n + 1),
    )
    transposed = design.T.tocsr()
    sign = np.where(data.first_won, 1.0, -1.0)[:, None]

    gaussian = not np.any(shape)

    # each essay's scale of its prior's skewing part, drawn in the chains of heavy-tailed priors
    skew_scale = np.ones((n, CHAINS))

    def prior(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The scores' -log prior (up to a constant) and its derivative, per essay and chain."""
        if gaussian:
            return alpha * x * x, 2 * alpha * x
        value, slope, _ = prior_terms(x, alpha, shape, skew_scale)
        return value, slope

    def log_prior(scores: NDArray[np.float64], alpha_now: NDArray[np.float64]) -> NDArray[np.float64]:
        """log prior density of each chain's scores, normalised (the width varies)."""
        if gaussian:
            return np.asarray(-(alpha_now * scores**2).sum(axis=0) + 0.5 * np.log(alpha_now / np.pi).sum(axis=0))
        return np.asarray(-prior_terms(scores, alpha_now, shape, skew_scale)[0].sum(axis=0))

    def log_skew_scale_target(scores: NDArray[np.float64], scale_now: NDArray[np.float64]) -> NDArray[np.float64]:
        """log density of each essay's skew scale u given its score, in log u: the score's prior
        given u, times u's inverse-gamma(TAIL_DOF / 2, TAIL_DOF / 2), times the Jacobian u."""
        return np.asarray(
            -prior_terms(scores, alpha, shape, scale_now)[0] - 0.5 * TAIL_DOF * (np.log(scale_now) + 1 / scale_now)
        )

    def log_hyperprior(log_width: NDArray[np.float64]) -> NDArray[np.float64]:
        """The prior's variance v = v0 exp(log_width), v0 the chosen one, is inverse-gamma(a, a v0)
        with a = WIDTH_SHAPE: in log_width, density exp(-a (log_width + exp(-log_width))), whose mode
        is the chosen width."""
        return np.asarray(-WIDTH_SHAPE * (log_width + np.exp(-log_width)))

    # each chain's lapse rate: the share of answers the judge gives at random, whatever the essays
    lapse = np.full(CHAINS, LAPSE_START if LAPSE_PRIOR else 0.0)

    def log_likelihood(x: NDArray[np.float64], rate: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(log_answer_probability(sign * (design @ x), rate).sum(axis=0))

    def log_lapse_target(x: NDArray[np.float64], rate: NDArray[np.float64], a: float, b: float) -> NDArray[np.float64]:
        """log posterior of each chain's lapse rate given its scores, in the rate's logit: the
        Beta(a, b) prior times the logit's Jacobian, rate (1 - rate), is rate^a (1 - rate)^b."""
        return log_likelihood(x, rate) + a * np.log(rate) + b * np.log1p(-rate)

    def gradient_of(
        x: NDArray[np.float64], margin: NDArray[np.float64], prior_slope: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """The gradient of `energy_and_gradient`'s energy, from the answers' margins at x and the
        prior's derivative there (the parts the energy shares)."""
        gradient = np.asarray(-(transposed @ (sign * answer_probability_slope(margin, lapse))))
        gradient[:n] += prior_slope
        gradient[n] += 2 * BIAS_ALPHA * x[n]
        return gradient

    def gradient_at(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return gradient_of(x, sign * (design @ x), prior(x[:n])[1])

    def energy_and_gradient(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """-log posterior, up to a constant, of each chain's column, and its gradient."""
        margin = sign * (design @ x)
        prior_value, prior_slope = prior(x[:n])
        log_answers = np.asarray(log_answer_probability(margin, lapse).sum(axis=0))
        energy = np.asarray(-log_answers + prior_value.sum(axis=0) + BIAS_ALPHA * x[n] ** 2)
        return energy, gradient_of(x, margin, prior_slope)

    # each coordinate's scale: 1 / sqrt of the information's diagonal at the first prior's mode
    mode = priors[int(np.argmax(weights))].mode
    p = expit(mode[data.first] - mode[data.second] + mode[n])
    information = np.zeros(n + 1)  # float even with no answers
    information += np.bincount(data.first, p * (1 - p), n + 1) + np.bincount(data.second, p * (1 - p), n + 1)
    information[n] = np.sum(p * (1 - p)) + 2 * BIAS_ALPHA
    information[:n] += 2 * np.min(alpha, axis=1)
    scale = (1.0 / np.sqrt(information))[:, None]

    rng = np.random.default_rng(SEED)
    x = start + 0.5 * scale * rng.standard_normal(start.shape)
    current, gradient = energy_and_gradient(x)
    draws, lapses, accepted, step_size, tuned_log_steps = [], [], 0.0, STEP_SIZE, []
    chosen_alpha, log_width = alpha.copy(), np.zeros(CHAINS)
    heavy_tails = np.broadcast_to(np.array([priors[k].heavy_tails for k in owner]), (n, CHAINS))
    for iteration in range(BURN_IN + KEPT):
        current_log_prior = log_prior(x[:n], alpha)
        for _ in range(WIDTH_STEPS):  # the prior's width, given the scores (all essays' scale together)
            proposed_width = log_width + WIDTH_PROPOSAL_SD * rng.standard_normal(CHAINS)
            proposed_alpha = chosen_alpha * np.exp(-proposed_width)
            proposed_log_prior = log_prior(x[:n], proposed_alpha)
            log_ratio = (
                proposed_log_prior - current_log_prior + log_hyperprior(proposed_width) - log_hyperprior(log_width)
            )
            take = np.log(rng.random(CHAINS)) < log_ratio
            log_width[take], alpha[:, take] = proposed_width[take], proposed_alpha[:, take]
            current_log_prior = np.where(take, proposed_log_prior, current_log_prior)
        if heavy_tails.any():  # each essay's skew scale, given its score
            proposed_scale = skew_scale * np.exp(SKEW_SCALE_PROPOSAL_SD * rng.standard_normal(skew_scale.shape))
            log_ratio = log_skew_scale_target(x[:n], proposed_scale) - log_skew_scale_target(x[:n], skew_scale)
            take = heavy_tails & (np.log(rng.random(skew_scale.shape)) < log_ratio)
            skew_scale[take] = proposed_scale[take]
        if LAPSE_PRIOR:  # the lapse rate, given the scores
            proposed_lapse = expit(logit(lapse) + LAPSE_PROPOSAL_SD * rng.standard_normal(CHAINS))
            log_ratio = log_lapse_target(x, proposed_lapse, *LAPSE_PRIOR) - log_lapse_target(x, lapse, *LAPSE_PRIOR)
            take = np.log(rng.random(CHAINS)) < log_ratio
            lapse[take] = proposed_lapse[take]
        if WIDTH_STEPS or LAPSE_PRIOR or heavy_tails.any():
            current, gradient = energy_and_gradient(x)
        momentum = rng.standard_normal(x.shape)
        before = current + 0.5 * np.sum(momentum**2, axis=0)
        step = step_size * rng.uniform(0.8, 1.2)  # jittered, so no chain locks into a periodic orbit
        proposal, new_gradient = x.copy(), gradient
        momentum = momentum - 0.5 * step * scale * new_gradient
        for leap in range(LEAPFROG_STEPS):
            proposal = proposal + step * scale * momentum
            if leap < LEAPFROG_STEPS - 1:
                momentum = momentum - step * scale * gradient_at(proposal)
        proposed, new_gradient = energy_and_gradient(proposal)
        momentum = momentum - 0.5 * step * scale * new_gradient
        after = proposed + 0.5 * np.sum(momentum**2, axis=0)
        accept = np.log(rng.random(CHAINS)) < np.nan_to_num(before - after, nan=-np.inf)
        x[:, accept], current[accept], gradient[:, accept] = (
            proposal[:, accept],
            proposed[accept],
            new_gradient[:, accept],
        )
        if iteration < BURN_IN:  # larger steps while most are accepted, smaller when not
            step_size *= 1.1 if accept.mean() > TARGET_ACCEPTANCE else 0.9
            if iteration >= BURN_IN // 2:
                tuned_log_steps.append(np.log(step_size))
            # keep the geometric mean of the second half's steps, not wherever the +/- 10 % walk
            # ended: over 40 seeds the acceptance on a lopsided pair was 0.40-0.90 with the last
            # step (5 under 0.5), 0.69-0.85 with the mean
            if iteration == BURN_IN - 1:
                step_size = float(np.exp(np.mean(tuned_log_steps)))
        else:
            draws.append(x.copy())
            lapses.append(lapse.copy())
            accepted += float(accept.mean())

    kept = np.stack(draws)  # iterations x (n + 1) x chains
    scores = kept[:, :n, :] - kept[:, :n, :].mean(axis=1, keepdims=True)
    bias = kept[:, n, :]
    draw_weight = np.broadcast_to(chain_weight / KEPT, bias.shape).ravel()
    flat = scores.transpose(0, 2, 1).reshape(-1, n)  # draws x n
    mean = draw_weight @ flat
    variances = draw_weight @ (flat - mean) ** 2
    bias_mean = float(draw_weight @ bias.ravel())
    low_95, high_95 = weighted_quantiles(flat, draw_weight, (0.025, 0.975))
    return Moments(
        scores=mean,
        standard_errors=np.sqrt(variances),
        position_bias=bias_mean,
        position_bias_se=float(np.sqrt(draw_weight @ (bias.ravel() - bias_mean) ** 2)),
        acceptance=accepted / KEPT,
        low_95=low_95,
        high_95=high_95,
        lapse_rate=float(draw_weight @ np.stack(lapses).ravel()),
        reliability=expected_squared_correlation(flat, draw_weight, mean),
    )


def expected_squared_correlation(
    draws: NDArray[np.float64], weights: NDArray[np.float64], scores: NDArray[np.float64]
) -> float:
    """The posterior mean of corr(theta, scores)^2, theta drawn from the posterior (draws x essays,
    centred, with their weights): the Bayes estimate of what SSR stands for, how well the served
    scores order the true ones.

    The classical SSR, var(scores) / (var(scores) + mean(SE^2)), counts in every SE the doubt about
    the scale's unit, which moves all essays together and changes neither their order nor the
    correlation. Where that doubt is large (a judge the logistic does not fit, whose scale hinges on
    the weakly identified lapse rate) the classical figure understates by 0.07 (`bench/grading.py`,
    15 % flips); this one does not count it, and understates by 0.022. 0 when the scores do not vary."""
    norm = float(np.sqrt(scores @ scores))
    if norm == 0:
        return 0.0
    correlation = (draws @ scores) / (np.sqrt(np.sum(draws**2, axis=1)) * norm)
    return float(weights @ correlation**2)


def log_answer_probability(margin: NDArray[np.float64], lapse: NDArray[np.float64]) -> NDArray[np.float64]:
    """log P(the answer given) when the judge answers at random at the rate `lapse` and otherwise
    prefers the winner with probability sigma(margin): log(lapse / 2 + (1 - lapse) sigma(margin))."""
    if not np.any(lapse):  # in logs, so that a wide margin against the answer does not underflow
        return np.asarray(log_expit(margin))
    return np.asarray(np.log(lapse / 2 + (1 - lapse) * expit(margin)))


def answer_probability_slope(margin: NDArray[np.float64], lapse: NDArray[np.float64]) -> NDArray[np.float64]:
    """d log_answer_probability / d margin: (1 - lapse) sigma'(margin) / P(the answer given)."""
    if not np.any(lapse):  # sigma(-margin), which stays exact where sigma(margin) underflows
        return np.asarray(expit(-margin))
    right = expit(margin)
    return np.asarray((1 - lapse) * right * (1 - right) / (lapse / 2 + (1 - lapse) * right))


def weighted_quantiles(
    draws: NDArray[np.float64], weights: NDArray[np.float64], levels: tuple[float, ...]
) -> list[NDArray[np.float64]]:
    """For each level, each column's quantile among weighted draws (draws x columns; the weights,
    one per draw, sum to 1): the smallest draw whose cumulative weight reaches the level."""
    order = np.argsort(draws, axis=0)
    ordered = np.take_along_axis(draws, order, axis=0)
    cumulative = np.cumsum(weights[order], axis=0)
    last = len(draws) - 1
    return [ordered[np.minimum((cumulative < level).sum(axis=0), last), np.arange(draws.shape[1])] for level in levels]
