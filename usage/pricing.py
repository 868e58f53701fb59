"""A request x model x day -> cost. Pure: the standard library and the price data only.

The price data is genai-prices' maintained table, with our overlay (``price_overlay.toml``:
what genai-prices lacks or has wrong, each figure with its source and the day it takes
effect) over it, and an operator's overlay (``USAGE_PRICE_OVERLAY``, passed to
``configure``) over both. ``price_data()`` names what is in force; its fingerprint changes
with any of the three, and the projections are rebuilt (re-priced) when it does.

Three rules beyond tokens x rate (issue 13):
- the long-context tier: a request whose input side (input + cache writes + cache reads)
  is above the tier's threshold pays the tier's rates for the whole request;
- fast mode (``"speed": "fast"``): the fast rates of the request's size (a multiplier of
  them, or genai-prices' own fast rates); a fast request on a model with no known fast
  rates is unpriced, never priced as standard;
- web search: a fee per search, beside the tokens (not multiplied by fast mode).

Costs are integers in nanodollars (1e-9 USD): every Anthropic price is a whole number of
nanodollars per token (and per search), so sums are exact and adding events in any order
gives the same total.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, TieredPrices

SYNTHETIC_MODEL = "<synthetic>"
NANOS_PER_USD = 1_000_000_000
# Prices are quoted per million tokens; nanodollars per token = price * 1e9 / 1e6.
_NANOS_PER_MTOK_UNIT = Decimal(1000)
# Web search is quoted per thousand searches; nanodollars per search = price * 1e9 / 1e3.
_NANOS_PER_KILO_UNIT = Decimal(1_000_000)
STANDARD_SPEEDS = ("", "standard")  # "" for records of versions that did not say
FAST_SPEED = "fast"
OVERLAY_PATH = Path(__file__).resolve().parent / "price_overlay.toml"
RATE_NAMES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


class Tokens(Protocol):
    """What a request's price depends on: a ``TokenCounts``, or a usage record itself (the
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
    @property
    def speed(self) -> str: ...
    @property
    def web_search_requests(self) -> int: ...


class TokenCounts(NamedTuple):
    """One request's tokens (and its speed and web searches)."""

    input_tokens: int
    output_tokens: int
    cache_creation_5m_tokens: int
    cache_creation_1h_tokens: int
    cache_read_tokens: int
    speed: str = ""
    web_search_requests: int = 0

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


class Cost(NamedTuple):
    """A request's cost in nanodollars: all of it, and the part that is web search fees."""

    total_nanos: int
    web_search_nanos: int


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens for one model at one time (and one context size)."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal

    def times(self, factor: Decimal) -> Rates:
        return Rates(*(getattr(self, name) * factor for name in RATE_NAMES))


class OverlayError(ValueError):
    """A price overlay that cannot be read; the message names the file and the problem."""


# --- what a model costs on a day ---------------------------------------------------------


@dataclass(frozen=True)
class Tier:
    """Rates for requests whose input side is above ``above`` tokens (-1: every request)."""

    above: int
    rates: Rates


@dataclass(frozen=True)
class RateCard:
    """Everything a model's requests cost on one day, and where each figure comes from.
    ``tiers`` start with the standard rates (``above`` -1). ``fast_multiplier`` applies to
    the rates of a fast request's size; ``fast_rates`` (genai-prices' own) to any size."""

    model: str
    known_as: str | None  # genai-prices' model id
    tiers: tuple[Tier, ...]
    web_search_per_thousand: Decimal | None
    fast_multiplier: Decimal | None
    fast_rates: Rates | None
    sources: Mapping[str, str] = field(default_factory=dict)  # kind of rate -> its source

    @property
    def standard(self) -> Rates:
        return self.tiers[0].rates

    @property
    def long_context(self) -> Tier | None:
        return self.tiers[-1] if len(self.tiers) > 1 else None

    def rates_at(self, context: int) -> Rates:
        """The rates of a request with ``context`` input-side tokens: the highest tier it
        passes applies to the whole request, not only to the tokens above the threshold."""
        passed = [tier for tier in self.tiers if context > tier.above]
        return passed[-1].rates if passed else self.standard

    def fast_at(self, context: int) -> Rates | None:
        if self.fast_multiplier is not None:
            return self.rates_at(context).times(self.fast_multiplier)
        return self.fast_rates


def rate_card(model: str, at: datetime | date) -> RateCard | None:
    """The rates in force for ``model`` on ``at``'s day (UTC), or None when no price is
    known for it."""
    day = at.date() if isinstance(at, datetime) else at
    return _card(model, day.toordinal())


def rates_for(model: str, at: datetime, *, context_tokens: int = 0) -> Rates | None:
    """Standard-speed rates in force at ``at`` for a request of ``context_tokens``."""
    card = rate_card(model, at)
    return None if card is None else card.rates_at(context_tokens)


def price(model: str, request: Tokens, at: datetime) -> Cost | None:
    """The request's cost, or None when it cannot be priced: no price known for ``model``,
    or none for its speed or its web searches. Runs once per record at ingest, and again for
    each event a rebuild or catch-up reads from the log: the nanodollar table is cached per
    model and day number."""
    if model == SYNTHETIC_MODEL:
        return Cost(0, 0)  # Claude Code's own placeholder records: never billed
    table = _nanos_table(model, at.toordinal())
    if table is None:
        return None
    speed = request.speed
    if speed in STANDARD_SPEEDS:
        tiers = table.standard
    elif speed == FAST_SPEED and table.fast is not None:
        tiers = table.fast
    else:
        return None  # a speed we have no rates for: flagged, not guessed
    rates = tiers[0][1]  # the only tier of most models
    if len(tiers) > 1:
        context = context_tokens(request)
        for threshold, tier_rates in tiers:
            if context > threshold:
                rates = tier_rates
                break
    tokens_cost = (
        request.input_tokens * rates[0]
        + request.output_tokens * rates[1]
        + request.cache_creation_5m_tokens * rates[2]
        + request.cache_creation_1h_tokens * rates[3]
        + request.cache_read_tokens * rates[4]
    )
    searches = request.web_search_requests
    if not searches:
        return Cost(_whole(tokens_cost), 0)
    if table.web_search is None:
        return None
    web = _whole(searches * table.web_search)
    return Cost(_whole(tokens_cost) + web, web)


def cost_nanos(model: str, tokens: Tokens, at: datetime) -> int | None:
    """The request's whole cost in nanodollars (``price``'s total), or None."""
    found = price(model, tokens, at)
    return None if found is None else found.total_nanos


def _whole(value: int | Decimal) -> int:
    if isinstance(value, int):
        return value
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


NanoRates = tuple[int | Decimal, int | Decimal, int | Decimal, int | Decimal, int | Decimal]
NanoTiers = tuple[tuple[int, NanoRates], ...]  # highest threshold first


class _NanosTable(NamedTuple):
    standard: NanoTiers
    fast: NanoTiers | None
    web_search: int | Decimal | None  # per search


@lru_cache(maxsize=4096)
def _nanos_table(model: str, ordinal: int) -> _NanosTable | None:
    """Nanodollars per token for each tier, per speed, on the day ``ordinal``. Integers
    whenever exact, which every Anthropic price is: the cost of a request is then integer
    arithmetic, the hot path of an ingest."""
    card = _card(model, ordinal)
    if card is None:
        return None
    standard = tuple((tier.above, _nanos(tier.rates)) for tier in reversed(card.tiers))
    fast: NanoTiers | None = None
    if card.fast_multiplier is not None:
        fast = tuple(
            (tier.above, _nanos(tier.rates.times(card.fast_multiplier)))
            for tier in reversed(card.tiers)
        )
    elif card.fast_rates is not None:
        fast = ((-1, _nanos(card.fast_rates)),)
    web = card.web_search_per_thousand
    return _NanosTable(standard, fast, None if web is None else _exact(web * _NANOS_PER_KILO_UNIT))


def _nanos(rates: Rates) -> NanoRates:
    values = [_exact(getattr(rates, name) * _NANOS_PER_MTOK_UNIT) for name in RATE_NAMES]
    return (values[0], values[1], values[2], values[3], values[4])


def _exact(value: Decimal) -> int | Decimal:
    return int(value) if value == value.to_integral_value() else value


# --- the price data: genai-prices, our overlay, an operator's ------------------------------


@dataclass(frozen=True)
class Entry:
    """One ``[[price]]`` of an overlay."""

    models: tuple[str, ...]
    start: date
    until: date | None
    source: str
    standard: Rates | None = None
    long_context: Tier | None = None
    fast_multiplier: Decimal | None = None
    web_search_per_thousand: Decimal | None = None

    def applies(self, names: Iterable[str], day: date) -> bool:
        if day < self.start or (self.until is not None and day >= self.until):
            return False
        return any(_matches(pattern, name) for pattern in self.models for name in names)


@dataclass(frozen=True)
class Overlay:
    label: str  # "overlay 2026-12-07.1", "operator overlay 2027-01-02"
    version: str
    path: str
    entries: tuple[Entry, ...]
    digest: str


@dataclass(frozen=True)
class PriceData:
    """What prices are in force: genai-prices' version and the overlays, and a fingerprint of
    all of it (the projections carry it: built with other price data, they are rebuilt)."""

    genai_prices: str
    overlays: tuple[Overlay, ...]
    fingerprint: str

    def describe(self) -> str:
        parts = [f"genai-prices {self.genai_prices}"]
        for overlay in self.overlays:
            where = "" if overlay.path == str(OVERLAY_PATH) else f" ({overlay.path})"
            parts.append(f"{overlay.label}{where}")
        return f"{', '.join(parts)} (fingerprint {self.fingerprint})"


_operator_overlay = ""


def configure(operator_overlay: str) -> None:
    """Set the operator's overlay file ("" for none); the price data is read again."""
    global _operator_overlay
    _operator_overlay = operator_overlay
    _forget()


def _forget() -> None:
    price_data.cache_clear()
    _card.cache_clear()
    _nanos_table.cache_clear()


def load() -> PriceData:
    """Read the price data now rather than in the first request that needs it. Raises
    ``OverlayError`` for an overlay that cannot be read."""
    return price_data()


@lru_cache(maxsize=1)
def price_data() -> PriceData:
    overlays = [read_overlay(OVERLAY_PATH, label="overlay")]
    if _operator_overlay:
        overlays.append(read_overlay(Path(_operator_overlay), label="operator overlay"))
    version = genai_prices.__version__
    digest = hashlib.blake2b(version.encode(), digest_size=6)
    for overlay in overlays:
        digest.update(b"\0" + overlay.digest.encode())
    return PriceData(version, tuple(overlays), digest.hexdigest())


def read_overlay(path: Path, *, label: str) -> Overlay:
    try:
        text = path.read_bytes()
    except OSError as error:
        raise OverlayError(f"{path}: cannot read it ({error.strerror or error})") from None
    try:
        data = tomllib.loads(text.decode(), parse_float=Decimal)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise OverlayError(f"{path}: not TOML: {error}") from None
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise OverlayError(f'{path}: needs a version (a string, e.g. "2027-01-02.1")')
    prices = data.get("price", [])
    if not isinstance(prices, list):
        raise OverlayError(f"{path}: [[price]] must be an array of tables")
    entries = tuple(_entry(path, number, raw) for number, raw in enumerate(prices, start=1))
    return Overlay(
        label=f"{label} {version}",
        version=version,
        path=str(path),
        entries=entries,
        digest=hashlib.blake2b(text, digest_size=8).hexdigest(),
    )


_ENTRY_KEYS = {"models", "from", "until", "source", *("standard", "long_context")} | {
    "fast_multiplier",
    "web_search_per_thousand",
}


def _entry(path: Path, number: int, raw: Any) -> Entry:
    where = f"{path}: price #{number}"
    if not isinstance(raw, dict):
        raise OverlayError(f"{where}: must be a table")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise OverlayError(f"{where}: unknown keys {', '.join(unknown)}")
    models = raw.get("models")
    if not (
        isinstance(models, list)
        and models
        and all(isinstance(m, str) and m.strip("*") for m in models)
    ):
        raise OverlayError(f"{where}: models must be a list of model names")
    start, until = raw.get("from"), raw.get("until")
    if type(start) is not date or (until is not None and type(until) is not date):
        raise OverlayError(f"{where}: from (and until) must be dates, e.g. 2026-02-05")
    if until is not None and until <= start:
        raise OverlayError(f"{where}: until must be after from")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise OverlayError(f"{where}: every entry needs a source")
    entry = Entry(
        models=tuple(models),
        start=start,
        until=until,
        source=" ".join(source.split()),
        standard=_rates(where, raw.get("standard"), "standard"),
        long_context=_long_context(where, raw.get("long_context")),
        fast_multiplier=_amount(where, raw.get("fast_multiplier"), "fast_multiplier"),
        web_search_per_thousand=_amount(
            where, raw.get("web_search_per_thousand"), "web_search_per_thousand"
        ),
    )
    if not (entry.standard or entry.long_context or entry.fast_multiplier is not None) and (
        entry.web_search_per_thousand is None
    ):
        raise OverlayError(f"{where}: gives no price")
    return entry


def _amount(where: str, value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise OverlayError(f"{where}: {name} must be a number")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise OverlayError(f"{where}: {name} must be a number, not {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise OverlayError(f"{where}: {name} must be a number >= 0")
    return amount


def _rates(where: str, raw: Any, name: str, *, extra: tuple[str, ...] = ()) -> Rates | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise OverlayError(f"{where}: {name} must be a table")
    unknown = sorted(set(raw) - set(RATE_NAMES) - set(extra))
    if unknown:
        raise OverlayError(f"{where}: {name} has unknown keys {', '.join(unknown)}")
    for required in ("input", "output"):
        if required not in raw:
            raise OverlayError(f"{where}: {name} needs {required}")
    values = {key: _amount(where, raw.get(key), f"{name}.{key}") for key in RATE_NAMES}
    input_rate = values["input"]
    assert input_rate is not None  # required, above
    # Without a listed price, Anthropic's multipliers of the input price apply.
    defaults = {
        "cache_write_5m": input_rate * Decimal("1.25"),
        "cache_write_1h": input_rate * 2,
        "cache_read": input_rate / 10,
    }
    chosen: dict[str, Decimal] = {}
    for key in RATE_NAMES:
        value = values[key]
        chosen[key] = value if value is not None else defaults[key]
    return Rates(**chosen)


def _long_context(where: str, raw: Any) -> Tier | None:
    rates = _rates(where, raw, "long_context", extra=("above",))
    if rates is None:
        return None
    above = raw.get("above")
    if type(above) is not int or above < 0:
        raise OverlayError(f"{where}: long_context needs above, a whole number of tokens")
    return Tier(above, rates)


def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


@lru_cache(maxsize=4096)
def _card(model: str, ordinal: int) -> RateCard | None:
    day = date.fromordinal(ordinal)
    data = price_data()
    info = _genai_model(model)
    names = (model, info.id) if info is not None else (model,)
    card = _genai_card(model, info, day) if info is not None else None
    for overlay in data.overlays:
        card = _overlaid(card, model, names, day, overlay)
    return card


def _genai_card(model: str, info: Any, day: date) -> RateCard | None:
    price: ModelPrice = info.get_prices(datetime.fromisoformat(f"{day.isoformat()}T12:00:00+00:00"))
    if price.input_mtok is None or price.output_mtok is None:
        return None
    source = f"genai-prices {genai_prices.__version__} ({info.id})"
    thresholds = sorted(
        {
            tier.start
            for name in _GENAI_FIELDS
            if isinstance(value := getattr(price, name, None), TieredPrices)
            for tier in value.tiers
        }
    )
    tiers = tuple(Tier(above, _genai_rates(price, above + 1)) for above in [-1, *thresholds])
    web = getattr(price, "web_searches_kcount", None)
    fast = _genai_fast(info, day)
    sources = {"standard": source}
    if len(tiers) > 1:
        sources["long_context"] = source
    if web is not None:
        sources["web_search"] = source
    if fast is not None:
        sources["fast"] = source
    return RateCard(
        model=model,
        known_as=info.id,
        tiers=tiers,
        web_search_per_thousand=None if web is None else Decimal(web),
        fast_multiplier=None,
        fast_rates=fast,
        sources=sources,
    )


_GENAI_FIELDS = (
    "input_mtok",
    "output_mtok",
    "cache_write_mtok",
    "cache_write_1h_mtok",
    "cache_read_mtok",
)


def _genai_rates(price: ModelPrice, context: int) -> Rates:
    input_rate = _genai_rate(price.input_mtok, context)
    return Rates(
        input=input_rate,
        output=_genai_rate(price.output_mtok, context),
        # Without a listed price, Anthropic's multipliers of the input price apply.
        cache_write_5m=_genai_rate(
            price.cache_write_mtok, context, default=input_rate * Decimal("1.25")
        ),
        cache_write_1h=_genai_rate(
            getattr(price, "cache_write_1h_mtok", None), context, default=input_rate * 2
        ),
        cache_read=_genai_rate(price.cache_read_mtok, context, default=input_rate / 10),
    )


def _genai_rate(
    price: Decimal | TieredPrices | None, context: int, *, default: Decimal | None = None
) -> Decimal:
    if price is None:
        return default if default is not None else Decimal(0)
    if not isinstance(price, TieredPrices):
        return Decimal(price)
    passed = [tier for tier in price.tiers if context > tier.start]
    if passed:
        return Decimal(max(passed, key=lambda tier: tier.start).price)
    return Decimal(price.base)


def _genai_fast(info: Any, day: date) -> Rates | None:
    """genai-prices' own fast-mode rates (a price variant ``{"speed": "fast"}``), if any."""
    for variant in getattr(info, "price_variants", None) or ():
        if variant.when != {"speed": FAST_SPEED}:
            continue
        constraint = variant.constraint
        start = getattr(constraint, "start_date", None)
        if start is not None and day < start:
            continue
        prices = variant.prices
        if prices.input_mtok is None or prices.output_mtok is None:
            continue
        return _genai_rates(prices, 0)
    return None


def _overlaid(
    card: RateCard | None, model: str, names: tuple[str, ...], day: date, overlay: Overlay
) -> RateCard | None:
    """``card`` with the overlay's entries in force on ``day`` over it: for each kind of
    rate, the entry with the latest start wins."""
    chosen = _latest_per_kind(overlay.entries, names, day)
    if not chosen:
        return card
    standard = chosen.get("standard")
    if card is None:
        if standard is None or standard.standard is None:
            return None  # an unknown model stays unknown without standard rates
        card = RateCard(model, None, (Tier(-1, standard.standard),), None, None, None, {})
    tiers, sources = list(card.tiers), dict(card.sources)
    fast_multiplier, fast_rates, web = card.fast_multiplier, card.fast_rates, None
    web = card.web_search_per_thousand
    for kind, entry in chosen.items():
        sources[kind] = f"{overlay.label}: {entry.source}"
        if kind == "standard" and entry.standard is not None:
            tiers[0] = Tier(-1, entry.standard)
        elif kind == "long_context" and entry.long_context is not None:
            tiers = [tiers[0], entry.long_context]
        elif kind == "fast":
            fast_multiplier, fast_rates = entry.fast_multiplier, None
        elif kind == "web_search":
            web = entry.web_search_per_thousand
    return RateCard(model, card.known_as, tuple(tiers), web, fast_multiplier, fast_rates, sources)


def _latest_per_kind(
    entries: Iterable[Entry], names: tuple[str, ...], day: date
) -> dict[str, Entry]:
    chosen: dict[str, Entry] = {}
    for entry in entries:
        if not entry.applies(names, day):
            continue
        for kind in _kinds(entry):
            held = chosen.get(kind)
            if held is None or entry.start >= held.start:
                chosen[kind] = entry
    return chosen


def _kinds(entry: Entry) -> Iterator[str]:
    if entry.standard is not None:
        yield "standard"
    if entry.long_context is not None:
        yield "long_context"
    if entry.fast_multiplier is not None:
        yield "fast"
    if entry.web_search_per_thousand is not None:
        yield "web_search"


@lru_cache(maxsize=4096)
def _genai_model(model: str) -> Any:
    provider = _anthropic()
    return provider.find_model(model) if provider is not None else None


@lru_cache(maxsize=1)
def _anthropic():  # type: ignore[no-untyped-def]
    for provider in data_snapshot.get_snapshot().providers:
        if provider.id == "anthropic":
            return provider
    return None


def genai_card(model: str, at: date) -> RateCard | None:
    """genai-prices' figures alone, without any overlay (for the overlay's own tests)."""
    info = _genai_model(model)
    return None if info is None else _genai_card(model, info, at)
