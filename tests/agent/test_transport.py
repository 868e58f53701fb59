"""The HTTP contract, against a local stand-in for the server."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message

import pytest

from claude_usage_agent.transport import (
    AuthenticationFailedError,
    BatchInvalidError,
    Endpoint,
    IngestResult,
    PayloadTooLargeError,
    Rejection,
    RequestRefusedError,
    TransientError,
    classify_http_error,
    parse_ingest_result,
    parse_retry_after,
    post_events,
)

from .fake_server import ACK_THEN_DROP, DROP, TOKEN, FakeUsageServer

LINES = [b'{"requestId":"r1","message":{"id":"m1","usage":{"input_tokens":1}}}']


@pytest.fixture
def server() -> Iterator[FakeUsageServer]:
    with FakeUsageServer() as running:
        yield running


def endpoint(server: FakeUsageServer, token: str = TOKEN) -> Endpoint:
    return Endpoint(server.url, token, "laptop-1", timeout=5)


def test_a_batch_is_gzipped_ndjson_with_the_token_and_host(server: FakeUsageServer) -> None:
    post_events(endpoint(server), LINES * 2)
    request = server.requests[-1]
    assert (request.method, request.path) == ("POST", "/app/claude-usage/events/")
    assert request.headers["Content-Type"] == "application/x-ndjson"
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Authorization"] == f"Token {TOKEN}"
    assert request.headers["X-Usage-Host"] == "laptop-1"
    assert gzip.decompress(request.body) == LINES[0] + b"\n" + LINES[0] + b"\n"


def test_the_answer_is_read(server: FakeUsageServer) -> None:
    assert post_events(endpoint(server), LINES * 2) == IngestResult(accepted=1, duplicates=1)


def test_a_wrong_token_is_an_authentication_failure(server: FakeUsageServer) -> None:
    with pytest.raises(AuthenticationFailedError, match="401 AUTHENTICATION_REQUIRED"):
        post_events(endpoint(server, token="wrong"), LINES)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (429, TransientError),
        (408, TransientError),
        (413, PayloadTooLargeError),
        (400, BatchInvalidError),
        (403, AuthenticationFailedError),
        (404, RequestRefusedError),
        (415, RequestRefusedError),
    ],
)
def test_statuses_map_to_what_the_agent_should_do(
    server: FakeUsageServer, status: int, error: type[Exception]
) -> None:
    server.script.append(status)
    with pytest.raises(error):
        post_events(endpoint(server), LINES)


def test_retry_after_travels_with_a_429(server: FakeUsageServer) -> None:
    server.script.append(429)
    server.retry_after = "7"
    with pytest.raises(TransientError) as raised:
        post_events(endpoint(server), LINES)
    assert raised.value.retry_after == 7.0


@pytest.mark.parametrize("action", [DROP, ACK_THEN_DROP])
def test_a_lost_answer_is_transient(server: FakeUsageServer, action: str) -> None:
    server.script.append(action)
    with pytest.raises(TransientError):
        post_events(endpoint(server), LINES)


def test_a_closed_port_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientError, match="cannot reach"):
        post_events(Endpoint(f"http://127.0.0.1:{port}", TOKEN, "h", timeout=2), LINES)


def test_the_error_envelope_is_quoted_in_the_message() -> None:
    body = json.dumps({"error": {"code": "SERVER_ERROR", "message": "Server error"}}).encode()
    error = classify_http_error(500, Message(), body)
    assert str(error) == "HTTP 500 SERVER_ERROR: Server error"


def test_a_body_without_an_envelope_is_quoted_raw() -> None:
    assert str(classify_http_error(502, Message(), b"<html>Bad Gateway</html>")) == (
        "HTTP 502: <html>Bad Gateway</html>"
    )


def test_rejections_are_read_with_their_index() -> None:
    answer = {
        "accepted": 2,
        "duplicates": 0,
        "skipped": 1,
        "expired": 4,
        "rejected": [{"index": 3, "error": {"code": "VALIDATION_ERROR", "message": "no id"}}],
    }
    assert parse_ingest_result(answer) == IngestResult(
        2, 0, 1, (Rejection(3, "VALIDATION_ERROR", "no id"),), expired=4
    )


@pytest.mark.parametrize("answer", [[], "ok", {"accepted": "many"}, {"rejected": [{}]}])
def test_an_unexpected_answer_is_transient(answer: object) -> None:
    with pytest.raises(TransientError):
        parse_ingest_result(answer)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        ("Sun, 05 Oct 2025 20:00:30 GMT", 30.0),
        ("Sun, 05 Oct 2025 19:00:00 GMT", 0.0),
        ("soon", None),
    ],
)
def test_retry_after_takes_seconds_or_a_date(header: str | None, seconds: float | None) -> None:
    now = datetime(2025, 10, 5, 20, 0, tzinfo=UTC)
    assert parse_retry_after(header, now) == seconds
