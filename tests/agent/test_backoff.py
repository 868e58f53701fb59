"""Retries: the schedule, Retry-After, giving up, and what is never retried."""

from __future__ import annotations

import pytest

from claude_usage_agent.backoff import GaveUpError, Retrier, RetryPolicy, backoff_delay
from claude_usage_agent.transport import AuthenticationFailedError, TransientError

POLICY = RetryPolicy(base_delay=1.0, max_delay=60.0)


@pytest.mark.parametrize(
    ("attempt", "jitter", "delay"),
    [
        (0, 0.0, 0.5),
        (0, 1.0, 1.0),
        (1, 0.0, 1.0),
        (3, 1.0, 8.0),
        (5, 0.5, 24.0),
        (6, 1.0, 60.0),  # capped
        (500, 1.0, 60.0),  # no overflow after days of retrying
    ],
)
def test_the_delay_doubles_with_jitter_up_to_the_cap(
    attempt: int, jitter: float, delay: float
) -> None:
    assert backoff_delay(attempt, POLICY, jitter) == pytest.approx(delay)


class Flaky:
    """Fails `failures` times with `error`, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "answer"


def retrier(policy: RetryPolicy, slept: list[float]) -> Retrier:
    return Retrier(policy, sleep=slept.append, jitter=lambda: 1.0)


def test_transient_failures_are_retried_on_the_schedule() -> None:
    slept: list[float] = []
    call = Flaky(4, TransientError("connection refused"))
    assert retrier(POLICY, slept)(call) == "answer"
    assert slept == [1.0, 2.0, 4.0, 8.0]


def test_retry_after_is_honoured() -> None:
    slept: list[float] = []
    call = Flaky(2, TransientError("HTTP 429", retry_after=17.0))
    retrier(POLICY, slept)(call)
    assert slept == [17.0, 17.0]


def test_an_absurd_retry_after_is_capped() -> None:
    slept: list[float] = []
    retrier(POLICY, slept)(Flaky(1, TransientError("HTTP 503", retry_after=10**9)))
    assert slept == [3600.0]


def test_a_bounded_policy_gives_up_with_the_last_error() -> None:
    slept: list[float] = []
    call = Flaky(100, TransientError("HTTP 502"))
    with pytest.raises(GaveUpError, match="after 3 tries: HTTP 502"):
        retrier(RetryPolicy(max_attempts=3), slept)(call)
    assert call.calls == 3
    assert len(slept) == 2


def test_an_unbounded_policy_keeps_going() -> None:
    slept: list[float] = []
    call = Flaky(50, TransientError("timed out"))
    assert retrier(POLICY, slept)(call) == "answer"
    assert len(slept) == 50
    assert max(slept) == 60.0


def test_authentication_failures_are_not_retried() -> None:
    slept: list[float] = []
    call = Flaky(1, AuthenticationFailedError("bad token"))
    with pytest.raises(AuthenticationFailedError):
        retrier(POLICY, slept)(call)
    assert slept == []
