"""A request counts once across feeds (issue 16): the agent's transcript records and Claude
Code's OpenTelemetry events of the same requests, in either order, in one batch or many,
give the agent-only totals; the cost Claude Code reported stays beside ours. Real store
(SQLite and PostgreSQL) and real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient

from otlp_feed.api_requests import parse_api_request
from tests.conftest import client_for, sample_lines
from tests.usage.projection_dump import dump_projection
from usage import services, store, wire
from usage.events import UsageEvent, UsageRecord, newest_revisions
from usage.measures import Totals
from usage.projection import projector, redis_store

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _keep_every_event() -> Iterator[None]:
    with override_settings(USAGE_RETENTION_HOURS=0):  # the samples are older than 30 days
        yield


NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
Ingest = Callable[[int], object]


def transcript_lines() -> list[object]:
    return [wire.read_line(line) for line in sample_lines()]  # as the NDJSON feed reads them


def ingest_transcript(user_id: int, lines: list[object] | None = None) -> None:
    records = transcript_lines() if lines is None else lines
    services.ingest_records(user_id=user_id, records=records, host="laptop", now=NOW)


def counted_events(user_id: int) -> list[UsageEvent]:
    return [e for e in newest_revisions(store.events_after(user_id, 0, limit=100_000)) if e.counted]


def otlp_copies(events: list[UsageEvent]) -> list[UsageRecord]:
    """What Claude Code's OpenTelemetry export sends for the requests of ``events``: one
    api_request event each, with the cost Claude Code reported (ours plus a little, as a
    stale price table would say)."""
    return [
        parse_api_request(
            {
                "event.name": "api_request",
                "event.timestamp": event.record.timestamp.isoformat(),
                "event.sequence": number,
                "session.id": event.record.session_id,
                "request_id": event.record.request_id,
                "model": event.record.model,
                "input_tokens": event.record.input_tokens,
                "output_tokens": event.record.output_tokens,
                "cache_read_tokens": event.record.cache_read_tokens,
                "cache_creation_tokens": event.record.cache_creation_tokens,
                "cost_usd": (event.cost_nanos + 1_000) / 1e9,
            },
            time_unix_nano=0,
            host="laptop",
            now=NOW,
        )
        for number, event in enumerate(events)
        if event.record.request_id
    ]


def usage_totals(user_id: int) -> tuple[Totals, dict[str, Totals]]:
    """The projection's totals and per-model totals, without the reported-cost comparison."""
    totals, models = redis_store.totals(user_id)

    def usage(sums: Totals) -> Totals:
        return sums._replace(reported_cost_nanos=0, compared_cost_nanos=0)

    return usage(totals), {model: usage(sums) for model, sums in models.items()}


@pytest.fixture
def agent_only(other_user: User) -> tuple[Totals, dict[str, Totals], list[UsageRecord]]:
    """The agent-only totals of the samples, and the OpenTelemetry copies of their requests."""
    ingest_transcript(other_user.pk)
    copies = otlp_copies(counted_events(other_user.pk))
    assert len(copies) > 300  # most sample requests have a request id
    return (*usage_totals(other_user.pk), copies)


@pytest.mark.parametrize("batch_size", [10_000, 37], ids=["one batch", "batches of 37"])
@pytest.mark.parametrize("first", ["agent", "opentelemetry"])
def test_the_same_requests_from_both_feeds_give_the_agent_only_totals(
    user: User,
    agent_only: tuple[Totals, dict[str, Totals], list[UsageRecord]],
    first: str,
    batch_size: int,
) -> None:
    totals, models, copies = agent_only
    lines = transcript_lines()

    def from_agent() -> None:
        for start in range(0, len(lines), batch_size):
            ingest_transcript(user.pk, lines[start : start + batch_size])

    def from_opentelemetry() -> None:
        for start in range(0, len(copies), batch_size):
            part = copies[start : start + batch_size]
            services.ingest_usage(user_id=user.pk, records=part, now=NOW)

    feeds = [from_agent, from_opentelemetry]
    for feed in feeds if first == "agent" else reversed(feeds):
        feed()

    assert usage_totals(user.pk) == (totals, models)
    reported, _ = redis_store.totals(user.pk)
    assert reported.reported_cost_nanos == sum(copy.reported_cost_nanos or 0 for copy in copies)
    assert reported.reported_cost_nanos - reported.compared_cost_nanos == 1_000 * len(copies)
    live = dump_projection(user.pk)
    projector.rebuild_user(user.pk)
    assert dump_projection(user.pk) == live  # applying events one by one = rebuilding


def test_requests_only_opentelemetry_saw_are_counted_beside_the_agents(
    user: User, agent_only: tuple[Totals, dict[str, Totals], list[UsageRecord]]
) -> None:
    totals, _, copies = agent_only
    extra = copies[0]._replace(message_id="otel:req_only_otel", request_id="req_only_otel")

    ingest_transcript(user.pk)
    result = services.ingest_usage(user_id=user.pk, records=[*copies, extra], now=NOW)

    assert (result.accepted, result.duplicates) == (1 + len(copies), 0)  # each adds its cost
    after, _ = usage_totals(user.pk)
    assert after.messages == totals.messages + 1
    assert after.total_tokens == totals.total_tokens + extra.total_tokens


def test_an_exporters_retry_adds_nothing(
    user: User, agent_only: tuple[Totals, dict[str, Totals], list[UsageRecord]]
) -> None:
    _, _, copies = agent_only
    services.ingest_usage(user_id=user.pk, records=copies, now=NOW)
    before = redis_store.totals(user.pk)

    result = services.ingest_usage(user_id=user.pk, records=copies, now=NOW)

    assert (result.accepted, result.duplicates) == (0, len(copies))
    assert redis_store.totals(user.pk) == before


def test_pricing_shows_claude_codes_reported_cost_beside_ours_per_model(
    user: User,
    other_user: User,
    api: APIClient,
    agent_only: tuple[Totals, dict[str, Totals], list[UsageRecord]],
) -> None:
    _, _, copies = agent_only
    ingest_transcript(user.pk)
    services.ingest_usage(user_id=user.pk, records=copies, now=NOW)

    models = api.get("/app/claude-usage/pricing/").json()["models"]

    reported = {entry["model"]: entry["reported_by_claude_code"] for entry in models}
    for model in {copy.model for copy in copies}:
        sent = [copy for copy in copies if copy.model == model]
        figures = reported[model]
        assert figures["reported_cost_usd"] == round(
            sum(copy.reported_cost_nanos or 0 for copy in sent) / 1e9, 6
        )
        assert figures["difference_usd"] == pytest.approx(1_000 * len(sent) / 1e9, abs=2e-6)
    assert set(reported) == {copy.model for copy in copies}
    agent_only_models = client_for(other_user).get("/app/claude-usage/pricing/").json()["models"]
    assert [entry["reported_by_claude_code"] for entry in agent_only_models] == [None] * 4
