"""Delivering a batch: oversized or invalid batches are halved, a lone bad record is skipped."""

from __future__ import annotations

from collections.abc import Sequence

from claude_usage_agent.backoff import Retrier, RetryPolicy
from claude_usage_agent.delivery import deliver
from claude_usage_agent.transport import (
    BatchInvalidError,
    IngestResult,
    PayloadTooLargeError,
    TransientError,
)

LINES = [f"r{index}".encode() for index in range(10)]


class Server:
    """Refuses batches above `limit` records with 413 and any batch holding `poison` with 400."""

    def __init__(self, limit: int = 10, poison: bytes | None = None, flaky: int = 0) -> None:
        self.limit = limit
        self.poison = poison
        self.flaky = flaky
        self.sizes: list[int] = []

    def post(self, lines: Sequence[bytes]) -> IngestResult:
        self.sizes.append(len(lines))
        if self.flaky:
            self.flaky -= 1
            raise TransientError("connection reset")
        if len(lines) > self.limit:
            raise PayloadTooLargeError("too many")
        if self.poison in lines:
            raise BatchInvalidError("bad record")
        return IngestResult(accepted=len(lines))


def no_wait() -> Retrier:
    return Retrier(RetryPolicy(max_attempts=5), sleep=lambda seconds: None, jitter=lambda: 0.0)


def test_a_batch_that_fits_goes_in_one_request() -> None:
    server = Server()
    assert deliver(LINES, server.post, no_wait()) == IngestResult(accepted=10)
    assert server.sizes == [10]


def test_a_too_large_batch_is_halved_until_it_fits() -> None:
    server = Server(limit=3)
    assert deliver(LINES, server.post, no_wait()) == IngestResult(accepted=10)
    assert server.sizes == [10, 5, 2, 3, 5, 2, 3]


def test_a_single_invalid_record_is_isolated_and_reported_at_its_index() -> None:
    server = Server(poison=b"r6")
    result = deliver(LINES, server.post, no_wait())
    assert result.accepted == 9
    assert [(rejection.index, rejection.code) for rejection in result.rejected] == [
        (6, "VALIDATION_ERROR")
    ]


def test_a_single_record_too_large_on_its_own_is_rejected_not_retried_forever() -> None:
    result = deliver(LINES[:2], Server(limit=0).post, no_wait())
    assert [rejection.index for rejection in result.rejected] == [0, 1]


def test_transient_failures_are_retried_inside_a_delivery() -> None:
    server = Server(flaky=2)
    assert deliver(LINES, server.post, no_wait()) == IngestResult(accepted=10)
    assert server.sizes == [10, 10, 10]
