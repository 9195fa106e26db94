"""The measures of bench/grading.py that are not the engine's own: the pseudo-true scores."""

from dataclasses import replace

import numpy as np

from bench.grading import BASE, expected_p_first_wins, pseudo_true_scores, tenth_of
from cj_svc.engine.bradley_terry import Comparisons


def _all_pairs_both_orders(n: int) -> Comparisons:
    first, second = zip(*[(i, j) for i in range(n) for j in range(n) if i != j], strict=True)
    return Comparisons(np.array(first), np.array(second), np.zeros(len(first), bool))


def test_pseudo_true_scores_of_a_judge_the_model_fits_are_the_true_scores() -> None:
    theta = np.random.default_rng(0).normal(0, 2, 12)
    pairs = _all_pairs_both_orders(12)
    p_first = expected_p_first_wins(BASE, theta[pairs.first] - theta[pairs.second])  # logistic, order effect 0.3
    assert np.allclose(pseudo_true_scores(12, pairs, p_first), theta - theta.mean(), atol=1e-3)


def test_pseudo_true_scores_of_a_lapsing_judge_are_squeezed() -> None:
    theta = np.linspace(-4, 4, 12)
    pairs = _all_pairs_both_orders(12)
    p_first = expected_p_first_wins(replace(BASE, lapse=0.1), theta[pairs.first] - theta[pairs.second])
    slope = np.polyfit(theta, pseudo_true_scores(12, pairs, p_first), 1)[0]
    assert 0.5 < slope < 0.9  # a judge that lapses never gets far pairs surely right


def test_tenths_split_at_the_tenth_and_ninetieth_percentiles() -> None:
    tenths = tenth_of(np.arange(100.0))
    assert (tenths[:10] == 0).all() and (tenths[10:90] == 1).all() and (tenths[90:] == 2).all()
