"""The cross-feed test against the real server (issue 16): the agent ships the sample tree
and Claude Code's OpenTelemetry export (the SDK's own exporter) sends an api_request event
for each of the same requests, in both orders; the totals are the agent-only ones (ccusage's
figures for the tree), and Claude Code's reported cost sits beside ours in pricing/."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult

from tests.agent import conftest as fixtures
from tests.agent.conftest import UsageServer, requires_live_server
from tests.agent.test_live_server import CCUSAGE_SAMPLE_TOTALS, Agent, stats
from tests.conftest import sample_lines
from tests.otlp_feed.events import api_request_attributes, log_record
from tests.support import samples
from usage.dedupe import decide
from usage.events import EventKind, InvalidRecord, UsageRecord, parse_record
from usage.pricing import price

# Imported rather than found in conftest.py, as tests/agent/test_live_server.py does.
migrated_database = fixtures.migrated_database
usage_server_process = fixtures.usage_server_process
usage_server = fixtures.usage_server

pytestmark = [requires_live_server, pytest.mark.slow]

TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed
OVERSTATED_NANOS = 1_000  # Claude Code's reported cost of each request: ours plus this
BATCH = 512  # what the SDK's BatchLogRecordProcessor sends at most at once


def counted_sample_requests() -> list[UsageRecord]:
    """The copy of each sample request that counts (as the server's own dedupe decides)."""
    now = datetime.now(tz=UTC)
    records = []
    for line in sample_lines():
        try:
            record = parse_record(orjson.loads(line), host="it-host", now=now)
        except (InvalidRecord, orjson.JSONDecodeError):
            continue
        if record is not None:
            records.append(record)
    latest: dict[tuple[str, str], UsageRecord | None] = {}
    for decision in decide(records, []).decisions:
        key = (decision.record.message_id, decision.record.request_id)
        latest[key] = None if decision.kind is EventKind.RETRACTED else decision.record
    return [record for record in latest.values() if record is not None and record.request_id]


def api_request_events(requests: list[UsageRecord]) -> list[ReadableLogRecord]:
    """What Claude Code's OpenTelemetry export sends for ``requests``: one event each, the
    cache writes unsplit, and a reported cost a little above ours."""
    events = []
    for number, request in enumerate(requests):
        cost = price(request.model, request, request.timestamp)
        ours = 0 if cost is None else cost.total_nanos
        attributes = api_request_attributes(
            at=request.timestamp,
            request_id=request.request_id,
            session=request.session_id,
            sequence=number,
            model=request.model,
            input_tokens=request.input_tokens,
            output_tokens=request.output_tokens,
            cache_read=request.cache_read_tokens,
            cache_creation=request.cache_creation_tokens,
            cost_usd=(ours + OVERSTATED_NANOS) / 1e9,
        )
        events.append(log_record(attributes, host="it-host", traced=False))
    return events


def export(server: UsageServer, events: list[ReadableLogRecord]) -> None:
    sender = OTLPLogExporter(
        endpoint=f"{server.url}/v1/logs",
        headers={"Authorization": f"Token {server.token}"},
        timeout=TIMEOUT,
    )
    for start in range(0, len(events), BATCH):
        assert sender.export(events[start : start + BATCH]) == LogRecordExportResult.SUCCESS


def pricing(server: UsageServer) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{server.url}/app/claude-usage/pricing/",
        headers={"Authorization": f"Token {server.token}"},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    models: list[dict[str, Any]] = answer.json()["models"]
    return models


@pytest.fixture
def agent(usage_server: UsageServer, tmp_path: Path) -> Agent:
    config = tmp_path / "claude"
    shutil.copytree(samples("claude-config", "projects"), config / "projects")
    return Agent(usage_server, config, tmp_path / "state" / "agent-state.json")


@pytest.mark.parametrize("first", ["agent", "opentelemetry"])
def test_the_agent_and_claude_codes_export_of_the_same_requests_count_once(
    agent: Agent, first: str
) -> None:
    requests = counted_sample_requests()
    events = api_request_events(requests)
    assert len(events) > 300  # nearly every sample request has a request id

    if first == "agent":
        agent.sync()
        export(agent.server, events)
    else:
        export(agent.server, events)
        agent.sync()

    current = stats(agent.server)
    assert current is not None
    assert {name: current[name] for name in CCUSAGE_SAMPLE_TOTALS} == CCUSAGE_SAMPLE_TOTALS
    assert current["total_messages"] == 403  # the agent-only count (400 priced + 3 synthetic)
    reported = {entry["model"]: entry["reported_by_claude_code"] for entry in pricing(agent.server)}
    for model in {request.model for request in requests}:
        sent = sum(1 for request in requests if request.model == model)
        difference = reported[model]["difference_usd"]
        assert difference == pytest.approx(sent * OVERSTATED_NANOS / 1e9, abs=2e-6), model
