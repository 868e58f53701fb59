"""``/healthz`` and ``/readyz`` against the real database and the suite's Redis; an
unreachable Redis is a port nobody listens on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client
from pytest_django import Settings
from rest_framework.test import APIClient

from tests.conftest import Clock
from tests.support import free_port
from tests.usage.test_ingest_api import line
from usage import outage, services, store
from usage.completed_windows import Progress
from usage.projection import projector

pytestmark = [pytest.mark.django_db(transaction=True)]

EVENTS = "/app/claude-usage/events/"


def dead_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def unreachable_redis(settings: Settings) -> Iterator[None]:
    """Redis out of reach until the test ends (restored before the suite's own fixture drops
    the test's keys)."""
    reachable, settings.REDIS_URL = settings.REDIS_URL, dead_redis()
    yield
    settings.REDIS_URL = reachable


def ingest(api: APIClient, *records: dict[str, Any]) -> dict[str, Any]:
    answer = api.post(EVENTS, {"records": list(records)}, format="json")
    assert answer.status_code == 200, answer.content
    body: dict[str, Any] = answer.json()
    return body


def test_healthz_answers_ok_without_a_token() -> None:
    answer = Client().get("/healthz")

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_readyz_is_ready_when_the_database_and_redis_answer() -> None:
    answer = Client().get("/readyz")

    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert body["projection_lag"] is None  # no worker has measured it yet
    assert "error" not in body


@pytest.mark.usefixtures("unreachable_redis")
def test_readyz_is_503_with_the_error_envelope_when_redis_is_unreachable() -> None:
    answer = Client().get("/readyz")

    assert answer.status_code == 503
    assert answer["Retry-After"] == "5"
    body = answer.json()
    assert body["checks"] == {"database": "ok", "redis": "unavailable"}
    assert body["error"]["code"] == "PROJECTIONS_UNAVAILABLE"
    assert body["status"] == "unavailable"


def test_readyz_reports_the_lag_the_worker_found_after_a_projection_failed(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    first = ingest(api, line("msg_a", "req_a"), line("msg_b", "req_b"))
    projected = first["position"]
    redis_url, settings.REDIS_URL = settings.REDIS_URL, dead_redis()
    later = ingest(api, line("msg_c", "req_c"), line("msg_d", "req_d"))  # in the log only
    settings.REDIS_URL = redis_url
    measured_at = datetime(2025, 10, 5, 22, 0, 30, tzinfo=UTC).timestamp()

    projector.record_lag(now=measured_at)  # what the worker does first on each tick
    body = Client().get("/readyz").json()

    assert later["position"] == store.head_position() > projected
    assert body["projection_lag"]["positions"] == later["position"] - projected
    assert body["projection_lag"]["users_behind"] == 1
    assert body["projection_lag"]["measured_at"] == "2025-10-05T22:00:30+00:00"


def test_the_lag_is_zero_once_the_worker_caught_up(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    redis_url, settings.REDIS_URL = settings.REDIS_URL, dead_redis()
    ingest(api, line("msg_a", "req_a"))  # never projected: no checkpoint at all
    settings.REDIS_URL = redis_url
    found = projector.record_lag(now=clock.now.timestamp())

    projector.catch_up_all()
    after = projector.record_lag(now=clock.now.timestamp())

    assert (found.positions, found.users_behind) == (store.head_position(), 1)
    assert (after.positions, after.users_behind) == (0, 0)


def test_probes_are_not_throttled(settings: Settings) -> None:
    settings.USAGE_THROTTLE_ANONYMOUS_PER_MINUTE = 1
    client = Client()

    statuses = [client.get(path).status_code for path in ["/healthz", "/readyz"] * 5]

    assert statuses == [200] * 10


def test_a_worker_tick_records_the_lag_it_found_then_repairs_it(
    api: APIClient, clock: Clock, settings: Settings, user: object
) -> None:
    projected = ingest(api, line("msg_a", "req_a"))["position"]
    reachable, settings.REDIS_URL = settings.REDIS_URL, dead_redis()
    later = ingest(api, line("msg_b", "req_b"))["position"]
    settings.REDIS_URL = reachable

    services.run_periodic_jobs(now=clock.now, since=Progress())
    lag = Client().get("/readyz").json()["projection_lag"]

    assert (lag["positions"], lag["users_behind"]) == (later - projected, 1)
    assert projector.measure_lag(now=clock.now.timestamp()).positions == 0  # repaired


@pytest.mark.postgres_only
def test_readyz_answers_at_once_while_the_process_knows_the_database_is_down_then_probes_it(
    monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Any
) -> None:
    # The process found PostgreSQL out of reach (usage.outage): a probe must not wait the
    # pool's timeout for a connection on every poll of the load balancer.
    now = [1000.0]
    monkeypatch.setattr(outage._state, "clock", lambda: now[0])
    outage.failed(OperationalError("connection refused"))

    with django_assert_num_queries(0):
        answer = Client().get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["database"] == "unavailable"
    assert answer.json()["error"]["code"] == "LOG_UNAVAILABLE"

    now[0] += outage.PROBE_SECONDS  # the probe's turn: it tries, finds the database back
    assert Client().get("/readyz").status_code == 200
    assert not outage.skip()
