"""Pairing invariants: once per wave, no repeats until exhausted, complements, balance, anchors, seeds."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cj_svc.engine.bradley_terry import Comparisons, fit
from cj_svc.engine.pairing import PairingState, next_wave


def run_waves(n: int, waves: int, seed: int, anchors: int = 0) -> tuple[PairingState, list[list[tuple[int, int]]]]:
    is_anchor = np.arange(n) >= n - anchors
    state = PairingState.new(n, is_anchor)
    rng = np.random.default_rng(seed)
    scores = np.random.default_rng(seed + 1).normal(0, 1, n)
    history = []
    for _ in range(waves):
        state.scores = scores + rng.normal(0, 0.1, n)
        wave = next_wave(state, rng)
        for first, second in wave:
            state.record(first, second)
        history.append(wave)
    return state, history


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), waves=st.integers(1, 25), seed=st.integers(0, 1000), anchors=st.integers(0, 5))
def test_pairing_invariants(n: int, waves: int, seed: int, anchors: int) -> None:
    anchors = min(anchors, n - 1)
    state, history = run_waves(n, waves, seed, anchors)
    is_anchor = np.arange(n) >= n - anchors
    for wave in history:
        essays = [e for pair in wave for e in pair]
        assert len(essays) == len(set(essays)), "an essay twice in one wave"
        assert all(not (is_anchor[a] and is_anchor[b]) for a, b in wave), "anchor paired with anchor"
    assert np.all(np.abs(state.times_first - state.times_second) <= 1), "A/B positions unbalanced"


def test_no_pair_repeated_until_all_pairs_were_asked_then_complements() -> None:
    n = 8
    all_pairs = n * (n - 1) // 2
    state, history = run_waves(n, 14, seed=5)
    asked_order = [tuple(sorted(p)) for wave in history for p in wave]
    first_repeat = next(i for i, p in enumerate(asked_order) if p in asked_order[:i])
    assert first_repeat >= all_pairs - n // 2  # only the last, incomplete wave can run out early
    # re-asked pairs were shown the other way round first
    orientations = [counts for counts in state.asked.values() if sum(counts) == 2]
    assert orientations and all(counts == [1, 1] for counts in orientations)


def test_deterministic_for_a_seed() -> None:
    _, a = run_waves(30, 6, seed=11)
    _, b = run_waves(30, 6, seed=11)
    _, c = run_waves(30, 6, seed=12)
    assert a == b and a != c


def test_close_scores_are_preferred() -> None:
    n = 40
    state = PairingState.new(n)
    state.scores = np.linspace(-6, 6, n)
    wave = next_wave(state, np.random.default_rng(0))
    gaps = [abs(state.scores[a] - state.scores[b]) for a, b in wave]
    random_gap = np.mean([abs(x - y) for x in state.scores for y in state.scores if x != y])
    assert np.median(gaps) < random_gap / 4


def test_pairs_linking_seldom_compared_parts_of_the_scale_come_first() -> None:
    # Two groups of essays, each compared only within itself, with even outcomes: every score is 0,
    # but how the groups relate is unknown, so a pair across them is worth more than one inside.
    n = 8
    group = np.arange(n) >= n // 2
    first, second, won = [], [], []
    for a in range(n):
        for b in range(n):
            if a != b and group[a] == group[b] and (a + b) % 3:
                first += [a, b]
                second += [b, a]
                won += [True, False]
    result = fit(n, Comparisons.from_lists(first, second, won))
    state = PairingState.new(n)
    for a, b in zip(first, second, strict=True):
        state.record(a, b)
    state.scores, state.standard_errors, state.covariance = result.scores, result.standard_errors, result.covariance
    wave = next_wave(state, np.random.default_rng(0), max_pairs=2)
    assert len(wave) == 2 and all(group[a] != group[b] for a, b in wave)


def test_anchors_are_paired_with_students() -> None:
    state, history = run_waves(20, 5, seed=2, anchors=6)
    anchor_pairs = [p for wave in history for p in wave if max(p) >= 14]
    assert anchor_pairs and all(min(p) < 14 for p in anchor_pairs)
