"""The price table and the cost of a call; the runner's estimate before a run."""

from __future__ import annotations

import pytest

from mesh_common.pricing import Price, PriceError, PriceTable, Usage, cost, priced
from runner.estimate import comparisons_per_essay, estimate
from tests.support.tools import ROOT, run, tool


def test_models_are_priced_by_their_own_entry_else_the_longest_prefix_else_the_provider_star() -> None:
    table = PriceTable.load()
    assert table.price("openai", "gpt-4o-mini-2024-07-18") == table.price("openai", "gpt-4o-mini")
    assert table.price("openai", "gpt-4o-2024-08-06") == table.price("openai", "gpt-4o")
    assert table.price("openai", "gpt-4o-mini").input < table.price("openai", "gpt-4o").input
    assert table.price("heuristic", "anything") == Price(0.0, 0.0)
    assert table.price("openai", "llama3") is None  # a self-hosted model has no price until one is added


def test_cost_counts_cached_and_written_input_at_their_rates_and_the_batch_share() -> None:
    price = Price(input=1.0, output=4.0, cached_input=0.1, cache_write=1.25, batch=0.5)
    usage = Usage(tokens_in=1_000_000, tokens_out=100_000, tokens_cached=600_000, tokens_cache_written=100_000)
    # 300k fresh at 1, 600k cached at 0.1, 100k written at 1.25, 100k out at 4 (per million)
    assert cost(price, usage) == pytest.approx(0.3 + 0.06 + 0.125 + 0.4)
    assert cost(price, usage, batch=True) == pytest.approx((0.3 + 0.06 + 0.125 + 0.4) / 2)
    assert priced(None, usage) is None  # no price: unknown, never 0
    assert priced(price, None) is None  # a paid model whose provider reported no tokens
    assert priced(Price(0.0, 0.0), None) == 0.0  # a free judge


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[openai.gpt\n", "not valid TOML"),
        ('[openai."m"]\ninput = -1\noutput = 1\n', "input must be a number of US dollars, 0 or more"),
        ('[openai."m"]\ninput = 1\n', "needs output"),
        ('[openai."m"]\ninput = 1\noutput = 1\ncurrency = "EUR"\n', "unknown keys ['currency']"),
        ("openai = 3\n", "must hold models"),
        ('[openai."m"]\ninput = true\noutput = 1\n', "input must be a number"),
    ],
)
def test_a_broken_price_table_is_refused_naming_the_entry(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PriceTable.load(path)


def test_the_estimate_grows_with_the_essays_and_stops_at_the_budget() -> None:
    price = Price(input=1.0, output=1.0)
    small = estimate([300] * 10, 100, 0, price)
    assert small.comparisons == 40 and small.most_comparisons == 60  # 4 per essay; the default budget 6
    assert estimate([300] * 10, 100, 25, price).comparisons == 25  # never above the budget
    longer = estimate([600] * 10, 100, 0, price)
    assert longer.tokens_in > small.tokens_in and longer.cost_usd > small.cost_usd
    assert estimate([300] * 10, 100, 0, None).cost_usd is None


def test_a_higher_reliability_target_needs_more_comparisons() -> None:
    # SE^2 falls as 1 / judgements, so 1 - SSR does too: SSR 0.9 after 8 judgements per essay
    assert comparisons_per_essay(0.9) == pytest.approx(4.0)
    assert comparisons_per_essay(0.95) == pytest.approx(8.0)
    assert comparisons_per_essay(0.6) == 3.0  # never under the service's minimum
    price = Price(input=1.0, output=1.0)
    assert estimate([300] * 10, 0, 0, price, reliability=0.95).comparisons == 60  # capped by the budget


async def test_plan_refuses_a_broken_price_table_and_names_an_unpriced_model(tmp_path) -> None:
    broken = tmp_path / "prices.toml"
    broken.write_text("[openai.gpt\n")
    folder = str(ROOT / "examples" / "eng5")
    refused = await run(tool("cj-runner"), "plan", folder, "--provider", "openai", "--price-table", str(broken))
    assert refused.code == 2 and "is not valid TOML" in refused.stderr and "Traceback" not in refused.output
    unknown = await run(tool("cj-runner"), "plan", folder, "--provider", "openai", "--model", "llama3")
    assert unknown.code == 0 and "no price for openai llama3" in unknown.stdout
    certain = await run(tool("cj-runner"), "plan", folder, "--target-reliability", "1")
    assert certain.code == 2 and "--target-reliability must be from 0.5 to 0.99, not 1" in certain.stderr


async def test_cj_svc_refuses_a_broken_price_table_at_start(tmp_path) -> None:
    broken = tmp_path / "prices.toml"
    broken.write_text('[openai."m"]\ninput = 1\n')
    started = await run(tool("cj-svc"), "serve", "--listen", "127.0.0.1:0", "--database-url",
                        f"sqlite:///{tmp_path}/cj.db", "--migrate", "--price-table", str(broken), timeout=60)  # fmt: skip
    assert started.code == 2 and "needs output" in started.stderr and "Traceback" not in started.output
