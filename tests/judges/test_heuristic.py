"""The offline judge prefers what writing assessment prefers, on essays it was not fitted on."""

from __future__ import annotations

import random
import re

import pytest

from cj_svc.judges.base import JudgeRequest
from cj_svc.judges.heuristic import HeuristicJudge, features, mtld, quality
from cj_svc.vocabulary import Winner

ESSAY = """Last summer my grandmother taught me how to bake bread in her small kitchen. The kitchen smelled of \
flour and coffee, and the radio played quietly while we worked. She believed that bread cannot be rushed, \
because the dough needs time to rest and rise.

First, we mixed the flour with warm water, salt and yeast. The yeast was the part I did not understand, so she \
explained that it is alive and feeds on the sugar in the flour. While the dough rested, she told me stories \
about her own mother, who baked bread every morning before sunrise.

However, the most difficult step was kneading. My arms grew tired after a few minutes, but my grandmother \
kneaded the dough for a long time without stopping. She said that kneading gives bread its strength, just as \
practice gives a musician confidence. Therefore I kept going until the dough became smooth and elastic.

When the loaf finally came out of the oven, the crust was golden and cracked. We cut the bread while it was \
still warm and ate it with butter. Although it was only bread, it tasted like patience and care.

In the end, the afternoon taught me more than a recipe. It showed me that good things often take time, and \
that the people who teach us are giving us something of themselves. Whenever I bake bread now, I remember \
her kitchen, her stories and her steady hands."""


def misspell(text: str, share: float, rng: random.Random) -> str:
    """Swap two inner letters in `share` of the longer words: the typos a hurried writer makes."""

    def typo(match: re.Match[str]) -> str:
        word = match.group(0)
        if len(word) < 5 or rng.random() > share:
            return word
        i = rng.randrange(1, len(word) - 2)
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]

    return re.sub(r"[A-Za-z]+", typo, text)


def shuffled(text: str, rng: random.Random) -> str:
    """The same sentences in a random order, in as many paragraphs as before."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    sentences = [s for p in paragraphs for s in re.split(r"(?<=[.!?])\s+", p.strip())]
    rng.shuffle(sentences)
    size = -(-len(sentences) // len(paragraphs))
    return "\n\n".join(" ".join(sentences[i : i + size]) for i in range(0, len(sentences), size))


def first_words(text: str, count: int) -> str:
    words = text.split()
    return " ".join(words[:count]).rstrip(",;") + "."


async def wins(judge: HeuristicJudge, better: str, worse: str) -> bool:
    """Whether `better` wins, asked once in each order (both must agree)."""
    first = await judge.compare(JudgeRequest(essay_a=better, essay_b=worse))
    second = await judge.compare(JudgeRequest(essay_a=worse, essay_b=better))
    return first.winner == Winner.ESSAY_A and second.winner == Winner.ESSAY_B


def test_features_see_what_they_should() -> None:
    clean = features(ESSAY)
    assert clean["spelling"] < 0.01 and clean["english"] > 0.95
    assert features(misspell(ESSAY, 0.5, random.Random(1)))["spelling"] > 0.1
    assert clean["coherence"] > features(shuffled(ESSAY, random.Random(1)))["coherence"]
    assert mtld("the cat sat on the mat and the dog sat on the log".split()) > 0
    assert features("realise colour organise behaviour")["spelling"] == 0.0  # British spelling is spelling


async def test_an_essay_full_of_misspellings_loses_to_the_same_essay_corrected() -> None:
    judge = HeuristicJudge()
    rng = random.Random(7)
    outcomes = [await wins(judge, ESSAY, misspell(ESSAY, 0.3, rng)) for _ in range(20)]
    assert quality(ESSAY)[0] - quality(misspell(ESSAY, 0.3, random.Random(7)))[0] > 1.5  # grade steps
    assert sum(outcomes) >= 16, outcomes


async def test_a_shuffled_essay_loses_to_the_original() -> None:
    judge = HeuristicJudge()
    rng = random.Random(11)
    variants = [shuffled(ESSAY, rng) for _ in range(20)]
    assert all(quality(ESSAY)[0] > quality(v)[0] for v in variants)
    # shuffling costs under a grade step, so the judge prefers the original more often than not
    outcomes = [await judge.compare(JudgeRequest(essay_a=ESSAY, essay_b=v)) for v in variants]
    outcomes += [await judge.compare(JudgeRequest(essay_a=v, essay_b=ESSAY)) for v in variants]
    original_won = sum(o.winner == Winner.ESSAY_A for o in outcomes[:20]) + sum(
        o.winner == Winner.ESSAY_B for o in outcomes[20:]
    )
    assert original_won >= 26, original_won  # of 40


async def test_a_50_word_essay_loses_to_a_400_word_essay_of_the_same_quality() -> None:
    judge = HeuristicJudge()
    short, long = first_words(ESSAY, 50), first_words(ESSAY, 400)
    assert quality(long)[0] - quality(short)[0] > 3
    assert await wins(judge, long, short)


async def test_identical_texts_split_evenly() -> None:
    judge = HeuristicJudge()
    rng = random.Random(3)
    a_wins = 0
    for i in range(400):
        text = misspell(ESSAY, 0.05, rng) + f" ({i})"
        a_wins += (await judge.compare(JudgeRequest(essay_a=text, essay_b=text))).winner == Winner.ESSAY_A
    assert 160 <= a_wins <= 240


async def test_the_same_question_gets_the_same_answer() -> None:
    request = JudgeRequest(essay_a=ESSAY, essay_b=shuffled(ESSAY, random.Random(5)))
    first, second = await HeuristicJudge().compare(request), await HeuristicJudge().compare(request)
    assert first == second


@pytest.mark.parametrize("text", ["Det var en gång en elev som skrev om sin resa till fjällen och sjöarna."])
async def test_a_text_that_is_not_english_is_scored_with_a_caveat(text: str) -> None:
    verdict = await HeuristicJudge().compare(JudgeRequest(essay_a=text, essay_b=ESSAY))
    assert "does not read as English" in verdict.justification
    assert quality(text)[1] is False and quality(ESSAY)[1] is True
