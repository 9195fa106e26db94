"""The offline default judge: features writing assessment uses, no network, no key. Not an LLM.

Each essay gets a quality score once (cached by the sha256 of essay and prompt): a weighted sum of
standardised features, in grade steps of `examples/eng5` (see WEIGHTS). The features:
- spelling: share of words neither the English dictionary of pyspellchecker knows nor English text
  commonly uses (wordfreq Zipf frequency >= 2.5, so British spellings such as "realise" are not errors);
- sophistication: mean rarity (7 - Zipf frequency) of the words of four letters or more;
- diversity: MTLD (McCarthy & Jarvis 2010), lexical diversity that does not fall with length;
- length: log of the word count (developed answers score higher, with diminishing returns);
- sentences: closeness of the mean sentence length to 20 words;
- repetition: share of sentences that repeat an earlier one word for word;
- cohesion: connectives ("however", "for example", ...) per sentence, at most one;
- coherence: how much more adjacent sentences share content words than sentences in general, and
  whether opening and closing signposts ("first", "in the end") stand where they belong (a shuffled
  essay loses both);
- organisation: paragraphs, up to 5;
- relevance: share of the student prompt's content words the essay uses (0 without a prompt).
The pairwise decision is a logistic function of the score difference, P(A wins) = sigmoid(SLOPE x
(score A - score B)), calibrated on how far the fitted scores miss the example grades. The draw is
a fixed function of the two texts and their order, so a run is reproducible and identical texts split
evenly. Only English is supported: a text most of whose words are not English is still scored, and
the verdict's justification says that its score means little.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
from collections import OrderedDict
from functools import cache

from spellchecker import SpellChecker
from wordfreq import zipf_frequency

from cj_svc.judges.base import JudgeRequest, Verdict
from cj_svc.vocabulary import Winner

log = logging.getLogger("cj_svc.judges")

MODEL = "heuristic-v2"
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
COMMON_ZIPF = 2.5  # words at least this common in English text are spelled right, whatever the dictionary says
ENGLISH_SHARE = 0.6  # below this share of English words, a text is not taken for English
MTLD_THRESHOLD = 0.72
CONNECTIVES = (
    "however", "therefore", "moreover", "furthermore", "nevertheless", "although", "because", "since",
    "for example", "for instance", "in addition", "on the other hand", "in contrast", "as a result",
    "consequently", "finally", "firstly", "secondly", "in the end", "yet", "whereas", "instead", "thus",
)  # fmt: skip
OPENINGS = ("first", "firstly", "to begin", "to start", "at first", "initially")
CLOSINGS = ("finally", "in the end", "in conclusion", "to conclude", "to sum up", "in short", "lastly", "all in all")
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been it its this that these those "
    "i me my we our you your he she his her they them their there here not no so do did have has had will would "
    "can could very just".split()
)
# P(A better) = sigmoid(SLOPE x difference): the fit's residual SD is 0.42 grade steps, so essays one
# grade step apart are ordered right about 19 times in 20 (scripts/fit_offline_judge.py prints it).
SLOPE = 2.849

# The direction writing assessment gives each feature: the fit keeps every weight to it.
SIGNS = {"spelling": -1, "sophistication": 1, "diversity": 1, "length": 1, "sentences": 1, "repetition": -1,
         "cohesion": 1, "coherence": 1, "organisation": 1, "relevance": 1}  # fmt: skip
# What the examples cannot teach keeps these (mean, SD, weight): they have no spelling errors (so 2 %
# of words misspelt costs half a grade step), and their sentences are not ordered by meaning (so
# adjacent sentences sharing 0.05 more of their words than sentences in general gains 0.3).
FIXED = {"spelling": (0.0, 0.02, -0.5), "coherence": (0.0, 0.05, 0.3)}
# Fitted by scripts/fit_offline_judge.py on examples/eng5 (ridge regression of the grade step on the
# standardised features, students and anchors, signs kept; FIXED as above); nothing in tests/ was used.
# Means and SDs standardise.
MEANS = {"spelling": 0.0, "sophistication": 1.6362, "diversity": 58.1599, "length": 6.1995, "sentences": -0.3118,
         "repetition": 0.3827, "cohesion": 0.2347, "coherence": 0.0, "organisation": 0.7524, "relevance": 0.414}  # fmt: skip
SDS = {"spelling": 0.02, "sophistication": 0.1426, "diversity": 14.8849, "length": 0.1644, "sentences": 0.1829,
       "repetition": 0.0874, "cohesion": 0.1195, "coherence": 0.05, "organisation": 0.3698, "relevance": 0.0644}  # fmt: skip
WEIGHTS = {"spelling": -0.5, "sophistication": 0.16, "diversity": 0.099, "length": 1.261, "sentences": 0.469,
           "repetition": -0.018, "cohesion": 0.372, "coherence": 0.3, "organisation": 0.091, "relevance": 0.042}  # fmt: skip


@cache
def _dictionary() -> SpellChecker:
    return SpellChecker(language="en")


def _is_english_word(word: str) -> bool:
    return zipf_frequency(word, "en") >= COMMON_ZIPF or word in _dictionary()


def mtld(words: list[str], threshold: float = MTLD_THRESHOLD) -> float:
    """Mean length of word runs that keep a type-token ratio above `threshold`, both directions averaged."""

    def one_way(sequence: list[str]) -> float:
        factors, types, count = 0.0, set(), 0
        for word in sequence:
            types.add(word)
            count += 1
            if len(types) / count <= threshold:
                factors, types, count = factors + 1, set(), 0
        if count:
            factors += (1 - len(types) / count) / (1 - threshold)
        return len(sequence) / factors if factors else float(len(sequence))

    return (one_way(words) + one_way(words[::-1])) / 2 if words else 0.0


def _content(sentence: str) -> set[str]:
    """A sentence's content words, cut to 5 letters so that "bake", "baked" and "baking" meet."""
    return {w[:5] for w in (x.lower() for x in _WORD.findall(sentence)) if w not in STOPWORDS and len(w) > 2}


ALL_PAIRS_UP_TO = 200  # sentences; beyond, each is compared with the one half the text away (linear time)


def _general_overlaps(contents: list[set[str]]) -> list[float]:
    """Overlaps of non-adjacent sentence pairs: every pair in an essay, a linear sample in a huge text
    (a 1 MiB text has some 10,000 sentences: all pairs would take minutes)."""
    if len(contents) <= ALL_PAIRS_UP_TO:
        return [_overlap(contents[i], contents[j]) for i in range(len(contents)) for j in range(i + 2, len(contents))]
    half = len(contents) // 2
    return [_overlap(a, b) for a, b in zip(contents, contents[half:], strict=False)]


def _signposts_in_place(sentences: list[str]) -> float:
    """Share of opening signposts ("first", "to begin") in the first half of the essay and of closing
    ones ("finally", "in the end") in its last third: 0.5 without any."""
    placed = total = 0
    for index, sentence in enumerate(sentences):
        start = sentence.lower()
        position = index / max(len(sentences) - 1, 1)
        if start.startswith(OPENINGS):
            placed, total = placed + (position <= 0.5), total + 1
        elif start.startswith(CLOSINGS):
            placed, total = placed + (position >= 0.67), total + 1
    return placed / total if total else 0.5


def _overlap(a: set[str], b: set[str]) -> float:
    """How much two sentences share their content words (Jaccard)."""
    return len(a & b) / len(a | b) if a and b else 0.0


def features(text: str, prompt: str = "") -> dict[str, float]:
    words = [w.lower() for w in _WORD.findall(text)]
    count = len(words)
    if not count:
        return dict.fromkeys(WEIGHTS, 0.0) | {"english": 0.0}
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    sentences = [s.strip() for p in paragraphs for s in _SENTENCE_END.split(p.strip()) if s.strip()]
    english = [_is_english_word(w) for w in words]
    # short words are shared by many languages ("en", "det", "var" are common in English text too)
    english_share = sum(known for w, known in zip(words, english, strict=True) if len(w) >= 4) / max(
        sum(len(w) >= 4 for w in words), 1
    )
    longer = [w for w in words if len(w) >= 4]
    lowered = text.lower()
    contents = [_content(s) for s in sentences]
    adjacent = [_overlap(a, b) for a, b in zip(contents, contents[1:], strict=False)]
    every = _general_overlaps(contents)
    prompt_words = _content(prompt)
    normalised = [" ".join(_WORD.findall(s.lower())) for s in sentences]
    return {
        "spelling": sum(not known and len(w) > 2 for w, known in zip(words, english, strict=True)) / count,
        "sophistication": sum(7 - zipf_frequency(w, "en") for w in longer) / len(longer) if longer else 0.0,
        "diversity": mtld(words),
        "length": math.log1p(count),
        "sentences": -abs(count / max(len(sentences), 1) - 20) / 20,
        "repetition": (len(normalised) - len(set(normalised))) / len(normalised) if normalised else 0.0,
        "cohesion": min(1.0, sum(lowered.count(c) for c in CONNECTIVES) / max(len(sentences), 1)),
        "coherence": (sum(adjacent) / len(adjacent) if adjacent else 0.0)
        - (sum(every) / len(every) if every else 0.0)
        + 0.1 * (_signposts_in_place(sentences) - 0.5),
        "organisation": min(len(paragraphs), 5) / 5,
        "relevance": len(prompt_words & _content(text)) / len(prompt_words) if prompt_words else 0.0,
        "english": english_share,
    }


def quality(text: str, prompt: str = "") -> tuple[float, bool]:
    """(score in grade steps, whether the text reads as English)."""
    found = features(text, prompt)
    score = sum(WEIGHTS[name] * (found[name] - MEANS[name]) / SDS[name] for name in WEIGHTS)
    return score, found["english"] >= ENGLISH_SHARE


def draw(essay_a: str, essay_b: str) -> float:
    """A uniform number in [0, 1) fixed by the two texts and their order."""
    digest = hashlib.sha256(b"heuristic-v2\0" + essay_a.encode() + b"\0" + essay_b.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class HeuristicJudge:
    """Each essay's score is computed once (cached by the sha256 of essay and prompt, so the cache
    holds numbers, not texts), and long texts are scored in a thread, off the event loop."""

    provider = "heuristic"
    CACHED_SCORES = 50_000
    # Texts longer than this are scored in a thread.
    THREAD_ABOVE_CHARS = 5_000

    def __init__(self) -> None:
        self._scores: OrderedDict[tuple[bytes, bytes], tuple[float, bool]] = OrderedDict()

    async def _quality(self, text: str, prompt: str) -> tuple[float, bool]:
        key = (hashlib.sha256(text.encode()).digest(), hashlib.sha256(prompt.encode()).digest())
        scored = self._scores.get(key)
        if scored is None:
            long = len(text) > self.THREAD_ABOVE_CHARS
            scored = await asyncio.to_thread(quality, text, prompt) if long else quality(text, prompt)
            if not scored[1]:
                log.warning("an essay (sha256 %s) does not read as English: the offline judge scores English only",
                            key[0].hex()[:12])  # fmt: skip
            self._scores[key] = scored
            if len(self._scores) > self.CACHED_SCORES:
                self._scores.popitem(last=False)
        else:
            self._scores.move_to_end(key)
        return scored

    async def compare(self, request: JudgeRequest) -> Verdict:
        (a, a_english), (b, b_english) = await asyncio.gather(
            self._quality(request.essay_a, request.prompt), self._quality(request.essay_b, request.prompt)
        )
        p_a = 1 / (1 + math.exp(-SLOPE * (a - b)))
        a_wins = draw(request.essay_a, request.essay_b) < p_a
        caveat = "" if a_english and b_english else " One essay does not read as English: its score means little."
        return Verdict(
            winner=Winner.ESSAY_A if a_wins else Winner.ESSAY_B,
            confidence=min(5, 1 + int(abs(p_a - 0.5) * 10)),
            justification=(
                f"Offline text-feature judge (not an LLM): quality {a:+.2f} for Essay A vs {b:+.2f} for Essay B "
                f"in grade steps (spelling, vocabulary, diversity, length, sentences, repetition, connectives, "
                f"coherence, paragraphs, prompt words); P(A better) {p_a:.2f}.{caveat}"
            ),
            model=MODEL,
        )

    async def close(self) -> None:
        return None
