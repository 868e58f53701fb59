"""A 429 is held for its Retry-After, at most USAGE_REFUSAL_DELAY_SECONDS, before it is sent:
a client that retries at once stops costing the server a refusal per round trip. Only the
pause's clock is fake, apart from one run against a real server."""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import Error
from django.test import override_settings
from pytest_django.fixtures import Settings

from backend.checks import check_settings
from backend.slow_refusals import DelayRefusals
from tests.support import own_server

SCHEMA = "/app/claude-usage/schema/?format=json"


def answering(status: int, headers: list[tuple[bytes, bytes]]) -> Any:
    async def application(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    return application


async def pauses_before(status: int, headers: list[tuple[bytes, bytes]]) -> list[object]:
    """What DelayRefusals did, in order: its pauses (seconds) and the messages it sent."""
    happened: list[object] = []

    async def sleep(seconds: float) -> None:
        happened.append(seconds)

    async def send(message: Any) -> None:
        happened.append(message["type"])

    delaying = DelayRefusals(answering(status, headers))
    delaying.sleep = sleep

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    await delaying({"type": "http"}, receive, send)
    return happened


@pytest.mark.parametrize(
    ("retry_after", "pause"), [(b"45", 1.0), (b"0.25", 0.25), (b"0", 0.0), (b"soon", 1.0)]
)
async def test_a_429_waits_for_its_retry_after_at_most_the_setting(
    settings: Settings, retry_after: bytes, pause: float
) -> None:
    settings.USAGE_REFUSAL_DELAY_SECONDS = 1.0

    happened = await pauses_before(429, [(b"Retry-After", retry_after)])

    assert happened == [pause, "http.response.start", "http.response.body"]


async def test_a_429_without_retry_after_waits_the_setting(settings: Settings) -> None:
    settings.USAGE_REFUSAL_DELAY_SECONDS = 0.5

    assert await pauses_before(429, []) == [0.5, "http.response.start", "http.response.body"]


@pytest.mark.parametrize("status", [200, 400, 401, 413, 500])
async def test_every_other_answer_is_sent_at_once(settings: Settings, status: int) -> None:
    settings.USAGE_REFUSAL_DELAY_SECONDS = 1.0

    happened = await pauses_before(status, [(b"Retry-After", b"5")])

    assert happened == ["http.response.start", "http.response.body"]


@pytest.mark.parametrize("value", [-1, 61, float("inf"), "later"])
def test_a_delay_outside_0_to_60_seconds_is_refused_at_start_up(value: object) -> None:
    with override_settings(USAGE_REFUSAL_DELAY_SECONDS=value):
        errors = check_settings()

    assert [error.msg for error in errors if isinstance(error, Error)] == [
        f"USAGE_REFUSAL_DELAY_SECONDS={value!r}: must be a number from 0 to 60"
    ]


def test_a_real_server_holds_its_429s(tmp_path: Path) -> None:
    # One anonymous request a minute: the second is refused, and its answer comes no sooner
    # than the delay (a lower bound only: sleeping never takes less).
    variables = {"USAGE_THROTTLE_ANONYMOUS_PER_MINUTE": "1", "USAGE_REFUSAL_DELAY_SECONDS": "0.5"}
    with own_server(tmp_path, "slowrefusals", variables=variables) as server:
        statuses, seconds = [], []
        for _ in range(2):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            began = time.monotonic()
            connection.request("GET", SCHEMA)
            response = connection.getresponse()
            response.read()
            seconds.append(time.monotonic() - began)
            statuses.append(response.status)
            connection.close()

    assert statuses == [200, 429]
    assert seconds[1] >= 0.5
