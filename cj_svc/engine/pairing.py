"""Choosing the next wave of pairs.

Rules, each checked by tests:
- each essay appears at most once per wave;
- an unordered pair is not asked again while new pairs worth asking remain; when none remain, a
  pair is re-asked in the orientation it has not had yet;
- A/B positions stay balanced: an essay's (#A - #B) is always -1, 0 or 1, because two essays
  leaning the same way are never paired and the one that leans takes the other side;
- anchors are paired with students, never with each other;
- among allowed pairs, the most informative come first: the pair whose judgement is expected to
  shrink the total variance of the scores most (A-optimal design, see `_gains`). That favours close
  current scores, uncertain essays and essays with few comparisons, and also pairs that link parts
  of the scale that were seldom compared with each other, which pairing only near neighbours misses;
- beyond `DENSE_UP_TO` essays, where there is no covariance and all pairs would be billions, the
  candidates are each essay's `NEIGHBOURS` nearest on the scale either side and `LONG_LINKS` drawn at
  random (which keep distant parts of the scale tied together), their gain taken with the scores
  independent;
- the same state and seed give the same wave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from cj_svc.engine.bradley_terry import DENSE_UP_TO, difference_variance

CANDIDATES_PER_SLOT = 8  # best pairs considered per pair of the wave (beyond those already asked)
NEIGHBOURS = 12  # beyond DENSE_UP_TO essays: candidate partners on either side in score order
LONG_LINKS = 2  # beyond DENSE_UP_TO essays: candidate partners drawn at random, per essay


class Take(Protocol):
    """Adds the pair (i, j) to the wave, in the `forced` (first, second) order when one is given."""

    def __call__(self, i: int, j: int, forced: tuple[int, int] | None = None) -> None: ...


@dataclass
class PairingState:
    """What pairing needs to know; the service keeps it in its database."""

    n: int
    is_anchor: NDArray[np.bool_]
    scores: NDArray[np.float64]
    standard_errors: NDArray[np.float64]
    comparisons: NDArray[np.int64]  # per essay, asked so far
    times_first: NDArray[np.int64]  # per essay, shown as Essay A
    times_second: NDArray[np.int64]  # per essay, shown as Essay B
    # unordered pair (low, high) -> [times low was first, times high was first]
    asked: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    covariance: NDArray[np.float64] | None = None  # of the scores, from the last fit; None: diag(SE^2)

    @classmethod
    def new(cls, n: int, is_anchor: NDArray[np.bool_] | None = None) -> PairingState:
        zeros = np.zeros(n, np.int64)
        return cls(
            n=n,
            is_anchor=np.zeros(n, bool) if is_anchor is None else np.asarray(is_anchor, bool),
            scores=np.zeros(n),
            standard_errors=np.ones(n),
            comparisons=zeros.copy(),
            times_first=zeros.copy(),
            times_second=zeros.copy(),
        )

    def record(self, first: int, second: int) -> None:
        """Count a pair as asked (call when it is sent, whatever its outcome)."""
        self.comparisons[first] += 1
        self.comparisons[second] += 1
        self.times_first[first] += 1
        self.times_second[second] += 1
        orientations = self.asked.setdefault((min(first, second), max(first, second)), [0, 0])
        orientations[0 if first < second else 1] += 1

    @property
    def skew(self) -> NDArray[np.int64]:
        return self.times_first - self.times_second


def _pairable(state: PairingState, i: int, j: int, skew: NDArray[np.int64]) -> bool:
    if i == j or (state.is_anchor[i] and state.is_anchor[j]):
        return False
    return bool(skew[i] * skew[j] <= 0)  # never two essays that lean the same way


def _orient(i: int, j: int, skew: NDArray[np.int64], rng: np.random.Generator) -> tuple[int, int]:
    """(first, second): the essay leaning to A goes second; with no lean, a coin flip."""
    if skew[i] > 0 or skew[j] < 0:
        return j, i
    if skew[i] < 0 or skew[j] > 0:
        return i, j
    return (i, j) if rng.random() < 0.5 else (j, i)


def _gains(
    state: PairingState, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Candidate unordered pairs (i, j), i < j, with the expected reduction of trace(C), the total
    variance of the scores, if judged once: w |C d|^2 / (1 + w d'C d), where d = e_i - e_j and
    w = p(1-p) at the current scores (the rank-one update of the posterior covariance C by one
    comparison). Every pair up to DENSE_UP_TO essays; beyond, score neighbours and random links."""
    if state.n > DENSE_UP_TO:
        i, j = _candidates(state, rng)
        variances = state.standard_errors**2
        reach = variances[i] ** 2 + variances[j] ** 2
        spread = variances[i] + variances[j]
    else:
        covariance = state.covariance if state.covariance is not None else np.diag(state.standard_errors**2)
        i, j = np.triu_indices(state.n, 1)
        # |C d|^2 = d' C C d: the same form as the variance of a difference, over C C
        reach = difference_variance(covariance @ covariance, i, j)
        spread = difference_variance(covariance, i, j)
    win = 1.0 / (1.0 + np.exp(-(state.scores[i] - state.scores[j])))
    weight = win * (1 - win)
    return i, j, weight * reach / (1.0 + weight * spread)


def _candidates(state: PairingState, rng: np.random.Generator) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each essay with its NEIGHBOURS nearest on the scale either side and LONG_LINKS random others,
    as unordered pairs (i < j) without repeats."""
    order = np.argsort(state.scores, kind="stable")
    near = [np.stack([order[:-k], order[k:]]) for k in range(1, min(NEIGHBOURS, state.n - 1) + 1)]
    far_i = np.repeat(np.arange(state.n), LONG_LINKS)
    far = np.stack([far_i, rng.integers(0, state.n, len(far_i))])
    pairs = np.concatenate([*near, far], axis=1)
    pairs = np.unique(np.sort(pairs, axis=0), axis=1)
    pairs = pairs[:, pairs[0] != pairs[1]]
    return pairs[0], pairs[1]


def _ranked_pairs(state: PairingState, rng: np.random.Generator, limit: int) -> list[tuple[int, int]]:
    """Pairs not asked yet, highest gain first (ties broken by the seed)."""
    i, j, gain = _gains(state, rng)
    gain = gain + rng.random(len(gain)) * 1e-12
    # Only the best few per slot need sorting; every asked pair might be among them, so add those.
    keep = min(len(gain), CANDIDATES_PER_SLOT * limit + len(state.asked))
    best = np.argpartition(-gain, keep - 1)[:keep] if keep < len(gain) else np.arange(len(gain))
    best = best[np.argsort(-gain[best], kind="stable")]
    return [pair for pair in zip(i[best].tolist(), j[best].tolist(), strict=True) if pair not in state.asked]


def next_wave(
    state: PairingState,
    rng: np.random.Generator,
    max_pairs: int | None = None,
    informative: bool = True,
    busy: set[int] | None = None,
) -> list[tuple[int, int]]:
    """The next wave: (first, second) index pairs, at most n // 2 and at most `max_pairs`.

    `informative=False` picks uniformly among allowed pairs (random pairing, for comparison);
    `busy` essays (being judged right now) are left out of this wave."""
    limit = state.n // 2 if max_pairs is None else min(state.n // 2, max_pairs)
    if limit <= 0:
        return []
    skew = state.skew.copy()
    used = np.zeros(state.n, bool)
    used[list(busy or ())] = True
    wave: list[tuple[int, int]] = []

    def take(i: int, j: int, forced: tuple[int, int] | None = None) -> None:
        first, second = forced or _orient(i, j, skew, rng)
        skew[first] += 1
        skew[second] -= 1
        used[i] = used[j] = True
        wave.append((first, second))

    if informative:
        for i, j in _ranked_pairs(state, rng, limit):
            if len(wave) >= limit:
                break
            if not used[i] and not used[j] and _pairable(state, i, j, skew):
                take(i, j)
    if len(wave) < limit:
        _fill_from_unasked(state, rng, used, skew, take, limit - len(wave))
    anchors = int(state.is_anchor.sum())
    possible = state.n * (state.n - 1) // 2 - anchors * (anchors - 1) // 2
    exhausted = len(state.asked) >= possible
    # Re-ask only when every allowed pair was asked (or nothing new fits this wave at all).
    if len(wave) < limit and (exhausted or not wave):
        _resample(state, rng, used, skew, take, limit - len(wave))
    return wave


def _fill_from_unasked(
    state: PairingState,
    rng: np.random.Generator,
    used: NDArray[np.bool_],
    skew: NDArray[np.int64],
    take: Take,
    wanted: int,
) -> None:
    """Pairs outside the candidate set that were never asked, for essays still free."""
    free = [int(i) for i in rng.permutation(state.n) if not used[i]]
    for position, i in enumerate(free):
        if wanted <= 0:
            return
        if used[i]:
            continue
        for j in free[position + 1 :]:
            if not used[j] and (min(i, j), max(i, j)) not in state.asked and _pairable(state, i, j, skew):
                take(i, j)
                wanted -= 1
                break


def _resample(
    state: PairingState,
    rng: np.random.Generator,
    used: NDArray[np.bool_],
    skew: NDArray[np.int64],
    take: Take,
    wanted: int,
) -> None:
    """Every worthwhile pair was asked: re-ask, preferring pairs seen in one orientation only,
    shown the other way round; then the least-asked pairs."""
    pairs = sorted(state.asked.items(), key=lambda item: (min(item[1]) > 0, sum(item[1]), rng.random()))
    for (low, high), (low_first, high_first) in pairs:
        if wanted <= 0:
            return
        if used[low] or used[high] or not _pairable(state, low, high, skew):
            continue
        if low_first == 0 or high_first == 0:
            first, second = (low, high) if low_first == 0 else (high, low)
            # Only the complement orientation; skip the pair while it would unbalance A/B positions.
            if skew[first] <= 0 and skew[second] >= 0:
                take(low, high, (first, second))
                wanted -= 1
            continue
        take(low, high)
        wanted -= 1
