"""The outside reference: our numbers on the sample tree equal what ccusage 20.0.24 reports
(the figures in shared/samples/ccusage/*.json, read from the files, not copied here)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from tests.conftest import Clock, sample_lines
from tests.support import samples
from usage import services
from usage.completed_windows import Progress
from usage.models import CompletedWindow

pytestmark = [pytest.mark.django_db(transaction=True)]


def _ccusage(report: str) -> Any:
    return json.loads(samples("ccusage", f"ccusage_{report}.json").read_text())


def _ingest_samples(api: APIClient) -> dict[str, Any]:
    body = b"\n".join(sample_lines())
    response = api.post("/app/claude-usage/events/", body, content_type="application/x-ndjson")
    assert response.status_code == 200, response.content
    return response.json()  # type: ignore[no-any-return]


@override_settings(USAGE_RETENTION_HOURS=0)
def test_the_sample_totals_equal_ccusage_by_token_type_and_cost(
    api: APIClient, clock: Clock
) -> None:
    result = _ingest_samples(api)

    stats = api.get("/app/claude-usage/stats/").json()
    daily = _ccusage("daily")["totals"]
    assert result["accepted"] == 403
    assert stats["total_input_tokens"] == daily["inputTokens"]
    assert stats["total_output_tokens"] == daily["outputTokens"]
    assert stats["total_cache_creation_tokens"] == daily["cacheCreationTokens"]
    assert stats["total_cache_read_tokens"] == daily["cacheReadTokens"]
    assert stats["total_tokens"] == daily["totalTokens"]
    assert stats["total_cost_usd"] == pytest.approx(daily["totalCost"], abs=1e-6)
    assert stats["total_sessions"] == len(_ccusage("session")["sessions"])
    assert stats["total_messages"] == 403  # 400 priced + 3 <synthetic>, as ccusage's entries


@override_settings(USAGE_RETENTION_HOURS=0)
def test_the_sample_model_breakdown_equals_ccusage(api: APIClient, clock: Clock) -> None:
    _ingest_samples(api)
    clock.now = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)

    dashboard = api.get("/app/claude-usage/dashboard/?hours=7").json()

    expected: dict[str, dict[str, float]] = {}
    for day in _ccusage("daily")["daily"]:
        for breakdown in day["modelBreakdowns"]:
            model = expected.setdefault(breakdown["modelName"], {"tokens": 0, "cost": 0.0})
            model["tokens"] += (
                breakdown["inputTokens"]
                + breakdown["outputTokens"]
                + breakdown["cacheCreationTokens"]
                + breakdown["cacheReadTokens"]
            )
            model["cost"] += breakdown["cost"]
    ours = {m["model"]: m for m in dashboard["model_distribution"]}
    assert set(ours) == set(expected)  # <synthetic> is left out, as ccusage does
    for name, figures in expected.items():
        assert ours[name]["tokens"] == figures["tokens"]
        assert ours[name]["cost_usd"] == pytest.approx(figures["cost"], abs=1e-6)


@override_settings(USAGE_RETENTION_HOURS=0)
def test_the_sample_sessions_equal_ccusage(api: APIClient, clock: Clock) -> None:
    _ingest_samples(api)

    ours = {}
    for project in api.get("/app/claude-usage/projects/").json()["projects"]:
        detail = api.get(f"/app/claude-usage/projects/{project['name']}/").json()
        ours.update({s["session_id"]: s for s in detail["sessions"]})
    theirs = {s["sessionId"]: s for s in _ccusage("session")["sessions"]}
    assert set(ours) == set(theirs)
    for session_id, session in theirs.items():
        assert ours[session_id]["total_tokens"] == session["totalTokens"]
        assert ours[session_id]["total_cost"] == pytest.approx(session["totalCost"], abs=1e-6)


@override_settings(USAGE_RETENTION_HOURS=0)
def test_the_sample_five_hour_blocks_equal_ccusage(api: APIClient, clock: Clock, user) -> None:  # type: ignore[no-untyped-def]
    _ingest_samples(api)
    blocks = _ccusage("blocks")["blocks"]
    last = blocks[-1]
    clock.now = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)

    rate_limit = api.get("/app/claude-usage/dashboard/?window_align=hour").json()["rate_limit"]

    assert rate_limit["is_within_active_window"] is True
    assert rate_limit["current_window_start"] == _iso(last["startTime"])
    assert rate_limit["next_reset_at"] == _iso(last["endTime"])
    assert rate_limit["current_window_tokens"] == last["totalTokens"]
    counts = last["tokenCounts"]
    assert rate_limit["limit_tokens_used"] == counts["inputTokens"] + counts["outputTokens"]

    services.record_completed_windows(now=clock.now, since=Progress())
    first = blocks[0]
    window = CompletedWindow.objects.get(user=user, align="hour")
    assert window.start.isoformat() == _iso(first["startTime"])
    assert window.end.isoformat() == _iso(first["endTime"])
    assert window.total_tokens == first["totalTokens"]
    assert window.messages == first["entries"]
    assert window.cost_nanos / 1e9 == pytest.approx(first["costUSD"], abs=1e-6)


def _iso(ccusage_time: str) -> str:
    return datetime.fromisoformat(ccusage_time).astimezone(UTC).isoformat()
