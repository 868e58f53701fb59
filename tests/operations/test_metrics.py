"""``/metrics`` in one process (the suite's): each metric is there, and moves with what the
server did. Counters are the process's since it started, so every test compares a scrape
after with one before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import Settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from realtime.hub import Hub
from realtime.routing import build_websocket_application
from tests.conftest import Clock
from tests.operations.scrape import names, value
from tests.operations.test_health import dead_redis
from tests.realtime.communicators import dashboard, next_frame
from tests.usage.test_ingest_api import line
from usage.projection import projector

pytestmark = [pytest.mark.django_db(transaction=True)]

EVENTS = "/app/claude-usage/events/"
INGESTED = "claude_usage_ingested_records_total"
REJECTED = "claude_usage_rejected_records_total"
LATENCY_COUNT = "claude_usage_http_request_duration_seconds_count"


def scrape() -> str:
    answer = Client().get("/metrics")
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"].startswith("text/plain")
    return answer.content.decode()


@pytest.fixture
def unreachable_redis(settings: Settings) -> Iterator[None]:
    reachable, settings.REDIS_URL = settings.REDIS_URL, dead_redis()
    yield
    settings.REDIS_URL = reachable


def test_every_named_metric_is_exposed(api: APIClient, clock: Clock) -> None:
    api.post(EVENTS, {"records": [line()]}, format="json")
    projector.record_lag(now=clock.now.timestamp())

    exposed = names(scrape())

    assert {
        "claude_usage_ingested_records",
        "claude_usage_rejected_records",
        "claude_usage_dependency_errors",
        "claude_usage_websocket_connections",
        "claude_usage_http_request_duration_seconds",
        "claude_usage_projection_lag_positions",
        "claude_usage_projection_lag_users",
        "claude_usage_projection_lag_measured_timestamp_seconds",
    } <= exposed


def test_an_ingest_moves_the_record_counts_and_one_rejection_by_its_reason(
    api: APIClient, clock: Clock
) -> None:
    records = [line("msg_a", "req_a"), line("msg_b", "req_b"), line("msg_a", "req_a"), 42]
    before = scrape()

    answer = api.post(EVENTS, {"records": records}, format="json").json()
    after = scrape()

    assert answer["rejected"][0]["error"]["code"] == "VALIDATION_ERROR"
    moved = {
        outcome: value(after, INGESTED, outcome=outcome) - value(before, INGESTED, outcome=outcome)
        for outcome in ("accepted", "duplicate", "skipped", "expired", "rejected")
    }
    assert moved == {"accepted": 2, "duplicate": 1, "skipped": 0, "expired": 0, "rejected": 1}
    rejected = value(after, REJECTED, reason="VALIDATION_ERROR")
    assert rejected - value(before, REJECTED, reason="VALIDATION_ERROR") == 1


def test_latency_is_labelled_by_the_url_pattern_never_the_path(api: APIClient) -> None:
    route = "app/claude-usage/projects/<str:project_name>/"
    before = scrape()

    api.get("/app/claude-usage/projects/secret-client-project/")
    after = scrape()

    labels = {"route": route, "method": "GET", "status": "4xx"}  # no such project: 404
    assert value(after, LATENCY_COUNT, **labels) - value(before, LATENCY_COUNT, **labels) == 1
    assert "secret-client-project" not in after


def test_unknown_methods_and_paths_share_one_label_each() -> None:
    before = scrape()

    Client().generic("BREW", "/no/such/path/1")
    Client().generic("BREW", "/no/such/path/2")
    after = scrape()

    labels = {"route": "<unmatched>", "method": "other", "status": "4xx"}
    assert value(after, LATENCY_COUNT, **labels) - value(before, LATENCY_COUNT, **labels) == 2
    assert "BREW" not in after
    assert "/no/such/path" not in after


def test_no_token_ever_appears_in_the_metrics(api: APIClient, user: User, clock: Clock) -> None:
    token = Token.objects.get(user=user).key
    api.post(EVENTS, {"records": [line()]}, format="json")
    api.get(f"/app/claude-usage/stats/?token={token}")

    text = scrape()

    assert token not in text
    assert user.username not in text


@pytest.mark.usefixtures("unreachable_redis")
def test_a_503_for_an_unreachable_redis_counts_a_redis_error(api: APIClient) -> None:
    before = scrape()

    answer = api.get("/app/claude-usage/stats/")
    after = scrape()

    assert answer.status_code == 503
    name = "claude_usage_dependency_errors_total"
    assert value(after, name, dependency="redis") - value(before, name, dependency="redis") == 1
    assert value(after, name, dependency="database") == value(before, name, dependency="database")


def test_the_projection_lag_the_worker_recorded_is_exposed(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    projected = api.post(EVENTS, {"records": [line("msg_a", "req_a")]}, format="json")
    reachable, settings.REDIS_URL = settings.REDIS_URL, dead_redis()
    later = api.post(EVENTS, {"records": [line("msg_b", "req_b")]}, format="json")
    settings.REDIS_URL = reachable
    measured_at = datetime(2025, 10, 5, 22, 1, tzinfo=UTC).timestamp()
    projector.record_lag(now=measured_at)

    text = scrape()

    lag = later.json()["position"] - projected.json()["position"]
    assert value(text, "claude_usage_projection_lag_positions") == lag
    assert value(text, "claude_usage_projection_lag_users") == 1
    assert value(text, "claude_usage_projection_lag_measured_timestamp_seconds") == measured_at


@pytest.mark.usefixtures("isolated_channel_layer")
async def test_open_websockets_are_a_gauge_that_goes_back_down(
    api: APIClient, user: User, clock: Clock
) -> None:
    from asgiref.sync import sync_to_async

    token = await sync_to_async(lambda: Token.objects.get(user=user).key)()
    app = build_websocket_application(hub=Hub(), clock=clock)
    gauge = "claude_usage_websocket_connections"
    before = value(await sync_to_async(scrape)(), gauge)

    async with dashboard(app, f"/ws/claude-usage/?token={token}") as websocket:
        await next_frame(websocket)
        during = value(await sync_to_async(scrape)(), gauge)
    after = value(await sync_to_async(scrape)(), gauge)

    assert (during - before, after - before) == (1, 0)
