"""Parsing of Claude Code transcript lines: every record shape the logs hold, and every way a
line can be wrong. Pure: no database, no Redis."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from tests.conftest import sample_lines
from usage.events import (
    MAX_TOKENS_PER_FIELD,
    InvalidRecord,
    MalformedLine,
    UsageRecord,
    parse_record,
)

NOW = datetime(2025, 11, 1, 12, 0, tzinfo=UTC)
SECRET_TEXT = "the launch code is 0000"


def assistant_line(**overrides: Any) -> dict[str, Any]:
    """An assistant line as Claude Code 2.0 writes it (the reference's example)."""
    line: dict[str, Any] = {
        "parentUuid": "a-01",
        "isSidechain": False,
        "userType": "external",
        "cwd": "/home/dev/acme-api",
        "sessionId": "3f2c9a1e-0000-4000-8000-000000000001",
        "version": "2.0.29",
        "gitBranch": "main",
        "type": "assistant",
        "uuid": "a-02",
        "timestamp": "2025-11-01T09:12:09.115Z",
        "requestId": "req_011CUhXk9",
        "message": {
            "id": "msg_01Rws28Xg2tB",
            "model": "claude-sonnet-4-5-20250929",
            "role": "assistant",
            "content": [
                {"type": "text", "text": SECRET_TEXT},
                {"type": "tool_use", "name": "Read", "input": {"file_path": "/etc/secret"}},
            ],
            "stop_reason": "tool_use",
            "usage": {
                "input_tokens": 3,
                "cache_creation_input_tokens": 3117,
                "cache_read_input_tokens": 14723,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 3117,
                    "ephemeral_1h_input_tokens": 0,
                },
                "output_tokens": 412,
                "service_tier": "standard",
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                "speed": "standard",
            },
        },
    }
    line.update(overrides)
    return line


def with_usage(**usage: Any) -> dict[str, Any]:
    line = assistant_line()
    line["message"]["usage"].update(usage)
    return line


def without(path: str) -> dict[str, Any]:
    """An assistant line with the dotted ``path`` removed."""
    line = assistant_line()
    *parents, last = path.split(".")
    container = line
    for key in parents:
        container = container[key]
    del container[last]
    return line


def with_field(path: str, value: object) -> dict[str, Any]:
    line = assistant_line()
    *parents, last = path.split(".")
    container = line
    for key in parents:
        container = container[key]
    container[last] = value
    return line


def parse(raw: object) -> UsageRecord | None:
    return parse_record(raw, host="laptop", now=NOW)


def test_it_normalises_an_assistant_line_to_its_usage() -> None:
    record = parse(assistant_line())

    assert record == UsageRecord(
        message_id="msg_01Rws28Xg2tB",
        request_id="req_011CUhXk9",
        timestamp=datetime(2025, 11, 1, 9, 12, 9, 115000, tzinfo=UTC),
        model="claude-sonnet-4-5-20250929",
        input_tokens=3,
        output_tokens=412,
        cache_creation_5m_tokens=3117,
        cache_creation_1h_tokens=0,
        cache_read_tokens=14723,
        session_id="3f2c9a1e-0000-4000-8000-000000000001",
        project_path="/home/dev/acme-api",
        is_sidechain=False,
        host="laptop",
        speed="standard",
        service_tier="standard",
    )
    assert record.total_tokens == 3 + 412 + 3117 + 14723


def test_it_keeps_no_message_or_tool_text() -> None:
    record = parse(assistant_line())

    assert record is not None
    values = [str(value) for value in record._asdict().values()]
    assert not any(SECRET_TEXT in value or "/etc/secret" in value for value in values)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            {
                "type": "user",
                "timestamp": "2025-11-01T09:12:00.000Z",
                "sessionId": "s",
                "message": {"role": "user", "content": "fix the failing test"},
            },
            id="user prompt",
        ),
        pytest.param(
            {
                "type": "user",
                "timestamp": "2025-11-01T09:12:00.000Z",
                "message": {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}],
                },
            },
            id="tool result",
        ),
        pytest.param(
            {
                "type": "system",
                "subtype": "compact_boundary",
                "content": "Conversation compacted",
                "timestamp": "2025-11-01T09:12:00.000Z",
            },
            id="system",
        ),
        pytest.param(
            {"type": "summary", "summary": "Pagination for users endpoint", "leafUuid": "x"},
            id="summary without timestamp",
        ),
        pytest.param(
            {
                "type": "file-history-snapshot",
                "messageId": "m",
                "snapshot": {"trackedFileBackups": {}, "timestamp": "2025-11-01T09:12:00Z"},
                "isSnapshotUpdate": False,
            },
            id="file-history-snapshot",
        ),
        pytest.param(
            {"type": "queue-operation", "operation": "enqueue", "content": "later"},
            id="queue-operation",
        ),
        pytest.param(without("message.usage"), id="assistant line without usage"),
        pytest.param(with_field("message", "not an object"), id="message that is no object"),
        pytest.param({}, id="empty object"),
    ],
)
def test_it_skips_lines_that_carry_no_usage(line: dict[str, Any]) -> None:
    assert parse(line) is None


def test_it_parses_a_synthetic_record_with_no_request_id() -> None:
    line = assistant_line(isApiErrorMessage=True)
    del line["requestId"]
    line["message"] = {
        "id": "91e811d6-62f3-4846-928c-330dc8c2700b",
        "model": "<synthetic>",
        "role": "assistant",
        "content": [{"type": "text", "text": "API Error: Request was aborted."}],
        "usage": {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "server_tool_use": {"web_search_requests": 0},
            "service_tier": None,
        },
    }

    record = parse(line)

    assert record is not None
    assert (record.model, record.request_id, record.total_tokens) == ("<synthetic>", "", 0)


@pytest.mark.parametrize(
    ("usage", "expected_5m", "expected_1h"),
    [
        pytest.param({"cache_creation_input_tokens": 3000}, 3000, 0, id="no split: all 5m"),
        pytest.param(
            {
                "cache_creation_input_tokens": 3000,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 1000,
                    "ephemeral_1h_input_tokens": 2000,
                },
            },
            1000,
            2000,
            id="split",
        ),
        pytest.param(
            {
                "cache_creation_input_tokens": 3000,
                "cache_creation": {"ephemeral_1h_input_tokens": 3000},
            },
            0,
            3000,
            id="all 1h",
        ),
        pytest.param(
            {"cache_creation_input_tokens": 3000, "cache_creation": {}},
            3000,
            0,
            id="empty split",
        ),
        pytest.param(
            {
                "cache_creation_input_tokens": 100,
                "cache_creation": {"ephemeral_1h_input_tokens": 250},
            },
            0,
            100,
            id="1h never exceeds the total",
        ),
    ],
)
def test_it_splits_cache_writes_into_5m_and_1h(
    usage: dict[str, Any], expected_5m: int, expected_1h: int
) -> None:
    line = assistant_line()
    line["message"]["usage"] = {"input_tokens": 1, "output_tokens": 1, **usage}

    record = parse(line)

    assert record is not None
    assert (record.cache_creation_5m_tokens, record.cache_creation_1h_tokens) == (
        expected_5m,
        expected_1h,
    )
    assert record.cache_creation_tokens == usage["cache_creation_input_tokens"]


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2025-11-01T09:12:09.115Z", datetime(2025, 11, 1, 9, 12, 9, 115000, tzinfo=UTC)),
        ("2025-11-01T11:12:09+02:00", datetime(2025, 11, 1, 9, 12, 9, tzinfo=UTC)),
        ("2025-11-01T09:12:09", datetime(2025, 11, 1, 9, 12, 9, tzinfo=UTC)),
        ("2025-11-02T11:59:59Z", datetime(2025, 11, 2, 11, 59, 59, tzinfo=UTC)),
    ],
)
def test_it_reads_timestamps_as_utc(timestamp: str, expected: datetime) -> None:
    record = parse(assistant_line(timestamp=timestamp))

    assert record is not None
    assert record.timestamp == expected
    assert record.timestamp.utcoffset() is not None


def test_it_takes_missing_optional_fields_as_empty() -> None:
    line = assistant_line()
    for key in ("sessionId", "cwd", "isSidechain", "requestId"):
        del line[key]
    line["message"]["usage"] = {"input_tokens": 5, "output_tokens": None}

    record = parse(line)

    assert record is not None
    assert (record.session_id, record.project_path, record.is_sidechain) == ("", "", False)
    assert (record.request_id, record.output_tokens, record.cache_read_tokens) == ("", 0, 0)


def test_it_accepts_the_largest_plausible_token_count() -> None:
    record = parse(with_usage(cache_read_input_tokens=MAX_TOKENS_PER_FIELD))

    assert record is not None
    assert record.cache_read_tokens == MAX_TOKENS_PER_FIELD


def test_it_keeps_what_the_price_depends_on_speed_tier_and_web_searches() -> None:
    record = parse(
        with_usage(
            speed="fast",
            service_tier="priority",
            server_tool_use={"web_search_requests": 2, "web_fetch_requests": 5},
        )
    )

    assert record is not None
    assert (record.speed, record.service_tier, record.web_search_requests) == (
        "fast",
        "priority",
        2,
    )


def test_a_line_without_them_is_a_standard_request_without_searches() -> None:
    line = assistant_line()
    for key in ("service_tier", "speed", "server_tool_use"):
        del line["message"]["usage"][key]
    record = parse(line)

    assert record is not None
    assert (record.speed, record.service_tier, record.web_search_requests) == ("", "", 0)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(with_usage(speed=7), "speed", id="speed not text"),
        pytest.param(with_usage(speed="f" * 33), "speed", id="huge speed"),
        pytest.param(with_usage(service_tier=["x"]), "service_tier", id="tier not text"),
        pytest.param(with_usage(server_tool_use=3), "server_tool_use", id="tools not an object"),
        pytest.param(
            with_usage(server_tool_use={"web_search_requests": -1}), "negative", id="-1 searches"
        ),
        pytest.param(
            with_usage(server_tool_use={"web_search_requests": "2"}),
            "whole number",
            id="searches as string",
        ),
        pytest.param(with_usage(speed="fa\x00st"), "NUL", id="NUL in speed"),
        pytest.param(MalformedLine("Line is not valid JSON"), "not valid JSON", id="broken JSON"),
        pytest.param("just a string", "JSON object", id="string"),
        pytest.param([assistant_line()], "JSON object", id="array"),
        pytest.param(42, "JSON object", id="number"),
        pytest.param(None, "JSON object", id="null"),
        pytest.param(with_field("message.usage", "lots"), "usage", id="usage not an object"),
        pytest.param(with_usage(input_tokens=-1), "negative", id="negative count"),
        pytest.param(
            with_usage(output_tokens=MAX_TOKENS_PER_FIELD + 1), "implausibly", id="absurd count"
        ),
        pytest.param(with_usage(output_tokens=2**63), "implausibly", id="64-bit count"),
        pytest.param(with_usage(input_tokens="12"), "whole number", id="count as string"),
        pytest.param(with_usage(input_tokens=1.5), "whole number", id="fractional count"),
        pytest.param(with_usage(input_tokens=True), "whole number", id="count as boolean"),
        pytest.param(with_usage(cache_creation=[1, 2]), "cache_creation", id="split not an object"),
        pytest.param(
            with_usage(cache_creation={"ephemeral_1h_input_tokens": -5}),
            "negative",
            id="negative 1h split",
        ),
        pytest.param(without("timestamp"), "timestamp", id="missing timestamp"),
        pytest.param(assistant_line(timestamp=""), "timestamp", id="empty timestamp"),
        pytest.param(assistant_line(timestamp=1762000000), "timestamp", id="epoch timestamp"),
        pytest.param(assistant_line(timestamp="yesterday"), "ISO 8601", id="prose timestamp"),
        pytest.param(assistant_line(timestamp="2025-11-02T12:00:01Z"), "future", id="a day ahead"),
        pytest.param(without("message.id"), "message.id", id="missing message id"),
        pytest.param(with_field("message.id", 7), "message.id", id="numeric message id"),
        pytest.param(with_field("message.id", "m" * 256), "message.id", id="huge message id"),
        pytest.param(without("message.model"), "message.model", id="missing model"),
        pytest.param(with_field("message.model", ["x"]), "message.model", id="model not text"),
        pytest.param(assistant_line(requestId=12), "requestId", id="numeric request id"),
        pytest.param(assistant_line(sessionId={"id": 1}), "sessionId", id="session not text"),
        pytest.param(assistant_line(cwd=42), "cwd", id="cwd not text"),
        pytest.param(assistant_line(cwd="/" + "d" * 1024), "cwd", id="huge cwd"),
        pytest.param(assistant_line(isSidechain="false"), "isSidechain", id="flag as string"),
    ],
)
def test_it_rejects_a_malformed_usage_record_with_a_reason(raw: object, reason: str) -> None:
    with pytest.raises(InvalidRecord) as raised:
        parse(raw)

    assert raised.value.code == "VALIDATION_ERROR"
    assert reason in raised.value.message


def test_it_does_not_modify_the_line_it_reads() -> None:
    line = assistant_line()
    before = copy.deepcopy(line)

    parse(line)

    assert line == before


def test_every_sample_line_is_a_usage_record_a_skipped_line_or_a_rejection() -> None:
    """The sample tree has 403 distinct messages (ccusage's entries), several copies of most,
    prompts, summaries, a system line and three broken lines."""
    parsed: list[UsageRecord] = []
    skipped = rejected = 0
    for line in sample_lines():
        try:
            raw: object = orjson.loads(line)
        except orjson.JSONDecodeError:
            raw = MalformedLine("Line is not valid JSON")
        try:
            record = parse_record(raw, host="h", now=datetime(2025, 10, 6, tzinfo=UTC))
        except InvalidRecord:
            rejected += 1
            continue
        if record is None:
            skipped += 1
        else:
            parsed.append(record)

    assert len({(r.message_id, r.request_id) for r in parsed}) == 403
    assert rejected == 3
    assert skipped + rejected + len(parsed) == len(sample_lines())
    assert sum(r.model == "<synthetic>" for r in parsed) == 3
