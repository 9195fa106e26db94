"""What judge calls cost: a price table by provider and model, and the cost of a call's tokens.

The table ships as `prices.toml` beside this module; a user's own file replaces it. Costs are in
US dollars; prices are per million tokens.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).with_name("prices.toml")
PER = 1_000_000
# The model a provider's judge asks for when neither the batch nor the CJ Service names one.
DEFAULT_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cached_input: float | None = None  # default: input
    cache_write: float | None = None  # default: input
    batch: float = 1.0  # the share of these prices paid through the provider's batch API


@dataclass(frozen=True)
class Usage:
    """The tokens of one call as the provider billed them. `tokens_in` counts every input token;
    `tokens_cached` (read from the prompt cache) and `tokens_cache_written` are parts of it."""

    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    tokens_cache_written: int = 0


def cost(price: Price, usage: Usage, batch: bool = False) -> float:
    """US dollars for `usage` at `price` (through the provider's batch API when `batch`)."""
    fresh = max(0, usage.tokens_in - usage.tokens_cached - usage.tokens_cache_written)
    cached = price.input if price.cached_input is None else price.cached_input
    written = price.input if price.cache_write is None else price.cache_write
    return (
        fresh * price.input
        + usage.tokens_cached * cached
        + usage.tokens_cache_written * written
        + usage.tokens_out * price.output
    ) / PER * (price.batch if batch else 1.0)


def priced(price: Price | None, usage: Usage | None, batch: bool = False) -> float | None:
    """The cost of a call, or None when it cannot be known: no price, or a paid model whose
    provider reported no tokens."""
    if price is None:
        return None
    if usage is None:
        return 0.0 if price.input == price.output == 0 else None
    return cost(price, usage, batch)


class PriceError(ValueError):
    """A price table that cannot be read; the message names the file and the entry."""


@dataclass(frozen=True)
class PriceTable:
    """Prices by (provider, model); a model takes its own entry, else the longest entry its name
    starts with, else the provider's "*"."""

    prices: dict[tuple[str, str], Price]
    source: str = ""

    @classmethod
    def load(cls, path: str | Path = "") -> PriceTable:
        """The table in `path`, or the shipped one when `path` is empty."""
        file = Path(path) if path else SHIPPED
        try:
            document = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as error:
            raise PriceError(f"cannot read the price table {file}: {error.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise PriceError(f"the price table {file} is not valid TOML: {error}") from None
        prices: dict[tuple[str, str], Price] = {}
        for provider, models in document.items():
            if not isinstance(models, dict):
                raise PriceError(f'{file}: [{provider}] must hold models, e.g. [{provider}."model-name"]')
            for model, entry in models.items():
                prices[(provider, model)] = _price(file, provider, model, entry)
        return cls(prices, str(file))

    def price(self, provider: str, model: str) -> Price | None:
        """The price of `model` of `provider`, or None when the table has none."""
        if (provider, model) in self.prices:
            return self.prices[(provider, model)]
        starts = [m for (p, m) in self.prices if p == provider and m != "*" and model.startswith(m)]
        if starts:
            return self.prices[(provider, max(starts, key=len))]
        return self.prices.get((provider, "*"))


def _price(file: Path, provider: str, model: str, entry: object) -> Price:
    where = f'{file}: [{provider}."{model}"]'
    if not isinstance(entry, dict):
        raise PriceError(f"{where} must be a table with input and output prices")
    unknown = set(entry) - {"input", "output", "cached_input", "cache_write", "batch"}
    if unknown:
        raise PriceError(
            f"{where} has unknown keys {sorted(unknown)}; use input, output, cached_input, cache_write, batch"
        )
    for key in ("input", "output"):
        if key not in entry:
            raise PriceError(f"{where} needs {key} (US dollars per million tokens)")
    for key, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise PriceError(f"{where} {key} must be a number of US dollars, 0 or more, not {value!r}")
    return Price(
        input=float(entry["input"]),
        output=float(entry["output"]),
        cached_input=None if "cached_input" not in entry else float(entry["cached_input"]),
        cache_write=None if "cache_write" not in entry else float(entry["cache_write"]),
        batch=float(entry.get("batch", 1.0)),
    )
