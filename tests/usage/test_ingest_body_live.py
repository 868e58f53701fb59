"""The ingest's size limit against a real server, for bodies whose size no header states
(``Transfer-Encoding: chunked``, no ``Content-Length``): the limit must hold on what is read,
since there is no declared size to refuse up front.

One daphne process with ``USAGE_MAX_BODY_BYTES`` at 64 KiB, on a SQLite database of its own
(framing is what is tested, not the database) and the test run's Redis. Each test posts as a
user of its own, so that user's ``stats/`` says what was stored.

What daphne (Twisted) does with the other lies, so that they never reach the application: a
chunked body that also states a ``Content-Length`` is answered 400 by the HTTP parser; a
``Content-Length`` shorter than the body ends the body there (the rest is read as the next
request); a longer one leaves the request waiting for bytes that never come.
"""

from __future__ import annotations

import http.client
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.support import API, ServerProcess, manage, own_server

pytestmark = [pytest.mark.slow]

LIMIT = 64 * 1024
CHUNK = 8 * 1024
TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with own_server(
        tmp_path_factory.mktemp("ingest-body-live"),
        "ingestlive",
        variables={"USAGE_RETENTION_HOURS": "0", "USAGE_MAX_BODY_BYTES": str(LIMIT)},
    ) as server:
        yield server


@pytest.fixture
def token(live: ServerProcess) -> str:
    return manage(live.env, "create_token", f"user{uuid.uuid4().hex[:12]}").strip()


# --- requests ---------------------------------------------------------------------------


def post_chunked(live: ServerProcess, token: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST ``body`` in chunks of CHUNK bytes: no Content-Length, so no size is declared."""
    chunks = (body[start : start + CHUNK] for start in range(0, len(body), CHUNK))
    headers = {
        "Authorization": f"Token {token}",
        "Content-Type": "application/x-ndjson",
        "Transfer-Encoding": "chunked",
    }
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=TIMEOUT)
    try:
        connection.request("POST", f"{API}events/", chunks, headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, orjson.loads(response.read())
    finally:
        connection.close()


def stored_messages(live: ServerProcess, token: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=TIMEOUT)
    try:
        connection.request("GET", f"{API}stats/", headers={"Authorization": f"Token {token}"})
        response = connection.getresponse()
        assert response.status == 200
        return int(orjson.loads(response.read())["total_messages"])
    finally:
        connection.close()


# --- bodies -----------------------------------------------------------------------------


def record_line(number: int, now: datetime) -> bytes:
    record = {
        "type": "assistant",
        "timestamp": (now - timedelta(seconds=number)).isoformat().replace("+00:00", "Z"),
        "sessionId": "chunked-session",
        "cwd": "/home/dev/chunked",
        "requestId": f"req_chunked_{number}",
        "message": {
            "id": f"msg_chunked_{number}",
            "model": "claude-sonnet-4-20250514",
            "usage": {"input_tokens": 100 + number, "output_tokens": 10},
        },
    }
    return orjson.dumps(record) + b"\n"


def body_of(size: int) -> tuple[bytes, int]:
    """NDJSON of exactly ``size`` bytes: whole records, then blank lines (which the ingest
    skips) up to the size; and how many records it holds."""
    now = datetime.now(tz=UTC)
    lines: list[bytes] = []
    length = 0
    while length + len(line := record_line(len(lines), now)) <= size:
        lines.append(line)
        length += len(line)
    return b"".join(lines) + b"\n" * (size - length), len(lines)


# --- the tests --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [LIMIT + 1, 4 * LIMIT], ids=["one byte over", "four times"])
def test_a_chunked_body_over_the_limit_is_refused_and_nothing_of_it_is_stored(
    live: ServerProcess, token: str, size: int
) -> None:
    body, records = body_of(size)
    assert records > 100

    status, answer = post_chunked(live, token, body)

    assert status == 413, answer
    assert answer["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert answer["error"]["message"]
    assert stored_messages(live, token) == 0


@pytest.mark.parametrize("size", [4 * 1024, LIMIT], ids=["small", "exactly the limit"])
def test_a_chunked_body_within_the_limit_is_ingested_whole(
    live: ServerProcess, token: str, size: int
) -> None:
    body, records = body_of(size)

    status, answer = post_chunked(live, token, body)

    assert status == 200, answer
    assert (answer["accepted"], answer["rejected"]) == (records, [])
    assert stored_messages(live, token) == records
