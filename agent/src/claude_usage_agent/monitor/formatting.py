"""Numbers, money, times and colour thresholds for the monitor. Pure: standard library only,
every function that depends on the moment takes `now` (and a time zone, for local times)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta, tzinfo
from typing import Any

# The seed's dashboard components: a usage bar turns yellow above half, red above 80 %.
WARN_FRACTION = 0.5
DANGER_FRACTION = 0.8
# The time to reset turns red under half an hour.
RESET_DANGER_SECONDS = 30 * 60

GREEN = "green"
YELLOW = "yellow"
RED = "red"


def usage_colour(fraction: float) -> str:
    """Green up to 50 %, yellow above 50 %, red above 80 % (of a limit or budget)."""
    if fraction > DANGER_FRACTION:
        return RED
    if fraction > WARN_FRACTION:
        return YELLOW
    return GREEN


def reset_colour(seconds_left: float) -> str:
    return RED if seconds_left < RESET_DANGER_SECONDS else GREEN


def fraction_of(used: float, limit: float | None) -> float | None:
    """`used / limit`, or None when there is no limit to measure against."""
    if limit is None or limit <= 0:
        return None
    return max(0.0, used / limit)


def count(value: float) -> str:
    """`1234567` → `1,234,567` (whole numbers; a fraction is rounded)."""
    return f"{round(value):,}"


def short_count(value: float) -> str:
    """`1234567` → `1.2M`, `45300` → `45.3k`, `999` → `999`."""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.1f}{suffix}"
    return f"{value:.0f}"


def money(usd: float) -> str:
    """To the cent: `$1,234.57`."""
    return f"${usd:,.2f}"


def money_rate(usd_per_minute: float) -> str:
    """`$0.03/min ($2.09/h)`: cents per minute alone would round most rates to nothing."""
    return f"{money(usd_per_minute)}/min ({money(usd_per_minute * 60)}/h)"


def tokens_rate(tokens_per_minute: float) -> str:
    return f"{tokens_per_minute:,.1f} tokens/min"


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def countdown(seconds: float) -> str:
    """`4h 06m 12s`; never below zero."""
    whole = max(0, math.floor(seconds)) if math.isfinite(seconds) else 0
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time from the dashboard (always with a zone), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def local_time(moment: datetime, now: datetime, zone: tzinfo | None) -> str:
    """`23:26` today, `Mon 23:26` within a week, else `2025-10-05 23:26` (in `zone`; None is
    the machine's local zone)."""
    here = moment.astimezone(zone)
    today = now.astimezone(zone).date()
    if here.date() == today:
        return here.strftime("%H:%M")
    if abs(here.date() - today) < timedelta(days=7):
        return here.strftime("%a %H:%M")
    return here.strftime("%Y-%m-%d %H:%M")


def clock_time(moment: datetime, zone: tzinfo | None) -> str:
    """`20:26:05` in `zone` (None: the machine's)."""
    return moment.astimezone(zone).strftime("%H:%M:%S")


def zone_name(now: datetime, zone: tzinfo | None) -> str:
    return now.astimezone(zone).strftime("%Z") or "local"


def seconds_to_reset(rate_limit: Mapping[str, Any], received_at: datetime, now: datetime) -> float:
    """The server's countdown, run on by the time since the snapshot arrived: the reset time
    ticks every second between snapshots, and a clock skew between the machines never shows."""
    reported = number(rate_limit.get("time_until_reset_seconds"))
    return max(0.0, reported - (now - received_at).total_seconds())


def number(value: object) -> float:
    """A figure from the dashboard; anything that is not a number counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def section(dashboard: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = dashboard.get(name)
    return value if isinstance(value, Mapping) else {}


def summary_text(
    dashboard: Mapping[str, Any], now: datetime, zone: tzinfo | None, budget: float | None = None
) -> str:
    """The one-shot plain summary printed when stdout is not a terminal."""
    summary = section(dashboard, "summary")
    burn = section(dashboard, "burn_rate")
    rate_limit = section(dashboard, "rate_limit")
    hours = number(summary.get("time_range_hours"))
    cost = number(summary.get("total_cost_usd"))
    cost_part = money(cost)
    budget_fraction = fraction_of(cost, budget)
    if budget is not None and budget_fraction is not None:
        cost_part += f" of {money(budget)} ({percent(budget_fraction)})"
    lines = [
        f"Claude usage, last {hours:g} h, at {local_time(now, now, zone)} {zone_name(now, zone)}",
        f"Tokens:     {count(number(summary.get('total_tokens')))}"
        f" ({short_count(number(summary.get('total_tokens')))})"
        f" in {count(number(summary.get('total_messages')))} messages",
        f"Cost:       {cost_part}",
        f"Window:     {_window_line(rate_limit)}",
        f"Reset:      {_reset_line(rate_limit, now, zone)}",
        f"Burn rate:  {tokens_rate(number(burn.get('tokens_per_minute')))},"
        f" {money_rate(number(burn.get('cost_per_minute_usd')))}",
    ]
    official = official_reading(rate_limit, now, zone)
    if official:
        lines.append(f"Claude says: {official}")
    warning = prediction_warning(rate_limit, now, zone)
    if warning:
        lines.append(f"Warning:    {warning}")
    for model in dashboard.get("model_distribution") or ():
        tokens, cost = number(model.get("tokens")), number(model.get("cost_usd"))
        lines.append(
            f"Model:      {model.get('model')} {number(model.get('percentage')):.1f}%"
            f" ({count(tokens)} tokens, {money(cost)})"
        )
    return "\n".join(lines) + "\n"


def _window_line(rate_limit: Mapping[str, Any]) -> str:
    used = number(rate_limit.get("limit_tokens_used"))
    limit = number(rate_limit.get("token_limit"))
    window_total = number(rate_limit.get("current_window_tokens"))
    return (
        f"{count(used)} of {count(limit)} limit tokens"
        f" ({number(rate_limit.get('used_percentage')):.1f}%, plan {rate_limit.get('plan')},"
        f" {limit_source(rate_limit)}); {count(window_total)} tokens in all"
    )


def _reset_line(rate_limit: Mapping[str, Any], now: datetime, zone: tzinfo | None) -> str:
    reset_at = parse_time(rate_limit.get("next_reset_at"))
    if not rate_limit.get("is_within_active_window") or reset_at is None:
        return "no active window"
    left = number(rate_limit.get("time_until_reset_seconds"))
    return f"in {countdown(left)}, at {local_time(reset_at, now, zone)} {zone_name(now, zone)}"


def limit_source(rate_limit: Mapping[str, Any]) -> str:
    """`official` (Claude's own reading, via the statusline) or `estimate` (the server's)."""
    return "official" if rate_limit.get("source") == "official" else "estimate"


def official_reading(
    rate_limit: Mapping[str, Any], now: datetime, zone: tzinfo | None
) -> str | None:
    """Claude's own last reading (the statusline forwards it): `5h 22% · 7d 3% · read 14:02
    on laptop`, or None when there is none."""
    official = section(rate_limit, "official")
    if not official:
        return None
    parts = []
    for key, label in (("five_hour", "5h"), ("seven_day", "7d")):
        reading = section(official, key)
        if reading:
            parts.append(f"{label} {number(reading.get('used_percentage')):.0f}%")
    observed_at = parse_time(official.get("observed_at"))
    if observed_at is not None:
        parts.append(f"read {local_time(observed_at, now, zone)} on {official.get('host')}")
    return " · ".join(parts)


def prediction_warning(
    rate_limit: Mapping[str, Any], now: datetime, zone: tzinfo | None
) -> str | None:
    """`Tokens will run out in 1h 5m (at 21:31)`, or None when the limit is not in sight."""
    predictions = section(rate_limit, "predictions")
    if not predictions.get("tokens_will_run_out"):
        return None
    estimate = str(predictions.get("estimated_time_to_limit") or "")
    limit_at = parse_time(predictions.get("estimated_limit_at"))
    if estimate.lower() == "limit reached":
        return "Token limit reached"
    when = f" (at {local_time(limit_at, now, zone)})" if limit_at is not None else ""
    return f"Tokens will run out in {estimate}{when}"
