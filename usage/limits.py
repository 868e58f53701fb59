"""Claude's own rate-limit figures, as Claude Code's statusline reports them. Pure.

When a fresh official reading exists it replaces our estimate of the window's reset time
and used percentage: our estimate cannot see use from claude.ai, desktop or mobile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

from usage.windows import LIMIT_REACHED, WINDOW_LENGTH, RateLimitState, format_duration, predict

LIMIT_REACHED_PERCENT = 100.0


@dataclass(frozen=True, slots=True)
class LimitReading:
    used_percentage: float
    resets_at: datetime


@dataclass(frozen=True, slots=True)
class OfficialLimits:
    five_hour: LimitReading | None
    seven_day: LimitReading | None
    observed_at: datetime
    host: str


@dataclass(frozen=True, slots=True)
class LimitReport:
    """What the API says about limits: the state, where it comes from, and the reading."""

    state: RateLimitState
    source: str  # "official" or "estimate"
    official: OfficialLimits | None


def apply_official(
    state: RateLimitState,
    official: OfficialLimits | None,
    *,
    tokens_per_minute: float,
    now: datetime,
) -> LimitReport:
    """Source ``"official"`` when Claude's five-hour reading is still current (its reset
    lies ahead), else our ``"estimate"``."""
    reading = official.five_hour if official is not None else None
    if reading is None or reading.resets_at <= now:
        return LimitReport(state, "estimate", official)
    seconds = max(0, math.floor((reading.resets_at - now).total_seconds()))
    prediction = predict(
        limit_tokens_used=state.limit_tokens_used,
        token_limit=state.token_limit,
        tokens_per_minute=tokens_per_minute,
        now=now,
        next_reset_at=reading.resets_at,
    )
    if reading.used_percentage >= LIMIT_REACHED_PERCENT:
        prediction = replace(
            prediction,
            tokens_will_run_out=True,
            estimated_time_to_limit=LIMIT_REACHED,
            estimated_limit_at=now,
        )
    merged = replace(
        state,
        current_window_start=reading.resets_at - WINDOW_LENGTH,
        next_reset_at=reading.resets_at,
        time_until_reset_seconds=seconds,
        time_until_reset_human=format_duration(seconds),
        is_within_active_window=True,
        used_percentage=round(reading.used_percentage, 1),
        prediction=prediction,
    )
    return LimitReport(merged, "official", official)
