"""Claude Code's api_request log events become usage records; other events are not usage.
Pure: no database, no Redis, no protobuf (the decoder's tests send real OTLP bodies)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from otlp_feed.api_requests import READ_ATTRIBUTES, Value, is_api_request, parse_api_request
from usage.events import InvalidRecord, UsageRecord, otlp_sequence_message_id

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
NANOS = 1_796_644_800_000_000_000  # 2026-12-07T12:00:00Z


def attributes(**changes: Value) -> dict[str, Value]:
    """An api_request event's attributes, as Claude Code sends them."""
    base: dict[str, Value] = {
        "event.name": "api_request",
        "event.timestamp": "2026-12-07T11:59:30.250Z",
        "event.sequence": 42,
        "session.id": "0f9c6a8e-session",
        "user.email": "dev@example.com",
        "model": "claude-sonnet-4-5-20250929",
        "input_tokens": 3,
        "output_tokens": "412",  # some versions send counts as text
        "cache_read_tokens": 14_000,
        "cache_creation_tokens": 3_000,
        "cost_usd": 0.0628365,
        "duration_ms": 5_210,
        "speed": "normal",
        "request_id": "req_011CVx",
    }
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def parse(**changes: Value) -> UsageRecord:
    return parse_api_request(attributes(**changes), time_unix_nano=NANOS, host="laptop", now=NOW)


def test_an_api_request_becomes_a_record_keyed_by_its_request_id() -> None:
    record = parse()

    assert (record.message_id, record.request_id) == ("otel:req_011CVx", "req_011CVx")
    assert record.timestamp == datetime(2026, 12, 7, 11, 59, 30, 250_000, tzinfo=UTC)
    assert (record.input_tokens, record.output_tokens, record.cache_read_tokens) == (3, 412, 14_000)
    assert (record.cache_creation_5m_tokens, record.cache_creation_1h_tokens) == (3_000, 0)
    assert (record.session_id, record.host, record.feed) == ("0f9c6a8e-session", "laptop", "otlp")
    assert record.speed == "standard"  # Claude Code's "normal"
    assert record.reported_cost_nanos == 62_836_500  # the decimal figure, not a float's


def test_without_a_request_id_it_is_keyed_by_session_sequence_and_time() -> None:
    record = parse(request_id=None)

    expected = otlp_sequence_message_id("0f9c6a8e-session", 42, record.timestamp)
    assert (record.message_id, record.request_id) == (expected, "")
    assert parse(request_id=None, **{"event.sequence": 43}).message_id != expected


def test_without_event_timestamp_the_log_records_time_counts() -> None:
    record = parse(**{"event.timestamp": None})

    assert record.timestamp == datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": None}, "model is missing"),
        ({"input_tokens": -1}, "input_tokens must not be negative"),
        ({"output_tokens": "many"}, "output_tokens must be a whole number"),
        ({"output_tokens": True}, "output_tokens must be a whole number"),
        ({"cache_read_tokens": 10**12}, "cache_read_tokens is implausibly large"),
        ({"cost_usd": -0.5}, "cost_usd must be between 0"),
        ({"cost_usd": float("nan")}, "cost_usd must be finite"),
        ({"cost_usd": "free"}, "cost_usd is not a number"),
        ({"event.timestamp": "yesterday"}, "timestamp is not ISO 8601"),
        ({"event.timestamp": "2026-12-09T12:00:00Z"}, "more than a day in the future"),
        ({"request_id": "r" * 251}, "request_id is longer than 250 characters"),
        ({"session.id": "s\x00"}, "a NUL character"),
    ],
)
def test_a_broken_event_is_refused_saying_why(changes: dict[str, Value], message: str) -> None:
    with pytest.raises(InvalidRecord, match=message):
        parse(**changes)


def test_an_event_without_any_time_is_refused() -> None:
    with pytest.raises(InvalidRecord, match="no time"):
        parse_api_request(
            attributes(**{"event.timestamp": None}), time_unix_nano=0, host="", now=NOW
        )


@pytest.mark.parametrize(
    ("body", "event_attributes", "expected"),
    [
        ("claude_code.api_request", {"event.name": "api_request"}, True),
        ("claude_code.api_request", {}, True),  # versions that name it only in the body
        ("", {"event.name": "claude_code.api_request"}, True),
        ("claude_code.user_prompt", {"event.name": "user_prompt"}, False),
        ("claude_code.api_request", {"event.name": "api_error"}, False),
        (None, {}, False),
    ],
)
def test_only_api_request_events_are_usage(
    body: str | None, event_attributes: dict[str, Value], expected: bool
) -> None:
    assert is_api_request(body, event_attributes) is expected


class Reads(dict[str, Value]):
    """Attributes that remember which ones were read."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key: str, default: Value = None) -> Value:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("request_id", ["req_011CVx", None])
def test_the_decoder_converts_every_attribute_read_and_no_other(request_id: str | None) -> None:
    """The decoder hands over only ``READ_ATTRIBUTES`` (a prompt's text is never turned
    into a Python string): each one read must be among them."""
    seen = Reads(attributes(request_id=request_id))

    is_api_request("claude_code.api_request", seen)
    parse_api_request(seen, time_unix_nano=NANOS, host="laptop", now=NOW)

    assert seen.read <= READ_ATTRIBUTES
    assert "user.email" not in READ_ATTRIBUTES
