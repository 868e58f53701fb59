"""Record slimming: usage-bearing lines only, and nothing of the conversation leaves the machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from claude_usage_agent.records import (
    MalformedLineError,
    describe_record,
    encode_record,
    is_older_than,
    might_carry_usage,
    parse_line,
    record_time,
    slim_record,
)

from .transcripts import SECRET, assistant_record, user_record


def test_it_keeps_ids_model_usage_and_the_envelope() -> None:
    record = assistant_record("msg_1", "req_1", timestamp="2025-10-05T20:13:17.059Z")
    record["costUSD"] = 0.12
    slim = slim_record(record)
    assert slim == {
        "type": "assistant",
        "timestamp": "2025-10-05T20:13:17.059Z",
        "sessionId": "session-1",
        "cwd": "/home/dev/acme-api",
        "isSidechain": False,
        "requestId": "req_1",
        "uuid": "uuid-msg_1-req_1",
        "version": "2.0.29",
        "gitBranch": "main",
        "costUSD": 0.12,
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "stop_reason": "end_turn",
            "usage": record["message"]["usage"],
        },
    }


def test_it_drops_every_piece_of_text() -> None:
    record = assistant_record("msg_1", "req_1")
    record["toolUseResult"] = {"stdout": SECRET}
    record["error"] = SECRET
    slim = slim_record(record)
    assert slim is not None
    assert SECRET not in encode_record(slim).decode()


@pytest.mark.parametrize(
    "record",
    [
        user_record(),
        {"type": "summary", "summary": "x"},
        {"type": "assistant", "message": {"id": "m", "usage": None}},
        {"type": "assistant", "message": {"id": "m", "usage": 12}},
        {"type": "assistant", "message": "not an object"},
    ],
)
def test_records_without_a_usage_object_are_not_sent(record: dict[str, object]) -> None:
    assert slim_record(record) is None


@pytest.mark.parametrize(
    "line",
    [b'{"type":"assistant","message":{"usage":', b"<<<<<<< HEAD", b'"just a string"', b"[1,2]"],
)
def test_malformed_lines_are_reported_as_such(line: bytes) -> None:
    with pytest.raises(MalformedLineError):
        parse_line(line)


def test_non_standard_constants_are_malformed_rather_than_forwarded() -> None:
    with pytest.raises(MalformedLineError):
        parse_line(b'{"message":{"usage":{"input_tokens":NaN}}}')


def test_invalid_utf8_is_malformed() -> None:
    with pytest.raises(MalformedLineError):
        parse_line(b'{"a":"\xff\xfe"}')


def test_the_prefilter_only_lets_usage_candidates_through() -> None:
    assert might_carry_usage(b'{"message":{"usage":{}}}')
    assert not might_carry_usage(json.dumps(user_record()).encode())


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2025-10-05T20:13:17.059Z", datetime(2025, 10, 5, 20, 13, 17, 59000, tzinfo=UTC)),
        ("2025-10-05T20:13:17", datetime(2025, 10, 5, 20, 13, 17, tzinfo=UTC)),
        ("yesterday", None),
        (None, None),
    ],
)
def test_it_reads_timestamps_as_aware_utc(stamp: str | None, expected: datetime | None) -> None:
    assert record_time({"timestamp": stamp}) == expected


def test_since_excludes_older_records_but_keeps_undated_ones() -> None:
    since = datetime(2025, 10, 5, 18, tzinfo=UTC)
    assert is_older_than({"timestamp": "2025-10-05T17:59:59Z"}, since)
    assert not is_older_than({"timestamp": "2025-10-05T18:00:00Z"}, since)
    assert not is_older_than({}, since)
    assert not is_older_than({"timestamp": "2020-01-01T00:00:00Z"}, None)


def test_it_describes_a_record_by_its_ids() -> None:
    line = encode_record({"requestId": "req_1", "message": {"id": "msg_1"}})
    assert describe_record(line) == "message msg_1, request req_1"
