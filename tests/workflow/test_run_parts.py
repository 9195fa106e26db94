"""The pure parts of a batch's run: answers into the engine's form, the prior fed wave by wave, and
the next wave planned from the rows."""

from __future__ import annotations

import numpy as np

from cj_svc.engine.prior import PriorChoice
from cj_svc.vocabulary import ComparisonStatus, Winner
from cj_svc.workflow.run import feed_prior, occurrences, planned_wave
from cj_svc.workflow.store import NewComparison, answered

POSITION = {"a": 0, "b": 1, "c": 2, "d": 3}


def row(wave: int, first: str, second: str, status: str = ComparisonStatus.DONE, winner: str | None = None):
    if status == ComparisonStatus.DONE and winner is None:
        winner = Winner.ESSAY_A
    return NewComparison(f"{wave}{first}{second}", wave, first, second, status, 1, "m", winner)


def test_only_answered_comparisons_reach_the_engine_in_positions() -> None:
    rows = [
        row(1, "a", "b"),
        row(1, "c", "d", winner=Winner.ESSAY_B),
        row(2, "a", "c", ComparisonStatus.FAILED),
        row(2, "b", "d", ComparisonStatus.PENDING),
    ]
    data = answered(rows, POSITION)
    assert data.first.tolist() == [0, 2] and data.second.tolist() == [1, 3]
    assert data.first_won.tolist() == [True, False]


def test_the_prior_is_fed_whole_waves_in_order_and_waits_for_a_pending_one() -> None:
    rows = [row(1, "a", "b"), row(1, "c", "d"), row(2, "a", "c"), row(2, "b", "d", ComparisonStatus.PENDING),
            row(3, "a", "d")]  # fmt: skip
    prior = PriorChoice(4)
    assert feed_prior(prior, rows, POSITION, 0) == 1  # wave 2 is still being judged: wave 3 waits too
    assert len(prior.answers) == 2
    answered_now = [*rows[:3], row(2, "b", "d"), rows[4]]
    assert feed_prior(prior, answered_now, POSITION, 1) == 3
    assert len(prior.answers) == 5
    assert feed_prior(prior, answered_now, POSITION, 3) == 3 and len(prior.answers) == 5  # nothing twice


def test_the_next_wave_spares_busy_essays_and_stops_at_the_budget() -> None:
    is_anchor = np.zeros(4, bool)
    rng = np.random.default_rng(1)
    assert planned_wave(is_anchor, [], POSITION, None, rng, 0, set()) == []
    wave = planned_wave(is_anchor, [], POSITION, None, rng, 10, busy={0})
    assert wave and all(0 not in pair for pair in wave)
    assert len(planned_wave(is_anchor, [], POSITION, None, rng, 1, set())) == 1


def test_a_pair_asked_again_in_the_same_order_is_a_new_question() -> None:
    earlier = [row(1, "a", "b"), row(1, "c", "d"), row(2, "b", "a")]
    again = [row(3, "a", "b"), row(3, "d", "c")]
    counts = occurrences(again, [*earlier, *again])
    assert counts["3ab"] == 1  # a before b was asked once before
    assert counts["3dc"] == 0  # the other order is another question
    assert occurrences(earlier, earlier) == {"1ab": 0, "1cd": 0, "2ba": 0}
