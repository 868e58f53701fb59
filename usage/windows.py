"""Five-hour usage windows, burn rate and limit prediction for Claude Code usage.

Claude plans meter usage in rolling five-hour windows. This module reproduces the rules
that ccusage and claude-monitor use so that the numbers this backend reports agree with
the tools people already know:

* a window opens at its first message (floored to the UTC hour with ``WindowAlign.HOUR``,
  taken as-is with ``WindowAlign.EXACT``) and lasts exactly five hours;
* a message *more* than five hours after the window start opens a new window; a message at
  exactly ``start + 5h`` still belongs to the old one;
* a message more than five hours after the previous message also opens a new window.

Everything here is pure: no clock reads (callers pass ``now``), no I/O, standard library
only, so the rules can be tested exhaustively and reused by the API and management commands.
All datetimes must be timezone-aware; they are normalised to UTC so that arithmetic never
depends on a local DST transition.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WINDOW_LENGTH = timedelta(hours=5)

# Input + output token budgets per five-hour window, as used by claude-monitor.
# The "custom" plan is not listed: its limit is derived from the user's own history.
PLAN_LIMITS: dict[str, int] = {"pro": 65_459, "max5": 88_000, "max20": 220_000}
CUSTOM_PLAN = "custom"

LIMIT_REACHED = "Limit reached"
NOT_REACHING_LIMIT = "Not reaching limit"


class WindowAlign(enum.StrEnum):
    """How a window's start is derived from its first message."""

    HOUR = "hour"  # floor to the UTC hour, like ccusage and claude-monitor
    EXACT = "exact"  # the first message's own timestamp


def _as_utc(moment: datetime) -> datetime:
    """Return ``moment`` in UTC, refusing naive datetimes.

    A naive datetime has no defined instant, so silently treating it as UTC (or local time)
    would shift windows by hours; failing loudly is the only safe option.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got naive {moment!r}")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """One five-hour usage window and the span of messages that fell into it."""

    start: datetime
    end: datetime
    first_message_at: datetime
    last_message_at: datetime

    def is_active(self, now: datetime) -> bool:
        """Whether the window still counts at ``now``.

        Both conditions come from ccusage: the window must not have ended, and the user
        must have sent something within the last five hours (an idle session lapses).
        """
        now = _as_utc(now)
        return now < self.end and now - self.last_message_at < WINDOW_LENGTH


def window_start_for(first_message_at: datetime, align: WindowAlign) -> datetime:
    """The start of a window whose first message is ``first_message_at``."""
    first_message_at = _as_utc(first_message_at)
    if align is WindowAlign.HOUR:
        return first_message_at.replace(minute=0, second=0, microsecond=0)
    return first_message_at


def _opens_new_window(window: Window, message_at: datetime) -> bool:
    """Whether ``message_at`` falls outside ``window`` and must start a new one.

    The second condition is implied by the first (the previous message is never before the
    window start) but is kept so the rule reads exactly as ccusage states it.
    """
    past_window_end = message_at - window.start > WINDOW_LENGTH
    after_long_gap = message_at - window.last_message_at > WINDOW_LENGTH
    return past_window_end or after_long_gap


def _open_window(message_at: datetime, align: WindowAlign) -> Window:
    """A fresh window containing only ``message_at``."""
    window_start = window_start_for(message_at, align)
    return Window(
        start=window_start,
        end=window_start + WINDOW_LENGTH,
        first_message_at=message_at,
        last_message_at=message_at,
    )


def split_into_windows(timestamps: Iterable[datetime], align: WindowAlign) -> list[Window]:
    """Group message timestamps (in any order) into consecutive five-hour windows.

    This is the reference implementation: the database-backed code must agree with it.
    """
    windows: list[Window] = []
    for message_at in sorted(_as_utc(timestamp) for timestamp in timestamps):
        if windows and not _opens_new_window(windows[-1], message_at):
            # frozen dataclass: extend the current window by replacing it
            current = windows[-1]
            windows[-1] = Window(
                start=current.start,
                end=current.end,
                first_message_at=current.first_message_at,
                last_message_at=message_at,
            )
        else:
            windows.append(_open_window(message_at, align))
    return windows


@dataclass(frozen=True)
class BurnRate:
    """Token and cost consumption per minute, averaged over the last hour."""

    tokens_per_minute: float  # input + output tokens: what the plan limits count
    all_tokens_per_minute: float  # including cache creation and cache read tokens
    cost_per_minute_usd: float


def burn_rate(
    *, input_output_tokens_last_hour: int, all_tokens_last_hour: int, cost_last_hour_usd: float
) -> BurnRate:
    """Per-minute rates from the totals of the last 60 minutes.

    Rounding matches what the dashboards display, so API consumers get stable numbers.
    """
    minutes_per_hour = 60
    return BurnRate(
        tokens_per_minute=round(input_output_tokens_last_hour / minutes_per_hour, 1),
        all_tokens_per_minute=round(all_tokens_last_hour / minutes_per_hour, 1),
        cost_per_minute_usd=round(cost_last_hour_usd / minutes_per_hour, 6),
    )


def format_duration(seconds: float) -> str:
    """Render a duration as ``"{hours}h {minutes}m"``, flooring to whole minutes.

    Zero, negative and NaN durations all render as ``"0h 0m"``: a countdown never goes
    below zero.
    """
    if not seconds > 0:  # also catches NaN, for which every comparison is False
        return "0h 0m"
    hours, minutes = divmod(int(seconds // 60), 60)
    return f"{hours}h {minutes}m"


@dataclass(frozen=True)
class Prediction:
    """Whether the plan limit will be hit before the active window resets, and when."""

    tokens_will_run_out: bool
    estimated_time_to_limit: str  # "1h 23m", "Limit reached" or "Not reaching limit"
    estimated_limit_at: datetime | None


_NOT_REACHING = Prediction(
    tokens_will_run_out=False,
    estimated_time_to_limit=NOT_REACHING_LIMIT,
    estimated_limit_at=None,
)


def predict(
    *,
    limit_tokens_used: int,
    token_limit: int,
    tokens_per_minute: float,
    now: datetime,
    next_reset_at: datetime | None,
) -> Prediction:
    """Extrapolate the current burn rate to see if the limit is hit before the reset."""
    now = _as_utc(now)
    if limit_tokens_used >= token_limit:
        return Prediction(
            tokens_will_run_out=True,
            estimated_time_to_limit=LIMIT_REACHED,
            estimated_limit_at=now,
        )
    if next_reset_at is None or tokens_per_minute <= 0:
        return _NOT_REACHING
    minutes_to_limit = (token_limit - limit_tokens_used) / tokens_per_minute
    minutes_to_reset = (next_reset_at - now).total_seconds() / 60
    # Compare as floats first: a tiny burn rate would overflow timedelta otherwise.
    if minutes_to_limit >= minutes_to_reset:
        return _NOT_REACHING
    limit_at = now + timedelta(minutes=minutes_to_limit)
    if limit_at >= next_reset_at:  # microsecond rounding can land exactly on the reset
        return _NOT_REACHING
    return Prediction(
        tokens_will_run_out=True,
        estimated_time_to_limit=format_duration((limit_at - now).total_seconds()),
        estimated_limit_at=limit_at,
    )


def percentile_90(values: Sequence[int]) -> int | None:
    """Nearest-rank 90th percentile: the ``ceil(0.9 * n)``-th smallest value.

    The rank is computed in integers because ``0.9 * n`` in floating point can land a hair
    above a whole number (and ``ceil`` would then skip a rank).
    """
    if not values:
        return None
    rank = -(-9 * len(values) // 10)  # ceil(9n / 10) without floats
    return sorted(values)[rank - 1]


@dataclass(frozen=True)
class RateLimitState:
    """Everything the rate-limit endpoint reports about the active window."""

    current_window_tokens: int  # all four token types in the active window
    current_window_start: datetime | None
    next_reset_at: datetime | None
    time_until_reset_seconds: int
    time_until_reset_human: str
    is_within_active_window: bool
    token_limit: int
    limit_tokens_used: int  # input + output tokens: what the plan limit counts
    used_percentage: float
    plan: str
    prediction: Prediction


def rate_limit_state(
    *,
    window: Window | None,
    window_tokens: int,
    window_input_output_tokens: int,
    plan: str,
    token_limit: int,
    tokens_per_minute: float,
    now: datetime,
) -> RateLimitState:
    """Assemble the rate-limit snapshot at ``now``.

    A window that is no longer active (or none at all) is reported as "no active window",
    so the response never shows a reset time in the past.
    """
    if token_limit <= 0:
        raise ValueError(f"token_limit must be positive, got {token_limit}")
    now = _as_utc(now)
    if window is None or not window.is_active(now):
        return _idle_state(
            plan=plan, token_limit=token_limit, tokens_per_minute=tokens_per_minute, now=now
        )
    seconds_until_reset = max(0, math.floor((window.end - now).total_seconds()))
    return RateLimitState(
        current_window_tokens=window_tokens,
        current_window_start=window.start,
        next_reset_at=window.end,
        time_until_reset_seconds=seconds_until_reset,
        time_until_reset_human=format_duration(seconds_until_reset),
        is_within_active_window=True,
        token_limit=token_limit,
        limit_tokens_used=window_input_output_tokens,
        used_percentage=round(100 * window_input_output_tokens / token_limit, 1),
        plan=plan,
        prediction=predict(
            limit_tokens_used=window_input_output_tokens,
            token_limit=token_limit,
            tokens_per_minute=tokens_per_minute,
            now=now,
            next_reset_at=window.end,
        ),
    )


def _idle_state(
    *, plan: str, token_limit: int, tokens_per_minute: float, now: datetime
) -> RateLimitState:
    """The snapshot when nothing is being metered: zero usage and no reset pending."""
    return RateLimitState(
        current_window_tokens=0,
        current_window_start=None,
        next_reset_at=None,
        time_until_reset_seconds=0,
        time_until_reset_human=format_duration(0),
        is_within_active_window=False,
        token_limit=token_limit,
        limit_tokens_used=0,
        used_percentage=0.0,
        plan=plan,
        prediction=predict(
            limit_tokens_used=0,
            token_limit=token_limit,
            tokens_per_minute=tokens_per_minute,
            now=now,
            next_reset_at=None,
        ),
    )


def resolve_token_limit(
    *, plan: str, token_limit: int | None, completed_window_totals: Sequence[int]
) -> int:
    """The per-window input + output token limit to measure usage against.

    The plan is validated even when an explicit limit is given, because the plan name is
    echoed back in the response and a typo should be a 400, not silently accepted.
    """
    if plan != CUSTOM_PLAN and plan not in PLAN_LIMITS:
        known = ", ".join([*PLAN_LIMITS, CUSTOM_PLAN])
        raise ValueError(f"unknown plan {plan!r}; expected one of: {known}")
    if token_limit is not None:
        if token_limit <= 0:
            raise ValueError(f"token_limit must be positive, got {token_limit}")
        return token_limit
    if plan in PLAN_LIMITS:
        return PLAN_LIMITS[plan]
    # "custom": learn the limit from the user's own history, like claude-monitor's P90 mode.
    typical_heavy_window = percentile_90(completed_window_totals)
    if typical_heavy_window is None or typical_heavy_window <= 0:
        return PLAN_LIMITS["pro"]  # no usable history yet: assume the smallest plan
    return typical_heavy_window
