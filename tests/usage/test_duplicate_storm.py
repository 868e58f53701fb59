"""A duplicate storm against a real server of two daphne processes: the same 10,000 records
sent 20 times at once from 8 clients are counted exactly once.

On the suite's own engine (a SQLite file, or a PostgreSQL database of the test's own in the
PostgreSQL run), so that the append lock and the dedupe probe meet the real concurrency.
Each client behaves as the agent does: a 429 or a 503 is sent again after its Retry-After.
"""

from __future__ import annotations

import http.client
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.support import API, ServerProcess, manage, own_database, server_env

pytestmark = [pytest.mark.slow]

RECORDS = 10_000
SENDS = 20
CLIENTS = 8
TIMEOUT = 120.0  # a bound on waiting, never an expectation of speed
RETRYABLE = (429, 503)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("duplicate-storm")
    prefix = f"storm{uuid.uuid4().hex[:12]}"
    with own_database(workdir) as database:
        env = server_env(workdir, prefix, DATABASE_URL=database, USAGE_RETENTION_HOURS="0")
        manage(env, "migrate", "--noinput", "-v0")
        server = ServerProcess(env, workdir / "server.log", workers=2)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def new_token(live: ServerProcess) -> str:
    return manage(live.env, "create_token", f"user{uuid.uuid4().hex[:12]}").strip()


NOW = datetime.now(UTC).replace(microsecond=0)


def batch() -> bytes:
    records = [
        {
            "type": "assistant",
            "timestamp": (NOW - timedelta(seconds=RECORDS - number)).isoformat(),
            "sessionId": f"session-{number % 40}",
            "cwd": f"/home/alice/project-{number % 7}",
            "requestId": f"req_{number}",
            "message": {
                "id": f"msg_{number}",
                "model": ("claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805")[number % 2],
                "usage": {
                    "input_tokens": 1_000 + number,
                    "output_tokens": 100 + number % 13,
                    "cache_read_input_tokens": number % 1_000,
                },
            },
        }
        for number in range(RECORDS)
    ]
    return b"\n".join(orjson.dumps(record) for record in records)


def send(live: ServerProcess, token: str, body: bytes) -> dict[str, Any]:
    """POST ``body`` until it is answered 200, as the agent does."""
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/x-ndjson"}
    deadline = time.monotonic() + TIMEOUT
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=TIMEOUT)
        try:
            connection.request("POST", f"{API}events/", body, headers)
            response = connection.getresponse()
            answer = orjson.loads(response.read())
            status, retry_after = response.status, response.getheader("Retry-After")
        finally:
            connection.close()
        if status == 200:
            return dict(answer)
        assert status in RETRYABLE, (status, answer)
        assert time.monotonic() < deadline, "still refused when the bound on waiting ended"
        time.sleep(float(retry_after or 1))


def read(live: ServerProcess, token: str, path: str) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=TIMEOUT)
    try:
        connection.request("GET", f"{API}{path}", headers={"Authorization": f"Token {token}"})
        response = connection.getresponse()
        assert response.status == 200
        return orjson.loads(response.read())
    finally:
        connection.close()


def figures(live: ServerProcess, token: str) -> list[Any]:
    stats = read(live, token, "stats/")
    totals = {key: value for key, value in stats.items() if key.startswith("total_")}
    return [totals, read(live, token, "projects/"), read(live, token, "timeseries/?hours=6")]


def test_the_same_records_sent_20_times_at_once_from_8_clients_count_once(
    live: ServerProcess,
) -> None:
    body = batch()
    once = new_token(live)
    assert send(live, once, body)["accepted"] == RECORDS

    stormed = new_token(live)
    with ThreadPoolExecutor(max_workers=CLIENTS) as clients:
        answers = list(clients.map(lambda _: send(live, stormed, body), range(SENDS)))

    assert sum(answer["accepted"] for answer in answers) == RECORDS
    assert sum(answer["duplicates"] for answer in answers) == RECORDS * (SENDS - 1)
    assert figures(live, stormed) == figures(live, once)
