"""The table of measures: every measure is read from events and summed by every projection.

Parametrized over ``MEASURES``: a new measure is tested end to end by its line in the table.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from usage import services, store
from usage.events import EventKind, UsageEvent, UsageRecord
from usage.measures import FIELDS, MEASURES, Measure, Totals, sum_totals, values_of
from usage.projection import redis_store

NOW = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)
SONNET = "claude-sonnet-4-5-20250929"


def an_event(input_tokens: int = 3) -> UsageEvent:
    record = UsageRecord(
        message_id="m",
        request_id="r",
        timestamp=NOW,
        model=SONNET,
        input_tokens=input_tokens,
        output_tokens=5,
        cache_creation_5m_tokens=7,
        cache_creation_1h_tokens=11,
        cache_read_tokens=13,
        session_id="s",
        project_path="/p",
        is_sidechain=False,
        host="h",
        web_search_requests=2,
    )
    return UsageEvent(EventKind.RECORDED, 1, 0, record, 17, True, NOW, web_search_cost_nanos=9)


def test_totals_follow_the_table_in_order() -> None:
    assert Totals._fields == tuple(measure.name for measure in MEASURES)


def test_every_measure_has_a_redis_field_of_its_own() -> None:
    assert len(set(FIELDS)) == len(FIELDS)
    assert all("|" not in field and field not in ("first", "last") for field in FIELDS)


def test_an_events_values_are_its_usage_by_measure() -> None:
    assert Totals._make(values_of(an_event())) == Totals(
        input_tokens=3,
        output_tokens=5,
        cache_creation_tokens=18,
        cache_read_tokens=13,
        messages=1,
        cost_nanos=17,
        web_search_requests=2,
        web_search_cost_nanos=9,
    )
    reported = an_event()._replace(record=an_event().record._replace(reported_cost_nanos=40))
    assert Totals._make(values_of(reported))[-2:] == (40, 17)  # Claude Code's cost, and ours


def test_events_sum_measure_by_measure_their_cost_priced_afresh() -> None:
    summed = sum_totals([an_event(), an_event(input_tokens=100)])

    # Sonnet 4.5, nanodollars per token: 3,000 input, 15,000 output, 3,750 5m write,
    # 6,000 1h write, 300 read; a web search 10,000,000. Not the 17 and 9 the events carry.
    searches = 2 * 10_000_000
    tokens = 5 * 15_000 + 7 * 3_750 + 11 * 6_000 + 13 * 300  # 171,150 beside the input
    assert summed == Totals(
        input_tokens=103,
        output_tokens=10,
        cache_creation_tokens=36,
        cache_read_tokens=26,
        messages=2,
        cost_nanos=(3 + 100) * 3_000 + 2 * tokens + 2 * searches,
        web_search_requests=4,
        web_search_cost_nanos=2 * searches,
    )
    assert sum_totals([]) == Totals()


def transcript_line(message_id: str, at: datetime, model: str) -> dict[str, object]:
    return {
        "timestamp": at.isoformat(),
        "sessionId": "session-1",
        "cwd": "/home/alice/api",
        "requestId": f"req_{message_id}",
        "message": {
            "id": message_id,
            "model": model,
            "usage": {
                "input_tokens": 3,
                "output_tokens": 5,
                "cache_creation_input_tokens": 18,
                "cache_creation": {"ephemeral_1h_input_tokens": 11},
                "cache_read_input_tokens": 13,
                "server_tool_use": {"web_search_requests": 2},
            },
        },
    }


@pytest.mark.django_db(transaction=True)
@override_settings(USAGE_RETENTION_HOURS=0)
@pytest.mark.parametrize("measure", MEASURES, ids=[measure.name for measure in MEASURES])
def test_every_projection_sums_the_measure(user: User, measure: Measure) -> None:
    lines = [
        transcript_line("a", NOW - timedelta(minutes=90), SONNET),
        transcript_line("b", NOW - timedelta(minutes=2), SONNET),
        transcript_line("c", NOW - timedelta(minutes=1), "claude-opus-4-1-20250805"),
    ]
    services.ingest_records(user_id=user.pk, records=lines, host="laptop", now=NOW)
    # A request from OpenTelemetry, with the cost Claude Code reported for it.
    reported = an_event().record._replace(
        message_id="otel:req_d",
        request_id="req_d",
        timestamp=NOW - timedelta(minutes=3),
        session_id="session-1",
        project_path="/home/alice/api",
        host="laptop",
        feed="otlp",
        reported_cost_nanos=123_456,
    )
    services.ingest_usage(user_id=user.pk, records=[reported], now=NOW)
    events = store.events_after(user.pk, 0)
    expected = getattr(sum_totals(events), measure.name)
    by_model = {
        model: getattr(sum_totals(e for e in events if e.record.model == model), measure.name)
        for model in {e.record.model for e in events}
    }

    totals, models = redis_store.totals(user.pk)
    day = int((NOW - timedelta(days=1)).timestamp()) // 3600 * 3600
    two_days = (day, day + 2 * 86_400)
    [(in_ranges, models_in_ranges)] = redis_store.sum_ranges(user.pk, [two_days], with_models=True)
    [(without_models, _)] = redis_store.sum_ranges(user.pk, [two_days])
    [project] = redis_store.projects(user.pk)
    [session] = redis_store.sessions(user.pk, project.project_id)
    [host] = redis_store.hosts(user.pk)

    assert expected  # every measure has something to sum here
    for found in (totals, in_ranges, without_models, project.totals, session.totals, host.totals):
        assert getattr(found, measure.name) == expected
    for per_model in (models, models_in_ranges):
        assert {name: getattr(t, measure.name) for name, t in per_model.items()} == by_model
