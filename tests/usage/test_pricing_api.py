"""Issue 13 through the API: fast mode, the long-context tier and web searches in every cost
the server reports, the searches as figures of their own, and ``GET pricing/``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from tests.conftest import Clock
from tests.usage.test_read_api import openapi, response_schema, undocumented
from usage import pricing

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("retain_all")]

API = "/app/claude-usage/"
NOW = datetime(2026, 10, 5, 22, 0, tzinfo=UTC)


@pytest.fixture
def retain_all() -> Any:
    with override_settings(USAGE_RETENTION_HOURS=0):
        yield


def line(message_id: str, model: str, minutes_ago: int, **usage: Any) -> dict[str, object]:
    return {
        "type": "assistant",
        "timestamp": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "sessionId": "session-1",
        "cwd": "/home/alice/api",
        "requestId": f"req_{message_id}",
        "message": {"id": message_id, "model": model, "usage": usage},
    }


LINES = [
    # Opus 4.6 fast: 6 x (1,000 x 5,000 + 1,000 x 25,000) = 180,000,000 nanodollars.
    line("fast", "claude-opus-4-6", 30, input_tokens=1_000, output_tokens=1_000, speed="fast"),
    # Sonnet 4.5 with 2 searches: 1,000 x 3,000 + 2 x 10,000,000 = 23,000,000.
    line(
        "search",
        "claude-sonnet-4-5-20250929",
        20,
        input_tokens=1_000,
        server_tool_use={"web_search_requests": 2},
    ),
    # Sonnet 4 above 200K: 250,000 x 6,000 + 1,000 x 22,500 = 1,522,500,000.
    line("long", "claude-sonnet-4-20250514", 10, input_tokens=250_000, output_tokens=1_000),
    line("unknown", "claude-unknown-9", 5, input_tokens=1_000),
    line("synthetic", "<synthetic>", 4, input_tokens=0),
]
FAST, SEARCH, LONG = 180_000_000, 23_000_000, 1_522_500_000


@pytest.fixture
def sent(api: APIClient, clock: Clock) -> dict[str, Any]:
    clock.now = NOW
    answer = api.post(f"{API}events/", {"records": LINES}, format="json")
    assert answer.status_code == 200, answer.content
    body: dict[str, Any] = answer.json()
    return body


def get(api: APIClient, path: str, **params: Any) -> Any:
    response = api.get(f"{API}{path}", params)
    assert response.status_code == 200, response.content
    return response.json()


def usd(nanos: int) -> float:
    return round(nanos / 1e9, 6)


def test_every_cost_includes_fast_mode_the_long_context_tier_and_web_searches(
    api: APIClient, sent: dict[str, Any]
) -> None:
    assert sent["unpriced_models"] == ["claude-unknown-9"]
    stats = get(api, "stats/")
    dashboard = get(api, "dashboard/", hours=1)
    [project] = get(api, "projects/")["projects"]
    [session] = get(api, "projects/api/sessions/")["sessions"]

    total = usd(FAST + SEARCH + LONG)  # $1.7255; the unknown model adds nothing, flagged
    assert stats["total_cost_usd"] == total
    assert dashboard["summary"]["total_cost_usd"] == total
    assert project["total_cost"] == total
    assert session["total_cost"] == total
    by_model = {m["model"]: m["cost_usd"] for m in dashboard["model_distribution"]}
    assert by_model == {
        "claude-opus-4-6": usd(FAST),
        "claude-sonnet-4-5-20250929": usd(SEARCH),
        "claude-sonnet-4-20250514": usd(LONG),
        "claude-unknown-9": 0.0,
    }
    assert stats["unpriced_models"] == ["claude-unknown-9"]


def test_web_searches_are_figures_of_their_own_beside_the_token_costs(
    api: APIClient, sent: dict[str, Any]
) -> None:
    stats = get(api, "stats/")
    summary = get(api, "dashboard/", hours=1)["summary"]
    [project] = get(api, "projects/")["projects"]
    [session] = get(api, "projects/api/sessions/")["sessions"]
    points = get(api, "timeseries/", hours=1, interval="15min")["data_points"]
    models = get(api, "dashboard/", hours=1)["model_distribution"]

    assert (stats["total_web_search_requests"], stats["total_web_search_cost_usd"]) == (2, 0.02)
    for figures in (summary, project, session):
        assert (figures["web_search_requests"], figures["web_search_cost_usd"]) == (2, 0.02)
    assert sum(point["web_search_requests"] for point in points) == 2
    searched = {m["model"]: m["web_search_requests"] for m in models if m["web_search_requests"]}
    assert searched == {"claude-sonnet-4-5-20250929": 2}
    # No token count changes: the searches are not tokens.
    assert stats["total_tokens"] == 2_000 + 1_000 + 251_000 + 1_000


def test_pricing_lists_the_rates_in_force_for_each_model_with_their_sources(
    api: APIClient, sent: dict[str, Any]
) -> None:
    listed = get(api, "pricing/")
    models = {entry["model"]: entry for entry in listed["models"]}

    assert listed["date"] == "2026-10-05"
    assert listed["price_data"] == {
        "genai_prices": "0.2.3",
        "overlays": ["overlay 2026-12-07.1"],
        "fingerprint": pricing.price_data().fingerprint,
    }
    assert sorted(models) == [
        "claude-opus-4-6",
        "claude-sonnet-4-20250514",
        "claude-sonnet-4-5-20250929",
        "claude-unknown-9",
    ]  # <synthetic> is no model
    assert listed["count"] == 4
    assert models["claude-unknown-9"]["priced"] is False
    assert models["claude-unknown-9"]["standard"] is None

    sonnet_4 = models["claude-sonnet-4-20250514"]
    assert sonnet_4["known_as"] == "claude-sonnet-4-0"
    assert sonnet_4["standard"] == {
        "input": 3.0,
        "output": 15.0,
        "cache_write_5m": 3.75,
        "cache_write_1h": 6.0,
        "cache_read": 0.3,
        "source": "genai-prices 0.2.3 (claude-sonnet-4-0)",
    }
    long_context = sonnet_4["long_context"]
    assert long_context["above_input_tokens"] == 200_000
    assert (long_context["input"], long_context["output"]) == (6.0, 22.5)
    assert long_context["source"].startswith(
        "overlay 2026-12-07.1: https://platform.claude.com/docs/en/about-claude/pricing"
    )
    assert sonnet_4["web_search"] == {
        "usd_per_1000": 10.0,
        "source": "genai-prices 0.2.3 (claude-sonnet-4-0)",
    }

    fast = models["claude-opus-4-6"]["fast"]
    assert fast["multiplier"] == 6.0
    assert (fast["input"], fast["output"], fast["cache_write_1h"]) == (30.0, 150.0, 60.0)
    assert fast["long_context"] is None  # no long-context tier on 2026-10-05
    assert fast["source"].startswith("overlay 2026-12-07.1: https://platform.claude.com/")


def test_pricing_on_another_day_lists_that_days_rates(api: APIClient, sent: dict[str, Any]) -> None:
    listed = get(api, "pricing/", date="2026-02-20")
    opus = {entry["model"]: entry for entry in listed["models"]}["claude-opus-4-6"]

    assert listed["date"] == "2026-02-20"
    assert opus["long_context"]["input"] == 10.0
    # Fast above 200K: 6 x $10 = $60 input, 6 x $37.50 = $225 output.
    assert (opus["fast"]["long_context"]["input"], opus["fast"]["long_context"]["output"]) == (
        60.0,
        225.0,
    )


@pytest.mark.parametrize("day", ["yesterday", "2026-13-01", "1999-12-31", "9999-01-01"])
def test_a_bad_day_is_a_400_with_the_error_envelope(api: APIClient, clock: Clock, day: str) -> None:
    response = api.get(f"{API}pricing/", {"date": day})

    assert response.status_code == 400
    assert set(response.json()["error"]) >= {"code", "message"}


def test_pricing_needs_a_token() -> None:
    response = APIClient().get(f"{API}pricing/")

    assert response.status_code == 401
    assert set(response.json()["error"]) >= {"code", "message"}


def test_pricing_of_a_user_without_data_lists_no_model(api: APIClient, clock: Clock) -> None:
    listed = get(api, "pricing/")

    assert (listed["models"], listed["count"]) == ([], 0)


def test_every_field_of_the_price_list_is_described_in_the_schema(
    api: APIClient, sent: dict[str, Any]
) -> None:
    schema = openapi()
    described = response_schema(schema, "pricing/")
    answers = [get(api, "pricing/"), get(api, "pricing/", date="2026-02-20")]

    problems = [p for answer in answers for p in undocumented(schema, described, answer, "")]

    assert problems == []
