"""Claude Code's ``claude_code.api_request`` log events in, usage records out. Pure: the
standard library and ``usage.events`` only.

An event's attributes arrive as OTLP ``AnyValue``s, already turned into Python values by the
decoder; Claude Code sends the counts as integers or, in some versions, as strings, and the
cost as a double. Only usage metadata is read: prompts and bodies never leave here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from usage.events import (
    MAX_ID_LENGTH,
    MAX_OTLP_REQUEST_ID_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TOKENS_PER_FIELD,
    Feed,
    InvalidRecord,
    UsageRecord,
    check_storable,
    otlp_message_id,
    otlp_sequence_message_id,
    parse_timestamp,
)

API_REQUEST_BODY = "claude_code.api_request"
API_REQUEST_NAMES = ("api_request", API_REQUEST_BODY)
# One request's cost in dollars past this is a broken exporter, not a request (Claude's
# largest request, 1M tokens in and 128k out at the dearest rates, is a few tens of dollars).
MAX_REPORTED_COST_USD = 10_000
# Claude Code's ``speed`` attribute says "normal" where the transcript says "standard".
_SPEEDS = {"normal": "standard"}

Value = str | int | float | bool | None
# Every attribute read here: the decoder turns only these into Python values, so a prompt's
# text or a user's e-mail address never leaves the protobuf message (and a record costs
# less: Claude Code sends twenty-odd attributes per event).
READ_ATTRIBUTES = frozenset(
    {
        "event.name",
        "event.timestamp",
        "event.sequence",
        "session.id",
        "request_id",
        "model",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
        "cost_usd",
        "speed",
    }
)


def is_api_request(body: Value, attributes: Mapping[str, Value]) -> bool:
    """Whether a log record is Claude Code's api_request event (named by ``event.name``, or
    by its body in versions that only set that)."""
    name = attributes.get("event.name")
    if isinstance(name, str):
        return name in API_REQUEST_NAMES
    return body == API_REQUEST_BODY


def parse_api_request(
    attributes: Mapping[str, Value], *, time_unix_nano: int, host: str, now: datetime
) -> UsageRecord:
    """The usage record of one api_request event. Raises ``InvalidRecord``."""
    timestamp = _timestamp(attributes.get("event.timestamp"), time_unix_nano, now)
    request_id = _identifier(attributes.get("request_id"), "request_id", MAX_OTLP_REQUEST_ID_LENGTH)
    session_id = _identifier(attributes.get("session.id"), "session.id", MAX_ID_LENGTH)
    if request_id:
        message_id = otlp_message_id(request_id)
    else:
        sequence = _count(attributes, "event.sequence", MAX_TOKENS_PER_FIELD * 1000)
        message_id = otlp_sequence_message_id(session_id, sequence, timestamp)
    model = _identifier(attributes.get("model"), "model", MAX_ID_LENGTH)
    if not model:
        raise InvalidRecord("model is missing")
    speed = _identifier(attributes.get("speed"), "speed", MAX_TAG_LENGTH)
    record = UsageRecord(
        message_id=message_id,
        request_id=request_id,
        timestamp=timestamp,
        model=model,
        input_tokens=_count(attributes, "input_tokens"),
        output_tokens=_count(attributes, "output_tokens"),
        # OpenTelemetry does not split cache writes: all are priced as 5-minute ones (the
        # transcript's copy, when it comes, replaces this one with the split).
        cache_creation_5m_tokens=_count(attributes, "cache_creation_tokens"),
        cache_creation_1h_tokens=0,
        cache_read_tokens=_count(attributes, "cache_read_tokens"),
        session_id=session_id,
        project_path="",  # OpenTelemetry does not say the working directory
        is_sidechain=False,
        host=host,
        speed=_SPEEDS.get(speed, speed),
        feed=Feed.OTLP.value,
        reported_cost_nanos=_cost_nanos(attributes.get("cost_usd")),
    )
    check_storable(record)
    return record


def _timestamp(value: Value, time_unix_nano: int, now: datetime) -> datetime:
    """``event.timestamp`` (ISO 8601, as Claude Code writes it), else the log record's time."""
    if value is not None:
        return parse_timestamp(value, now)
    if not time_unix_nano:
        raise InvalidRecord("event.timestamp is missing and the log record has no time")
    seconds, nanos = divmod(time_unix_nano, 1_000_000_000)
    try:
        moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=nanos // 1000)
    except (OverflowError, OSError, ValueError):
        raise InvalidRecord(f"time_unix_nano {time_unix_nano} is out of range") from None
    return parse_timestamp(moment.isoformat(), now)  # the same bounds as a transcript's


def _count(attributes: Mapping[str, Value], key: str, largest: int = MAX_TOKENS_PER_FIELD) -> int:
    value = attributes.get(key)
    if value is None:
        return 0
    if (isinstance(value, str) and value.isascii() and value.isdigit()) or (
        isinstance(value, float) and value.is_integer()
    ):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(f"{key} must be a whole number, got {str(value)[:40]!r}")
    if value < 0:
        raise InvalidRecord(f"{key} must not be negative, got {value}")
    if value > largest:
        raise InvalidRecord(f"{key} is implausibly large ({value} > {largest})")
    return value


def _identifier(value: Value, name: str, longest: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidRecord(f"{name} must be a string")
    text = str(value)
    if len(text) > longest:
        raise InvalidRecord(f"{name} is longer than {longest} characters")
    return text


def _cost_nanos(value: Value) -> int | None:
    """``cost_usd`` in nanodollars, exactly as its decimal text says (no float rounding)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRecord("cost_usd must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRecord(f"cost_usd must be finite, got {value}")
    try:
        dollars = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRecord(f"cost_usd is not a number: {str(value)[:40]!r}") from None
    if not dollars.is_finite() or dollars < 0 or dollars > MAX_REPORTED_COST_USD:
        raise InvalidRecord(f"cost_usd must be between 0 and {MAX_REPORTED_COST_USD}, got {value}")
    return int((dollars * 1_000_000_000).to_integral_value())
