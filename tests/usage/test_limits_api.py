"""``POST limits/``: Claude's official rate-limit readings, as the statusline forwards them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.conftest import Clock

pytestmark = pytest.mark.django_db

URL = "/app/claude-usage/limits/"


def reading(clock: Clock, **extra: Any) -> dict[str, Any]:
    resets_at = clock.now + timedelta(hours=2)
    return {"five_hour": {"used_percentage": 42.0, "resets_at": resets_at.timestamp()}, **extra}


def official_host(api: APIClient) -> str:
    official = api.get("/app/claude-usage/dashboard/").json()["rate_limit"]["official"]
    return str(official["host"])


def test_a_reading_becomes_the_dashboards_official_figures(api: APIClient, clock: Clock) -> None:
    answer = api.post(URL, reading(clock), format="json")

    assert answer.json() == {"saved": True}
    rate_limit = api.get("/app/claude-usage/dashboard/").json()["rate_limit"]
    assert rate_limit["source"] == "official"
    assert rate_limit["used_percentage"] == 42.0


def test_the_host_header_names_the_machine_over_the_bodys_host(
    api: APIClient, clock: Clock
) -> None:
    api.post(URL, reading(clock, host="from-body"), format="json", HTTP_X_USAGE_HOST="laptop")

    assert official_host(api) == "laptop"


def test_without_a_header_the_bodys_host_names_the_machine(api: APIClient, clock: Clock) -> None:
    api.post(URL, reading(clock, host="from-body"), format="json")

    assert official_host(api) == "from-body"


def test_without_either_the_machine_is_unknown(api: APIClient, clock: Clock) -> None:
    api.post(URL, reading(clock), format="json")

    assert official_host(api) == "unknown"


@pytest.mark.parametrize(
    ("header", "body"), [("h" * 256, None), (None, "h" * 256)], ids=["header", "body"]
)
def test_a_host_name_over_255_characters_is_a_400_and_nothing_is_saved(
    api: APIClient, clock: Clock, header: str | None, body: str | None
) -> None:
    payload = reading(clock, **({"host": body} if body else {}))

    if header:
        answer = api.post(URL, payload, format="json", HTTP_X_USAGE_HOST=header)
    else:
        answer = api.post(URL, payload, format="json")

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "255" in answer.json()["error"]["message"]
    assert api.get("/app/claude-usage/dashboard/").json()["rate_limit"]["official"] is None


def test_an_older_reading_than_the_stored_one_is_not_saved(api: APIClient, clock: Clock) -> None:
    now = clock.now
    newer = reading(clock, observed_at=(now - timedelta(minutes=1)).timestamp(), host="new")
    older = reading(clock, observed_at=(now - timedelta(minutes=5)).timestamp(), host="old")

    assert api.post(URL, newer, format="json").json() == {"saved": True}
    assert api.post(URL, older, format="json").json() == {"saved": False}
    assert official_host(api) == "new"
