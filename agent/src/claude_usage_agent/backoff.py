"""Retrying transient failures with exponential backoff and jitter.

The clock is injected (`sleep`, `jitter`) so the schedule is testable without waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from claude_usage_agent.transport import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")

# A Retry-After beyond this is more likely a misconfigured proxy than a real request.
MAX_RETRY_AFTER = 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    base_delay: float = 1.0
    max_delay: float = 60.0
    # None: retry forever (`watch`); a number: give up after that many failed tries (`sync`).
    max_attempts: int | None = None


def backoff_delay(attempt: int, policy: RetryPolicy, jitter: float) -> float:
    """Delay before retry number `attempt` (0-based): doubling from `base_delay`, capped.

    "Equal jitter": `jitter` in [0, 1) picks a point in the upper half of the nominal delay, so
    agents restarted together spread out, yet none comes back sooner than half the schedule.
    """
    nominal = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt, 30))
    return nominal * (0.5 + jitter / 2)


class GaveUpError(Exception):
    """Retries ran out (only with a bounded policy)."""


@dataclass
class Retrier:
    policy: RetryPolicy
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = field(default=random.random)

    def __call__(self, call: Callable[[], T]) -> T:
        failures = 0
        while True:
            try:
                return call()
            except TransientError as error:
                failures += 1
                self._give_up_if_exhausted(failures, error)
                delay = self.delay_after(failures, error)
                log.warning("%s; retry %d in %.1f s", error, failures, delay)
                self.sleep(delay)

    def delay_after(self, failures: int, error: TransientError) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, MAX_RETRY_AFTER)
        return backoff_delay(failures - 1, self.policy, self.jitter())

    def _give_up_if_exhausted(self, failures: int, error: TransientError) -> None:
        limit = self.policy.max_attempts
        if limit is not None and failures >= limit:
            raise GaveUpError(f"giving up after {failures} tries: {error}") from error
