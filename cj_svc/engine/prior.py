"""How wide the prior on the scores is: chosen from the data by how well it predicted the judge.

The fit's prior (alpha; variance 1 / (2 alpha)) sets how far scores spread. Too narrow, and the scale
is squeezed and SSR under-reports; too wide, and with adaptive pairing the scale spreads beyond the
truth and SSR over-reports (Bramley & Vitello 2019). How wide real scales are differs by task and
judge (1.5 to 3 logits and more), so no fixed value fits.

Each candidate alpha is scored by prequential log loss: every wave's answers are predicted by the
fits made before that wave was answered, and the losses add up. Such predictions are honest however
the pairs were chosen, because a wave's pairs depend only on earlier answers. (Leave-one-out scoring
is not: under adaptive pairing it picks priors that are too wide.) In simulation (bench/cj_efficiency.py)
the chosen prior keeps SSR within about 0.02 of the true reliability for random and adaptive
pairing, at scale SDs of 1.5 and 3 logits.

The chosen width is the students'. Anchors are not drawn from the cohort: they are picked to span the
grades, the lowest and highest ones included, so the students' prior may pull them towards the middle
as if they were typical essays, and with them the grade boundaries they place. Where the judge is
less sure of them than that suggests, the students' prior keeps them steady. So each width is tried
twice, with the anchors' prior as wide as the students' and twice as wide (`ANCHOR_WIDTHS`), and the
same prequential loss chooses.

The final scores, which the grades are projected from, give the anchors a prior up to
`FINAL_ANCHOR_WIDTH` times as wide as the students' (`PriorChoice.final_precision`). The loss above
judges a prior by how well it predicts the judge, and a batch's few anchor comparisons barely move
it; but the anchors' scores place the grade boundaries, and a prior that pulls the highest and lowest
anchors inwards pulls the outer boundaries with them. Too wide a prior errs the other way: the
highest and lowest anchors win or lose nearly every comparison, float outwards, and push the outer
boundaries out (the projection places each boundary between the anchors on either side of it). In
bench/grading.py, four times as wide left the outermost boundaries 0.26 logits too far out in base
and 0.31-0.42 at N = 30; twice as wide, 0.11 and 0.03-0.15. It is never wider than the widest candidate (7.1
logits), unless that was chosen: an anchor that wins or loses every comparison would be left almost
anywhere, and in small batches the projection, which weighs anchors by their precision, then
rests on the others alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from cj_svc.engine.bradley_terry import DEFAULT_ALPHA, Alpha, Comparisons, Fit, fit

ALPHAS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64)  # prior SDs from 7.1 down to 0.9 logits
# The candidates are refitted when the answers have grown by this factor since their last fit, so
# the cost stays a few fits per batch; waves in between are predicted by those (earlier) fits.
REFIT_GROWTH = 1.25
# The anchors' prior SD tried, in multiples of the students'.
ANCHOR_WIDTHS = (1.0, 2.0)
# The anchors' prior SD in the final fit, in multiples of the students' (see final_precision).
FINAL_ANCHOR_WIDTH = 2.0


def precisions(alpha: float, is_anchor: NDArray[np.bool_] | None, anchor_width: float) -> Alpha:
    """The fit's alpha for each essay: the students' `alpha`, and for anchors that of a prior
    `anchor_width` times as wide."""
    if is_anchor is None or not is_anchor.any() or anchor_width == 1.0:
        return alpha
    return np.where(is_anchor, alpha / anchor_width**2, alpha)


def predictive_log_loss(previous: Fit, data: Comparisons) -> float:
    """Log loss of answers under the posterior predictive of an earlier fit: P(first wins) is
    sigmoid(mu / sqrt(1 + pi v / 8)), with mu and v the mean and variance of the first's advantage."""
    mu = previous.scores[data.first] - previous.scores[data.second] + previous.position_bias
    v = previous.pair_variance(data.first, data.second)
    eta = mu / np.sqrt(1.0 + np.pi * (v + previous.position_bias_se**2) / 8.0)
    return float(np.logaddexp(0.0, np.where(data.first_won, -eta, eta)).sum())


@dataclass
class PriorChoice:
    """Feed it the answers wave by wave (`add_wave`); the chosen candidate (students' `alpha`, and
    `anchor_width`) is the one with the lowest prequential log loss so far (the one nearest
    DEFAULT_ALPHA, anchors alike, until a second wave has been scored). Fit the scores with
    `fit(n, data, choice.precision)`, and the final ones with
    `population.final_fit(n, data, choice.final_precision, is_anchor)`."""

    n: int
    is_anchor: NDArray[np.bool_] | None = None
    alphas: tuple[float, ...] = ALPHAS
    candidates: list[tuple[float, float]] = field(init=False)  # (students' alpha, anchors' width)
    losses: NDArray[np.float64] = field(init=False)
    _fits: list[Fit] = field(init=False, default_factory=list)
    _fitted_on: int = field(init=False, default=0)  # answers the candidates' fits have seen
    answers: Comparisons = field(init=False)  # every answer added so far

    def __post_init__(self) -> None:
        anchored = self.is_anchor is not None and bool(self.is_anchor.any())
        widths = ANCHOR_WIDTHS if anchored else (1.0,)
        self.candidates = [(alpha, width) for width in widths for alpha in self.alphas]
        self.losses = np.zeros(len(self.candidates))
        self.answers = Comparisons.from_lists([], [], [])

    @property
    def alpha(self) -> float:
        """The students' prior (variance 1 / (2 alpha))."""
        return self.candidates[self._chosen][0]

    @property
    def anchor_width(self) -> float:
        """The anchors' prior SD in multiples of the students'."""
        return self.candidates[self._chosen][1]

    @property
    def precision(self) -> Alpha:
        """The chosen prior as the fit takes it, per essay when the anchors' is wider."""
        return precisions(self.alpha, self.is_anchor, self.anchor_width)

    @property
    def final_precision(self) -> Alpha:
        """The prior of the final scores, which the grades are projected from: the anchors' up to
        FINAL_ANCHOR_WIDTH times as wide as the students', but no wider than the widest candidate
        (unless chosen so): wider, an anchor that wins or loses every comparison is left almost
        anywhere, and the projection no longer weighs it."""
        widest = float(np.sqrt(self.alpha / min(self.alphas)))
        return precisions(self.alpha, self.is_anchor, max(self.anchor_width, min(FINAL_ANCHOR_WIDTH, widest)))

    @property
    def _chosen(self) -> int:
        if not self.losses.any():  # nothing predicted yet: the candidate nearest the default
            return int(np.argmin([abs(np.log(alpha / DEFAULT_ALPHA)) + width - 1 for alpha, width in self.candidates]))
        return int(np.argmin(self.losses))

    def add_wave(self, wave: Comparisons) -> None:
        """Score a wave's answers under each candidate's latest fit, then refit the candidates if
        the answers have grown enough."""
        if not len(wave):
            return
        if self._fits:
            self.losses += [predictive_log_loss(previous, wave) for previous in self._fits]
        self.answers = Comparisons(
            np.concatenate([self.answers.first, wave.first]),
            np.concatenate([self.answers.second, wave.second]),
            np.concatenate([self.answers.first_won, wave.first_won]),
        )
        if self._fits and len(self.answers) < REFIT_GROWTH * self._fitted_on:
            return
        self._fitted_on = len(self.answers)
        # Every candidate is refitted: refitting only those near the choice left the others' stale
        # fits to lose unfairly, and SSR overstated by 0.02-0.03 more in bench/grading.py.
        starts: list[NDArray[np.float64] | None] = [previous.scores for previous in self._fits] or [None] * len(
            self.candidates
        )
        self._fits = [
            fit(self.n, self.answers, precisions(alpha, self.is_anchor, width), start=start, precise=False)
            for (alpha, width), start in zip(self.candidates, starts, strict=True)
        ]

    @classmethod
    def replay(
        cls, n: int, data: Comparisons, waves: NDArray[np.int64], is_anchor: NDArray[np.bool_] | None = None
    ) -> PriorChoice:
        """Rebuild the choice from stored answers, `waves[k]` being the wave comparison k was asked in."""
        choice = cls(n, is_anchor)
        for wave in np.unique(waves):
            chosen = waves == wave
            choice.add_wave(Comparisons(data.first[chosen], data.second[chosen], data.first_won[chosen]))
        return choice
