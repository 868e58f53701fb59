"""The database going away under a real server, and coming back.

The server reaches its PostgreSQL database through a forwarder the test cuts (``tests/tcp_cut``):
new connections are refused and open ones reset, as when the database host goes away.
Meanwhile an ingest is answered ``503 LOG_UNAVAILABLE`` with a ``Retry-After`` (never a 200:
nothing is stored), and reads keep answering from the projections in Redis. Afterwards the
batch sent again gives the figures of a user who sent everything to a healthy server.
"""

from __future__ import annotations

import http.client
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from tests.support import API, ServerProcess, manage, own_database, server_env
from tests.tcp_cut import TcpCut

pytestmark = [pytest.mark.slow, pytest.mark.postgres_only]

TIMEOUT = 120.0  # a bound on waiting, never an expectation of speed
READS = ("dashboard/?hours=3", "stats/", "projects/", "timeseries/?hours=3&interval=15min")


@pytest.fixture(scope="module")
def database_link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TcpCut]]:
    with own_database(tmp_path_factory.mktemp("database-faults")) as url:
        parts = urlsplit(url)
        link = TcpCut((parts.hostname or "127.0.0.1", parts.port or 5432))
        link.start()
        try:
            yield parts._replace(netloc=f"{parts.username}@127.0.0.1:{link.port}").geturl(), link
        finally:
            link.cut()


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, database_link: tuple[str, TcpCut]
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("database-faults-server")
    prefix = f"dbfault{uuid.uuid4().hex[:12]}"
    env = server_env(workdir, prefix, DATABASE_URL=database_link[0], USAGE_RETENTION_HOURS="0")
    manage(env, "migrate", "--noinput", "-v0")
    server = ServerProcess(env, workdir / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def link(database_link: tuple[str, TcpCut]) -> Iterator[TcpCut]:
    yield database_link[1]
    if database_link[1]._listener is None:
        database_link[1].restore()


def new_token(live: ServerProcess) -> str:
    return manage(live.env, "create_token", f"user{uuid.uuid4().hex[:12]}").strip()


NOW = datetime.now(UTC).replace(microsecond=0)


def lines(first: int, count: int) -> bytes:
    records = [
        {
            "type": "assistant",
            "timestamp": (NOW - timedelta(minutes=90 - number)).isoformat(),
            "sessionId": f"session-{number % 3}",
            "cwd": f"/home/alice/project-{number % 2}",
            "requestId": f"req_{number}",
            "message": {
                "id": f"msg_{number}",
                "model": "claude-sonnet-4-5-20250929",
                "usage": {"input_tokens": 1_000 + number, "output_tokens": 100},
            },
        }
        for number in range(first, first + count)
    ]
    return b"\n".join(orjson.dumps(record) for record in records)


def call(
    live: ServerProcess, token: str, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/x-ndjson"}
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=TIMEOUT)
    try:
        connection.request(method, f"{API}{path}", body, headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), orjson.loads(response.read())
    finally:
        connection.close()


def send(live: ServerProcess, token: str, body: bytes) -> dict[str, Any]:
    """POST ``body`` until it is answered 200, after each 503's Retry-After, as the agent
    does (once the database is back, the server lets one request find out at a time)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        status, headers, answer = call(live, token, "POST", "events/", body)
        if status == 200:
            return dict(answer)
        assert status == 503, answer
        assert time.monotonic() < deadline, "still refused when the bound on waiting ended"
        time.sleep(float(headers["Retry-After"]))


# What moves with the clock between two reads: countdowns, predictions, rates.
CLOCK_FIELDS = frozenset(
    {
        "time_until_reset_seconds",
        "time_until_reset_human",
        "estimated_time_to_limit",
        "estimated_limit_at",
        "burn_rate",
    }
)


def without_clock(answer: Any) -> Any:
    if isinstance(answer, dict):
        return {k: without_clock(v) for k, v in answer.items() if k not in CLOCK_FIELDS}
    if isinstance(answer, list):
        return [without_clock(item) for item in answer]
    return answer


def figures(live: ServerProcess, token: str) -> list[Any]:
    answers = []
    for path in READS:
        status, _, body = call(live, token, "GET", path)
        assert status == 200, (path, body)
        answers.append(without_clock(body))
    return answers


def test_an_ingest_is_refused_503_while_the_database_is_down_and_sent_again_after(
    live: ServerProcess, link: TcpCut
) -> None:
    token = new_token(live)
    assert call(live, token, "POST", "events/", lines(0, 30))[0] == 200

    link.cut()
    status, headers, answer = call(live, token, "POST", "events/", lines(30, 30))
    assert (status, answer["error"]["code"]) == (503, "LOG_UNAVAILABLE"), answer
    assert int(headers["Retry-After"]) > 0

    link.restore()
    assert send(live, token, lines(30, 30))["accepted"] == 30
    healthy = new_token(live)
    assert call(live, healthy, "POST", "events/", lines(0, 60))[0] == 200
    assert figures(live, token) == figures(live, healthy)


def test_reads_keep_answering_from_redis_while_the_database_is_down(
    live: ServerProcess, link: TcpCut
) -> None:
    token = new_token(live)
    assert send(live, token, lines(0, 30))["accepted"] == 30
    before = figures(live, token)

    link.cut()
    assert figures(live, token) == before
