"""Getting a batch answered: retries for transient trouble, halving for oversized or bad ones."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from claude_usage_agent.backoff import GaveUpError, Retrier, backoff_delay
from claude_usage_agent.transport import (
    BatchInvalidError,
    IngestResult,
    PayloadTooLargeError,
    Rejection,
    ServerError,
    TransientError,
)

log = logging.getLogger(__name__)

Post = Callable[[Sequence[bytes]], IngestResult]

# A batch the server failed on this many times is split as a refused one is: a record the
# server cannot take (a bug it has) must not stop a machine's shipping for ever.
SPLIT_AFTER_SERVER_FAILURES = 3
# A line that is no usage record: the server skips it, and answers for it whenever it can
# take a batch at all. Sent alone, it tells a server that fails on one record from one that
# fails on everything (down, broken by a deployment), whose records must not be set aside.
PROBE_LINE = b"{}"


class RepeatedServerFailure(ServerError):
    """The server failed on the same batch `SPLIT_AFTER_SERVER_FAILURES` times."""


def deliver(lines: Sequence[bytes], post: Post, retry: Retrier) -> IngestResult:
    """Send `lines` until the server has answered for every one of them.

    On 413 (too large), 400 (invalid) or a server failure repeated for the same batch, the
    batch is halved until the culprit is a single record, which then counts as rejected: it
    is logged once and the checkpoint moves past it instead of blocking every later record
    forever. A single record the server keeps failing on is set aside only while the server
    answers other requests (``PROBE_LINE``); otherwise it is retried, with backoff.
    """
    try:
        return retry(_failing_over(lines, post))
    except (PayloadTooLargeError, BatchInvalidError, RepeatedServerFailure) as error:
        if len(lines) == 1:
            if isinstance(error, RepeatedServerFailure):
                return _set_aside_once_others_go_in(lines, post, retry, error)
            return IngestResult(rejected=(Rejection(0, error.code, str(error)),))
        log.info(
            "server refused a batch of %d records (%s); sending it in halves", len(lines), error
        )
        middle = len(lines) // 2
        first = deliver(lines[:middle], post, retry)
        return first.merged(deliver(lines[middle:], post, retry), middle)


def _failing_over(lines: Sequence[bytes], post: Post) -> Callable[[], IngestResult]:
    """`post(lines)` for the retrier, which raises `RepeatedServerFailure` (not transient: it
    ends the retries) once the server has failed on the batch often enough."""
    failures = 0

    def attempt() -> IngestResult:
        nonlocal failures
        try:
            return post(lines)
        except TransientError as error:
            failures += error.server_failed
            if failures >= SPLIT_AFTER_SERVER_FAILURES:
                raise RepeatedServerFailure(f"{failures} server failures: {error}") from error
            raise

    return attempt


def _set_aside_once_others_go_in(
    lines: Sequence[bytes], post: Post, retry: Retrier, error: ServerError
) -> IngestResult:
    """One record the server keeps failing on: set aside (as rejected) when it fails again
    right after the server answered the probe; while the server answers nothing, the record
    is tried again after a backoff."""
    rounds = 0
    while True:
        if _answers(post):
            try:
                return post(lines)
            except TransientError as again:
                if again.server_failed:
                    log.warning("the server fails on one record and answers others; skipping it")
                    return IngestResult(rejected=(Rejection(0, "SERVER_ERROR", str(again)),))
                error = again
            except (PayloadTooLargeError, BatchInvalidError) as refused:
                return IngestResult(rejected=(Rejection(0, refused.code, str(refused)),))
        rounds += 1
        limit = retry.policy.max_attempts
        if limit is not None and rounds >= limit:
            raise GaveUpError(f"giving up after {rounds} rounds: {error}") from error
        retry.sleep(backoff_delay(rounds, retry.policy, retry.jitter()))
        try:
            return retry(_failing_over(lines, post))
        except RepeatedServerFailure as again:
            error = again
        except (PayloadTooLargeError, BatchInvalidError) as refused:
            return IngestResult(rejected=(Rejection(0, refused.code, str(refused)),))


def _answers(post: Post) -> bool:
    try:
        post([PROBE_LINE])
    except ServerError:
        return False
    return True
