"""A record the server keeps failing on (a 5xx for every batch that holds it) cannot stop a
machine's shipping: the batch is halved as a refused one is, and the record alone is set
aside once the server is seen answering other requests. A server that fails on everything,
or says it is unavailable (503), never has records set aside."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from http.server import ThreadingHTTPServer

import pytest

from claude_usage_agent.backoff import GaveUpError, Retrier, RetryPolicy
from claude_usage_agent.delivery import PROBE_LINE, deliver
from claude_usage_agent.transport import Endpoint, IngestResult, TransientError, post_events

from .fake_server import TOKEN, FakeUsageServer, _handler_for

LINES = [f"r{index}".encode() for index in range(10)]


@dataclass
class Server:
    """Answers 500 to every batch holding a ``poison`` line, ``failing`` other ones first."""

    poison: set[bytes] = field(default_factory=set)
    failing: list[int] = field(default_factory=list)  # statuses for the next requests
    sizes: list[int] = field(default_factory=list)
    stored: list[bytes] = field(default_factory=list)

    def post(self, lines: Sequence[bytes]) -> IngestResult:
        self.sizes.append(len(lines))
        if self.failing:
            status = self.failing.pop(0)
            raise TransientError(f"HTTP {status}", status=status)
        if list(lines) == [PROBE_LINE]:
            return IngestResult(skipped=1)
        if self.poison & set(lines):
            raise TransientError("HTTP 500 SERVER_ERROR: Server error", status=500)
        self.stored.extend(lines)
        return IngestResult(accepted=len(lines))


def no_wait(max_attempts: int | None = 8) -> Retrier:
    policy = RetryPolicy(max_attempts=max_attempts)
    return Retrier(policy, sleep=lambda seconds: None, jitter=lambda: 0.0)


@pytest.mark.parametrize("poison", [[0], [6], [9], [2, 7], [3, 4]])
def test_records_the_server_keeps_failing_on_are_set_aside_and_the_rest_delivered(
    poison: list[int],
) -> None:
    server = Server(poison={LINES[index] for index in poison})

    result = deliver(LINES, server.post, no_wait())

    assert result.accepted == 10 - len(poison)
    assert [(r.index, r.code) for r in result.rejected] == [(i, "SERVER_ERROR") for i in poison]
    assert sorted(server.stored) == sorted(line for i, line in enumerate(LINES) if i not in poison)


def test_a_batch_is_split_only_after_the_third_server_failure() -> None:
    server = Server(failing=[500, 500])

    assert deliver(LINES, server.post, no_wait()) == IngestResult(accepted=10)
    assert server.sizes == [10, 10, 10]


def test_an_unavailable_server_is_waited_for_never_split() -> None:
    server = Server(failing=[503] * 6)

    assert deliver(LINES, server.post, no_wait()) == IngestResult(accepted=10)
    assert server.sizes == [10] * 7


def test_network_trouble_never_splits_a_batch() -> None:
    server = Server()
    flaky = iter([TransientError("connection reset")] * 5)

    def post(lines: Sequence[bytes]) -> IngestResult:
        error = next(flaky, None)
        if error is not None:
            server.sizes.append(len(lines))
            raise error
        return server.post(lines)

    assert deliver(LINES, post, no_wait()) == IngestResult(accepted=10)
    assert server.sizes == [10] * 6


def test_a_server_failing_on_everything_never_has_a_record_set_aside() -> None:
    """Every request fails, the probe too: the one record is tried again until retries run
    out (``sync``), and nothing is counted as rejected, so its checkpoint does not move."""
    server = Server(failing=[500] * 1000)

    with pytest.raises(GaveUpError):
        deliver(LINES[:1], server.post, no_wait(max_attempts=4))

    assert server.stored == []


def test_a_record_is_set_aside_once_the_server_answers_again() -> None:
    """The server fails on everything for a while (the probe too), then on the record alone:
    only then is the record set aside."""
    server = Server(poison={LINES[0]}, failing=[500] * 7)

    result = deliver(LINES[:1], server.post, no_wait())

    assert [(r.index, r.code) for r in result.rejected] == [(0, "SERVER_ERROR")]


def test_a_record_that_goes_in_once_the_server_recovers_is_delivered() -> None:
    server = Server(failing=[500] * 7)

    assert deliver(LINES[:1], server.post, no_wait()) == IngestResult(accepted=1)
    assert server.stored == [LINES[0]]


# --- Over HTTP, against the stand-in server -------------------------------------------------


POISON_ID = "msg_poison"


@dataclass
class PoisonedUsageServer(FakeUsageServer):
    """The stand-in server, answering 500 in the error envelope to a batch holding the
    message ``POISON_ID``, as the real one did for a record it could not store."""

    def __enter__(self) -> PoisonedUsageServer:
        base = _handler_for(self)

        class Handler(base):  # type: ignore[valid-type,misc]
            def _events(self, body: bytes) -> None:
                if POISON_ID.encode() in gzip.decompress(body):
                    self._error(500, "SERVER_ERROR", "Server error")
                    return
                super()._events(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self


@pytest.fixture
def poisoned_server() -> Iterator[PoisonedUsageServer]:
    with PoisonedUsageServer() as running:
        yield running


def usage_line(message_id: str) -> bytes:
    return json.dumps(
        {
            "requestId": f"req_{message_id}",
            "message": {"id": message_id, "usage": {"input_tokens": 1}},
        }
    ).encode()


def test_one_poison_record_over_http_costs_only_itself(
    poisoned_server: PoisonedUsageServer,
) -> None:
    lines = [usage_line(f"msg_{index}") for index in range(20)]
    lines[13] = usage_line(POISON_ID)
    post = partial(post_events, Endpoint(poisoned_server.url, TOKEN, "laptop", timeout=5))

    result = deliver(lines, post, no_wait())

    assert result.accepted == 19
    assert [(r.index, r.code) for r in result.rejected] == [(13, "SERVER_ERROR")]
    assert poisoned_server.total_tokens() == 19
