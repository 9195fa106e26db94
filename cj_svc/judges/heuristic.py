"""The offline default judge: deterministic text features, no network, no key. Not an LLM.

It prefers the essay with the higher feature score, a weighted sum of:
- length: log of the word count (longer, more developed answers score higher, with diminishing returns);
- vocabulary: distinct words / sqrt(words) (Guiraud's index of lexical richness);
- word length: mean characters per word;
- sentence shape: closeness of the mean sentence length to 18 words;
- organisation: number of paragraphs, up to 6;
- relevance: share of the prompt's content words the essay uses.
It measures surface features that correlate with quality; it does not understand arguments.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections import OrderedDict

from cj_svc.judges.base import JudgeRequest, Verdict

_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", re.UNICODE)
_SENTENCE = re.compile(r"[.!?]+(?:\s|$)")


def features(text: str, prompt_words: frozenset[str] = frozenset()) -> dict[str, float]:
    words = [w.lower() for w in _WORD.findall(text)]
    count = len(words)
    sentences = max(1, len(_SENTENCE.findall(text)))
    paragraphs = len([p for p in re.split(r"\n\s*\n", text) if p.strip()])
    return {
        "length": math.log1p(count),
        "vocabulary": len(set(words)) / math.sqrt(count) if count else 0.0,
        "word_length": sum(map(len, words)) / count if count else 0.0,
        "sentence_shape": -abs(count / sentences - 18) / 18,
        "organisation": min(paragraphs, 6) / 6,
        "relevance": len(prompt_words & set(words)) / len(prompt_words) if prompt_words else 0.0,
    }


WEIGHTS = {
    "length": 1.0,
    "vocabulary": 0.6,
    "word_length": 0.5,
    "sentence_shape": 0.5,
    "organisation": 0.5,
    "relevance": 1.0,
}


def quality(text: str, prompt: str = "") -> float:
    prompt_words = frozenset(w.lower() for w in _WORD.findall(prompt) if len(w) > 4)
    return sum(WEIGHTS[name] * value for name, value in features(text, prompt_words).items())


class HeuristicJudge:
    """Each essay's score is computed once (cached by the sha256 of essay and prompt, so the cache
    holds numbers, not texts), and long texts are scored in a thread, off the event loop."""

    provider = "heuristic"
    CACHED_SCORES = 50_000
    # Texts longer than this are scored in a thread (a 1 MiB text takes about a tenth of a second).
    THREAD_ABOVE_CHARS = 20_000

    def __init__(self) -> None:
        self._scores: OrderedDict[tuple[bytes, bytes], float] = OrderedDict()

    async def _quality(self, text: str, prompt: str) -> float:
        key = (hashlib.sha256(text.encode()).digest(), hashlib.sha256(prompt.encode()).digest())
        score = self._scores.get(key)
        if score is None:
            long = len(text) > self.THREAD_ABOVE_CHARS
            score = await asyncio.to_thread(quality, text, prompt) if long else quality(text, prompt)
            self._scores[key] = score
            if len(self._scores) > self.CACHED_SCORES:
                self._scores.popitem(last=False)
        else:
            self._scores.move_to_end(key)
        return score

    async def compare(self, request: JudgeRequest) -> Verdict:
        a = await self._quality(request.essay_a, request.prompt)
        b = await self._quality(request.essay_b, request.prompt)
        gap = abs(a - b)
        return Verdict(
            winner="A" if a >= b else "B",
            confidence=min(5, 1 + int(gap / 0.15)),
            justification=(
                f"Text-feature heuristic (not an LLM): feature score {a:.2f} for Essay A vs {b:.2f} for Essay B "
                "(length, vocabulary, word and sentence shape, paragraphs, use of the prompt's words)."
            ),
            model="heuristic-v1",
        )

    async def close(self) -> None:
        return None
