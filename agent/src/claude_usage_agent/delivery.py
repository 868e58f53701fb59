"""Getting a batch answered: retries for transient trouble, halving for oversized or bad ones."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from claude_usage_agent.backoff import Retrier
from claude_usage_agent.transport import (
    BatchInvalidError,
    IngestResult,
    PayloadTooLargeError,
    Rejection,
)

log = logging.getLogger(__name__)

Post = Callable[[Sequence[bytes]], IngestResult]


def deliver(lines: Sequence[bytes], post: Post, retry: Retrier) -> IngestResult:
    """Send `lines` until the server has answered for every one of them.

    On 413 (too large) or 400 (invalid) the batch is halved until the culprit is a single record,
    which then counts as rejected: it is logged once and the checkpoint moves past it instead of
    blocking every later record forever.
    """
    try:
        return retry(lambda: post(lines))
    except (PayloadTooLargeError, BatchInvalidError) as error:
        if len(lines) == 1:
            return IngestResult(rejected=(Rejection(0, error.code, str(error)),))
        log.info(
            "server refused a batch of %d records (%s); sending it in halves", len(lines), error
        )
        middle = len(lines) // 2
        first = deliver(lines[:middle], post, retry)
        return first.merged(deliver(lines[middle:], post, retry), middle)
