"""What one WebSocket connection may ask of the server, as pure code with an explicit clock.

``configure`` and ``refresh`` each force a fresh dashboard computation (database and Redis
reads), so each connection has a token bucket for them: a burst of 20, refilled at 60 a
minute. An action over it is answered with a ``RATE_LIMITED`` error frame and dropped; the
connection stays open, so a dashboard that clicked too fast only waits. A client that keeps
sending through another burst's worth of refusals (20 in a row, no allowed action between)
is not a dashboard waiting: it is closed with 4429, and may reconnect.

Hours are normalised to whole minutes before they key the hub's snapshot cache: a client
sending a new float each time (6.0000001, 6.0000002, ...) would otherwise make a new cache
entry each time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

BURST = 20
PER_MINUTE = 60.0
MAX_REFUSED = 20  # refusals in a row before the connection is closed
CLOSE_CODE = 4429  # 4000-4999: the application's own; 429 as in HTTP


class Verdict(enum.Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # an error frame; the connection stays open
    CLOSE = "close"  # close with CLOSE_CODE


@dataclass
class TokenBucket:
    """Up to ``burst`` actions at once, refilled continuously at ``per_minute``. ``now`` is
    a monotonic clock in seconds."""

    burst: int = BURST
    per_minute: float = PER_MINUTE
    tokens: float = field(init=False)
    updated_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, *, now: float) -> bool:
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def seconds_until_next(self, *, now: float) -> float:
        self._refill(now)
        return max(0.0, (1 - self.tokens) * 60 / self.per_minute)

    def _refill(self, now: float) -> None:
        if self.updated_at is not None and now > self.updated_at:
            gained = (now - self.updated_at) * self.per_minute / 60
            self.tokens = min(float(self.burst), self.tokens + gained)
        if self.updated_at is None or now > self.updated_at:
            self.updated_at = now  # a clock that steps back gains nothing


@dataclass
class ActionLimit:
    """The bucket, plus the count of refusals in a row that ends a connection."""

    bucket: TokenBucket = field(default_factory=TokenBucket)
    max_refused: int = MAX_REFUSED
    refused_in_a_row: int = field(default=0, init=False)

    def check(self, *, now: float) -> Verdict:
        if self.bucket.take(now=now):
            self.refused_in_a_row = 0
            return Verdict.ALLOW
        self.refused_in_a_row += 1
        return Verdict.CLOSE if self.refused_in_a_row > self.max_refused else Verdict.REFUSE

    def retry_after(self, *, now: float) -> float:
        return self.bucket.seconds_until_next(now=now)


def whole_minutes(hours: float) -> float:
    """``hours`` rounded to whole minutes, at least one."""
    return max(round(hours * 60), 1) / 60
