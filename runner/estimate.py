"""What a run will cost, estimated before it is submitted, with no network.

Comparisons: the CJ Service asks each essay at least 6 times (3 comparisons per essay) and stops
once the scores reach the target reliability (SSR 0.9 by default); it never asks more than the
budget. SSR is 1 - SE^2 / var(scores), and SE^2 falls as 1 / (judgements per essay), so the
judgements an essay needs grow as 1 / (1 - SSR): on the example essays SSR 0.9 came after about 8
judgements per essay, hence 0.8 / (1 - SSR) judgements (half as many comparisons) per essay.

Tokens: no tokenizer for the hosted models ships for offline use, so tokens are counted from
words: English prose runs about 1.33 tokens per word (punctuation included) in the GPT and Claude
tokenizers. Each comparison sends the instructions (the judge's role and answer format, about
130 words), the task and the rubric, and two essays; the answer is a short JSON verdict of about
100 tokens. Prices come from the price table (see mesh_common/prices.toml).
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh_common.pricing import Price, Usage, cost

TOKENS_PER_WORD = 1.33
INSTRUCTION_WORDS = 130  # the judge's role, headings and answer format (cj_svc.judges.prompting)
ANSWER_TOKENS = 100
LEAST_PER_ESSAY = 3.0  # comparisons per essay before any quality rule may stop a batch
JUDGEMENTS_AT_SSR = 0.8  # judgements per essay to reach SSR r: JUDGEMENTS_AT_SSR / (1 - r)
DEFAULT_RELIABILITY = 0.9  # the service's default target
BUDGET_PER_ESSAY = 6  # the service's default budget: 12 judgements per essay


def comparisons_per_essay(reliability: float = DEFAULT_RELIABILITY) -> float:
    """Comparisons per essay expected before the scores reach SSR `reliability` (at least the
    service's minimum)."""
    return max(LEAST_PER_ESSAY, JUDGEMENTS_AT_SSR / (1 - reliability) / 2)


@dataclass(frozen=True)
class Estimate:
    essays: int
    comparisons: int  # expected
    most_comparisons: int  # the budget
    tokens_in: int  # expected, all comparisons
    tokens_out: int
    cost_usd: float | None  # expected; None without a price
    most_cost_usd: float | None  # at the budget


def dollars(amount: float) -> str:
    """US dollars to the cent, or to four significant digits below a dollar."""
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4g}"


def estimate(
    essay_words: list[int],
    shared_words: int,
    budget: int,
    price: Price | None,
    cached_share: float = 0.0,
    batch: bool = False,
    reliability: float = DEFAULT_RELIABILITY,
) -> Estimate:
    """The expected and largest comparisons, tokens and cost of ranking essays of `essay_words`
    words, each comparison also sending `shared_words` of task and rubric. `budget` 0 means the
    service's default. `cached_share`: the share of input tokens the provider is expected to read
    from its prompt cache (0 unless the shared part is long enough to be cached); `batch`: priced
    through the provider's batch API; `reliability`: the SSR the batch stops at."""
    n = len(essay_words)
    most = budget or max(1, BUDGET_PER_ESSAY * n)
    expected = min(most, round(comparisons_per_essay(reliability) * n))
    mean_words = sum(essay_words) / n if n else 0.0
    per_call_in = TOKENS_PER_WORD * (INSTRUCTION_WORDS + shared_words + 2 * mean_words)

    def usage(comparisons: int) -> Usage:
        tokens_in = round(per_call_in * comparisons)
        return Usage(tokens_in, ANSWER_TOKENS * comparisons, tokens_cached=round(cached_share * tokens_in))

    return Estimate(
        essays=n,
        comparisons=expected,
        most_comparisons=most,
        tokens_in=usage(expected).tokens_in,
        tokens_out=usage(expected).tokens_out,
        cost_usd=None if price is None else cost(price, usage(expected), batch),
        most_cost_usd=None if price is None else cost(price, usage(most), batch),
    )
