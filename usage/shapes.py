"""The JSON shapes of the seed's API, built from plain values. Pure: standard library only.

REST views and the WebSocket consumer both send what these functions return, so a
dashboard reads the same fields whichever way it subscribes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal

from usage.limits import LimitReading, LimitReport
from usage.measures import Totals
from usage.pricing import NANOS_PER_USD, SYNTHETIC_MODEL, PriceData, RateCard, Rates
from usage.windows import BurnRate, RateLimitState

NO_ACTIVE_WINDOW = "No active window"


def usd(cost_nanos: int) -> float:
    return round(cost_nanos / NANOS_PER_USD, 6)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def dashboard(
    *,
    totals: Totals,
    hours: float,
    burn: BurnRate,
    models: Mapping[str, Totals],
    rate_limit: LimitReport,
    unpriced_models: Sequence[str],
) -> dict[str, object]:
    return {
        "summary": {
            "total_tokens": totals.total_tokens,
            "total_cost_usd": usd(totals.cost_nanos),
            "total_messages": totals.messages,
            "time_range_hours": _number(hours),
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "cache_creation_tokens": totals.cache_creation_tokens,
            "cache_read_tokens": totals.cache_read_tokens,
            "unpriced_models": list(unpriced_models),
            **web_search(totals),
        },
        "burn_rate": {
            "tokens_per_minute": burn.tokens_per_minute,
            "cost_per_minute_usd": burn.cost_per_minute_usd,
            "all_tokens_per_minute": burn.all_tokens_per_minute,
        },
        "model_distribution": model_distribution(models),
        "rate_limit": rate_limit_block(rate_limit),
    }


def model_distribution(models: Mapping[str, Totals]) -> list[dict[str, object]]:
    """Per-model shares of the tokens, largest first; Claude Code's own ``<synthetic>``
    placeholder records are no model and are left out."""
    real = {name: t for name, t in models.items() if name != SYNTHETIC_MODEL and t.messages}
    grand_total = sum(t.total_tokens for t in real.values())
    ordered = sorted(real.items(), key=lambda item: (-item[1].total_tokens, item[0]))
    return [
        {
            "model": name,
            "tokens": t.total_tokens,
            "messages": t.messages,
            "cost_usd": usd(t.cost_nanos),
            "percentage": round(100 * t.total_tokens / grand_total, 1) if grand_total else 0.0,
            "input_tokens": t.input_tokens,
            "output_tokens": t.output_tokens,
            "cache_creation_tokens": t.cache_creation_tokens,
            "cache_read_tokens": t.cache_read_tokens,
            **web_search(t),
        }
        for name, t in ordered
    ]


def web_search(totals: Totals) -> dict[str, object]:
    """The web searches beside the token figures: their count and their fees (which every
    cost figure includes)."""
    return {
        "web_search_requests": totals.web_search_requests,
        "web_search_cost_usd": usd(totals.web_search_cost_nanos),
    }


def rate_limit_block(report: LimitReport) -> dict[str, object]:
    state = report.state
    prediction = state.prediction
    return {
        "current_window_tokens": state.current_window_tokens,
        "current_window_start": iso(state.current_window_start),
        "next_reset_at": iso(state.next_reset_at),
        "time_until_reset_seconds": state.time_until_reset_seconds,
        "time_until_reset_human": _reset_human(state),
        "is_within_active_window": state.is_within_active_window,
        "token_limit": state.token_limit,
        "limit_tokens_used": state.limit_tokens_used,
        "used_percentage": state.used_percentage,
        "plan": state.plan,
        "source": report.source,
        "predictions": {
            "tokens_will_run_out": prediction.tokens_will_run_out,
            "estimated_time_to_limit": prediction.estimated_time_to_limit,
            "estimated_limit_at": iso(prediction.estimated_limit_at),
        },
        "official": official_block(report),
    }


def official_block(report: LimitReport) -> dict[str, object] | None:
    """Claude's own last reading as the statusline reported it, or None."""
    official = report.official
    if official is None:
        return None
    return {
        "five_hour": _reading(official.five_hour),
        "seven_day": _reading(official.seven_day),
        "observed_at": iso(official.observed_at),
        "host": official.host,
    }


def _reading(reading: LimitReading | None) -> dict[str, object] | None:
    if reading is None:
        return None
    return {"used_percentage": reading.used_percentage, "resets_at": iso(reading.resets_at)}


def stats(
    *,
    totals: Totals,
    sessions: int,
    projects: int,
    rate_limit: LimitReport,
    unpriced_models: Sequence[str],
    hosts: Sequence[Mapping[str, object]],
) -> dict[str, object]:
    state = rate_limit.state
    active = state.is_within_active_window
    return {
        "total_tokens": totals.total_tokens,
        "total_input_tokens": totals.input_tokens,
        "total_output_tokens": totals.output_tokens,
        "total_cache_creation_tokens": totals.cache_creation_tokens,
        "total_cache_read_tokens": totals.cache_read_tokens,
        "total_sessions": sessions,
        "total_messages": totals.messages,
        "projects": projects,
        "current_window_tokens": state.current_window_tokens,
        "next_reset_at": iso(state.next_reset_at),
        "time_until_reset_seconds": state.time_until_reset_seconds,
        "time_until_reset_human": f"{_reset_human(state)} remaining"
        if active
        else NO_ACTIVE_WINDOW,
        "is_within_active_window": active,
        "total_cost_usd": usd(totals.cost_nanos),
        "unpriced_models": list(unpriced_models),
        "total_web_search_requests": totals.web_search_requests,
        "total_web_search_cost_usd": usd(totals.web_search_cost_nanos),
        "hosts": list(hosts),
        "rate_limit": rate_limit_block(rate_limit),
    }


def timeseries_point(moment: datetime, totals: Totals) -> dict[str, object]:
    return {
        "timestamp": moment.isoformat(),
        "total_tokens": totals.total_tokens,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cache_creation_tokens": totals.cache_creation_tokens,
        "cache_read_tokens": totals.cache_read_tokens,
        "message_count": totals.messages,
        "cost_usd": usd(totals.cost_nanos),
        **web_search(totals),
    }


PRICE_UNITS = "USD per million tokens; web search: USD per 1,000 searches"


def price_list(
    *,
    data: PriceData,
    day: date,
    cards: Sequence[tuple[str, RateCard | None]],
    reported: Mapping[str, tuple[int, int]] | None = None,
) -> dict[str, object]:
    """The rates in force on ``day`` for each model, each with its source: what a person
    checks a bill against, line by line. ``reported``: per model, the cost Claude Code
    reported over OpenTelemetry and ours for the same requests (nanodollars), if any."""
    reported = reported or {}
    models = [
        {**_price_entry(name, card), "reported_by_claude_code": _reported(reported.get(name))}
        for name, card in cards
    ]
    return {
        "date": day.isoformat(),
        "units": PRICE_UNITS,
        "price_data": {
            "genai_prices": data.genai_prices,
            "overlays": [overlay.label for overlay in data.overlays],
            "fingerprint": data.fingerprint,
        },
        "models": models,
        "count": len(models),
    }


def _reported(figures: tuple[int, int] | None) -> dict[str, float] | None:
    """Claude Code's own cost figure (OpenTelemetry's cost_usd) beside ours, for the requests
    it reported one for; None when it reported none for the model."""
    if figures is None or figures == (0, 0):
        return None
    theirs, ours = figures
    return {
        "reported_cost_usd": usd(theirs),
        "our_cost_usd": usd(ours),
        "difference_usd": usd(theirs - ours),
    }


def _price_entry(model: str, card: RateCard | None) -> dict[str, object]:
    if card is None:
        return {
            "model": model,
            "priced": False,
            "known_as": None,
            "standard": None,
            "long_context": None,
            "fast": None,
            "web_search": None,
        }
    sources = card.sources
    tier = card.long_context
    fast = card.fast_at(0)
    return {
        "model": model,
        "priced": True,
        "known_as": card.known_as,
        "standard": {**_rates(card.standard), "source": sources.get("standard", "")},
        "long_context": None
        if tier is None
        else {
            "above_input_tokens": tier.above,
            **_rates(tier.rates),
            "source": sources.get("long_context", ""),
        },
        "fast": None
        if fast is None
        else {
            "multiplier": _figure(card.fast_multiplier),
            **_rates(fast),
            "long_context": None
            if tier is None or card.fast_multiplier is None
            else _rates(tier.rates.times(card.fast_multiplier)),
            "source": sources.get("fast", ""),
        },
        "web_search": None
        if card.web_search_per_thousand is None
        else {
            "usd_per_1000": _figure(card.web_search_per_thousand),
            "source": sources.get("web_search", ""),
        },
    }


def _rates(rates: Rates) -> dict[str, float]:
    return {
        "input": float(rates.input),
        "output": float(rates.output),
        "cache_write_5m": float(rates.cache_write_5m),
        "cache_write_1h": float(rates.cache_write_1h),
        "cache_read": float(rates.cache_read),
    }


def _figure(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _reset_human(state: RateLimitState) -> str:
    return state.time_until_reset_human if state.is_within_active_window else NO_ACTIVE_WINDOW


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value
