"""A machine whose clock runs ahead cannot take over the 5-hour window: a record more than
five minutes ahead of the server's clock counts at the server's time, and the answer says
so; one more than a day ahead is rejected."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.conftest import Clock
from tests.usage.test_ingest_api import ingest, line
from usage.models import LoggedEvent

pytestmark = [pytest.mark.django_db(transaction=True)]

DASHBOARD = "/app/claude-usage/dashboard/"
SCHEMA = "/app/claude-usage/schema/?format=json"
# The clock fixture's now is 2025-10-05T22:00Z.
NOW = "2025-10-05T22:00:00+00:00"
AN_HOUR_AGO = "2025-10-05T21:00:00Z"
THREE_HOURS_AHEAD = "2025-10-06T01:00:00Z"
# Past the end of the window that 21:00 opened (02:00): the record would open its own.
TEN_HOURS_AHEAD = "2025-10-06T08:00:00Z"


def rate_limit(api: APIClient) -> dict[str, Any]:
    response = api.get(DASHBOARD, {"window_align": "hour"})
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()["rate_limit"]
    return answer


def test_a_record_hours_ahead_counts_now_and_the_answer_says_so(
    api: APIClient, clock: Clock
) -> None:
    answer = ingest(api, line("msg_01", at=AN_HOUR_AGO), line("msg_02", at=THREE_HOURS_AHEAD))

    assert answer["accepted"] == 2
    assert answer["rejected"] == []
    [clamped] = answer["clamped"]
    assert clamped["index"] == 1
    assert clamped["warning"]["code"] == "CLOCK_AHEAD"
    assert "10800 s ahead" in clamped["warning"]["message"]
    stored = LoggedEvent.objects.get(message_id="msg_02").occurred_at
    assert stored.isoformat() == NOW


def test_a_fast_clock_does_not_hide_the_current_window(api: APIClient, clock: Clock) -> None:
    ingest(api, line("msg_01", at=AN_HOUR_AGO), line("msg_02", at=TEN_HOURS_AHEAD))

    window = rate_limit(api)

    assert window["is_within_active_window"] is True
    assert window["current_window_start"] == "2025-10-05T21:00:00+00:00"
    assert window["limit_tokens_used"] == 2 * (10 + 100)


def test_a_record_a_few_minutes_ahead_is_kept_as_sent(api: APIClient, clock: Clock) -> None:
    answer = ingest(api, line(at="2025-10-05T22:04:59Z"))

    assert (answer["accepted"], answer["clamped"]) == (1, [])
    stored = LoggedEvent.objects.get().occurred_at
    assert stored.isoformat() == "2025-10-05T22:04:59+00:00"


def test_a_record_more_than_a_day_ahead_is_rejected(api: APIClient, clock: Clock) -> None:
    answer = ingest(api, line(at="2025-10-06T22:00:01Z"))

    assert answer["accepted"] == 0
    assert [r["index"] for r in answer["rejected"]] == [0]
    assert answer["clamped"] == []


def test_sending_a_clamped_record_again_later_is_a_duplicate(api: APIClient, clock: Clock) -> None:
    ingest(api, line(at=THREE_HOURS_AHEAD))
    clock.now = clock.now.replace(minute=30)

    again = ingest(api, line(at=THREE_HOURS_AHEAD))

    assert (again["accepted"], again["duplicates"]) == (0, 1)
    assert LoggedEvent.objects.count() == 1


def test_the_schema_documents_the_clamped_records(api: APIClient) -> None:
    schema = api.get(SCHEMA).json()
    answer = schema["paths"]["/app/claude-usage/events/"]["post"]["responses"]["200"]
    reference = answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]

    properties = schema["components"]["schemas"][reference]["properties"]

    assert "clamped" in properties
    assert {"accepted", "duplicates", "skipped", "expired", "rejected", "position"} <= set(
        properties
    )
