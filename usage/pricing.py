"""Tokens x model -> cost, from genai-prices' maintained price table (offline, versioned data).

Costs are integers in nanodollars (1e-9 USD): every Anthropic price is a whole number of
nanodollars per token, so sums are exact and adding events in any order gives the same total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import NamedTuple, Protocol

from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, TieredPrices

SYNTHETIC_MODEL = "<synthetic>"
NANOS_PER_USD = 1_000_000_000
# Prices are quoted per million tokens; nanodollars per token = price * 1e9 / 1e6.
_NANOS_PER_MTOK_UNIT = Decimal(1000)


class Tokens(Protocol):
    """One request's five token counts: a ``TokenCounts``, or a usage record itself (the
    ingest prices records directly, without building anything per record)."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_creation_5m_tokens(self) -> int: ...
    @property
    def cache_creation_1h_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...


class TokenCounts(NamedTuple):
    """One request's tokens."""

    input_tokens: int
    output_tokens: int
    cache_creation_5m_tokens: int
    cache_creation_1h_tokens: int
    cache_read_tokens: int

    @property
    def context_tokens(self) -> int:
        return context_tokens(self)


def context_tokens(tokens: Tokens) -> int:
    """What Anthropic compares with the long-context threshold: all input of the request."""
    return (
        tokens.input_tokens
        + tokens.cache_creation_5m_tokens
        + tokens.cache_creation_1h_tokens
        + tokens.cache_read_tokens
    )


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens for one model at one time (and one context size)."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal


def cost_nanos(model: str, tokens: Tokens, at: datetime) -> int | None:
    """The request's cost in nanodollars, or None when no price is known for ``model``.
    Runs once per record at ingest: the table is cached per model and day number."""
    if model == SYNTHETIC_MODEL:
        return 0  # Claude Code's own placeholder records: never billed
    table = _nanos_table(model, at.toordinal())
    if table is None:
        return None
    rates = table[0][1]  # the only tier of most models
    if len(table) > 1:
        context = context_tokens(tokens)
        for threshold, tier_rates in table:
            if context > threshold:
                rates = tier_rates
                break
    total = (
        tokens.input_tokens * rates[0]
        + tokens.output_tokens * rates[1]
        + tokens.cache_creation_5m_tokens * rates[2]
        + tokens.cache_creation_1h_tokens * rates[3]
        + tokens.cache_read_tokens * rates[4]
    )
    if isinstance(total, int):
        return total
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


NanoRates = tuple[int | Decimal, int | Decimal, int | Decimal, int | Decimal, int | Decimal]


@lru_cache(maxsize=1024)
def _nanos_table(model: str, ordinal: int) -> list[tuple[int, NanoRates]] | None:
    """Nanodollars per token for each context tier, highest threshold first (the base
    tier's threshold is -1), on the day ``ordinal`` (``date.toordinal``). Integers whenever
    exact, which every Anthropic price is: the cost of a request is then integer arithmetic,
    the hot path of an ingest."""
    day = date.fromordinal(ordinal).isoformat()
    price = _model_price(model, day)
    if price is None:
        return None
    at = datetime.fromisoformat(f"{day}T12:00:00+00:00")
    thresholds = {-1} | {
        tier.start
        for field in (
            price.input_mtok,
            price.output_mtok,
            price.cache_write_mtok,
            price.cache_write_1h_mtok,
            price.cache_read_mtok,
        )
        if isinstance(field, TieredPrices)
        for tier in field.tiers
    }
    table = []
    for threshold in sorted(thresholds, reverse=True):
        rates = rates_for(model, at, context_tokens=threshold + 1)
        if rates is None:
            return None
        values = (
            rates.input,
            rates.output,
            rates.cache_write_5m,
            rates.cache_write_1h,
            rates.cache_read,
        )
        table.append((threshold, tuple(_exact(v * _NANOS_PER_MTOK_UNIT) for v in values)))
    return table  # type: ignore[return-value]


def _exact(value: Decimal) -> int | Decimal:
    return int(value) if value == value.to_integral_value() else value


def rates_for(model: str, at: datetime, *, context_tokens: int = 0) -> Rates | None:
    """Rates in force at ``at``; above a long-context threshold the whole request pays the
    premium tier (Anthropic's rule for 1M-context models)."""
    price = _model_price(model, at.date().isoformat())
    if price is None or price.input_mtok is None or price.output_mtok is None:
        return None
    size = context_tokens
    input_rate = _rate(price.input_mtok, size)
    return Rates(
        input=input_rate,
        output=_rate(price.output_mtok, size),
        # Without a listed price, Anthropic's multipliers of the input price apply.
        cache_write_5m=_rate(price.cache_write_mtok, size, default=input_rate * Decimal("1.25")),
        cache_write_1h=_rate(price.cache_write_1h_mtok, size, default=input_rate * 2),
        cache_read=_rate(price.cache_read_mtok, size, default=input_rate / 10),
    )


@lru_cache(maxsize=1024)
def _model_price(model: str, day: str) -> ModelPrice | None:
    # Cached per model and day: the lookup walks every model's match rules.
    provider = _anthropic()
    info = provider.find_model(model) if provider is not None else None
    if info is None:
        return None
    price: ModelPrice = info.get_prices(datetime.fromisoformat(f"{day}T12:00:00+00:00"))
    return price


def load() -> None:
    """Read the price data now rather than in the first request that needs it."""
    _anthropic()


@lru_cache(maxsize=1)
def _anthropic():  # type: ignore[no-untyped-def]
    for provider in data_snapshot.get_snapshot().providers:
        if provider.id == "anthropic":
            return provider
    return None


def _rate(
    price: Decimal | TieredPrices | None, context_tokens: int, *, default: Decimal | None = None
) -> Decimal:
    """The rate for a request of ``context_tokens``: the highest tier it passes applies to the
    whole request, not only to the tokens above the threshold."""
    if price is None:
        return default if default is not None else Decimal(0)
    if not isinstance(price, TieredPrices):
        return Decimal(price)
    passed = [tier for tier in price.tiers if context_tokens > tier.start]
    if passed:
        return Decimal(max(passed, key=lambda tier: tier.start).price)
    return Decimal(price.base)
