"""Claude Code transcript records in, normalised usage facts out. Pure: standard library only.

Only usage metadata survives parsing: message and tool text never leave this module.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

# Larger than any single request Claude can make (1M context, 128k output), small enough
# that a corrupted counter is caught instead of poisoning every total.
MAX_TOKENS_PER_FIELD = 50_000_000
MAX_ID_LENGTH = 255
MAX_TEXT_LENGTH = 1024
# A clock on an agent's machine may run a little ahead; a day ahead is a broken record.
MAX_CLOCK_SKEW = timedelta(days=1)
# Ahead of the server's clock by more than this, a record counts at the server's time: a
# machine with a fast clock must not open (and hold) a 5-hour window of its own.
MAX_WINDOW_SKEW = timedelta(minutes=5)
# No Claude Code record is older: an earlier time is a broken clock or a forged line, and
# the window and bucket arithmetic then stays far from the ends of datetime's range.
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=UTC)


class EventKind(enum.StrEnum):
    """The facts the log records. Stable strings: never rename, only add."""

    RECORDED = "usage_recorded"  # first copy of a (message id, request id)
    REVISED = "usage_revised"  # a later copy carrying more tokens replaces the counted one
    RETRACTED = "usage_retracted"  # a sidechain replay, superseded by the parent's copy


# 2: the record keeps its speed, service tier and web searches (issue 13); events of
# version 1 read back with the defaults, which price as those events always did.
# 3: the record names its feed and keeps the cost Claude Code reported (issue 16); earlier
# events are transcript records without one.
EVENT_SCHEMA_VERSION = 3
MAX_TAG_LENGTH = 32  # speed, service tier: short words ("standard", "fast", "priority")


class Feed(enum.StrEnum):
    """Where a record came from. Stable strings: never rename, only add."""

    TRANSCRIPT = ""  # a transcript line, sent by the agent (or anyone) to events/
    OTLP = "otlp"  # a claude_code.api_request log event, sent by Claude Code to v1/logs


class InvalidRecord(ValueError):
    """A usage record that cannot be accepted; ``message`` says why, for the client."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageRecord(NamedTuple):
    """One assistant response's usage, as Claude Code reported it.

    A NamedTuple, not a frozen dataclass: just as immutable, and much cheaper to build,
    which the ingest pays once per record."""

    message_id: str
    request_id: str  # "" when the line has none (older versions, <synthetic> records)
    timestamp: datetime
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_5m_tokens: int
    cache_creation_1h_tokens: int
    cache_read_tokens: int
    session_id: str
    project_path: str
    is_sidechain: bool
    host: str
    # What the price depends on beyond the tokens (issue 13), at the end with defaults: a
    # record of a version that did not write them is a standard request without searches.
    speed: str = ""  # usage.speed: "standard", "fast"; "" when the line had none
    service_tier: str = ""  # usage.service_tier ("standard"); kept, not priced
    web_search_requests: int = 0  # usage.server_tool_use.web_search_requests
    # Schema version 3 (issue 16): the feed, and the cost Claude Code itself reported in
    # nanodollars (OpenTelemetry's cost_usd), kept beside ours for comparison, never summed
    # as the cost. None when the feed reported none (transcript lines never do).
    feed: str = Feed.TRANSCRIPT.value  # plain str: the database drivers take it as is
    reported_cost_nanos: int | None = None

    @property
    def cache_creation_tokens(self) -> int:
        return self.cache_creation_5m_tokens + self.cache_creation_1h_tokens

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_tokens
            + self.cache_read_tokens
        )


@dataclass(frozen=True, slots=True)
class MalformedLine:
    """Stands in for a line that was not JSON at all, so it is rejected by its index."""

    error: str


def parse_record(raw: object, *, host: str, now: datetime) -> UsageRecord | None:
    """Normalise one transcript line. ``None`` means "not a usage record" (user prompts,
    summaries, system lines): skipped, not an error. Raises ``InvalidRecord``."""
    if isinstance(raw, MalformedLine):
        raise InvalidRecord(raw.error)
    if not isinstance(raw, dict):
        raise InvalidRecord("a record must be a JSON object")
    message = raw.get("message")
    if not isinstance(message, dict) or "usage" not in message:
        return None
    usage = message["usage"]
    if not isinstance(usage, dict):
        raise InvalidRecord("message.usage must be an object")
    cache_5m, cache_1h = _cache_creation(usage)
    record = UsageRecord(
        message_id=_identifier(message.get("id"), "message.id", required=True),
        request_id=_identifier(raw.get("requestId"), "requestId", required=False),
        timestamp=parse_timestamp(raw.get("timestamp"), now),
        model=_identifier(message.get("model"), "message.model", required=True),
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        cache_creation_5m_tokens=cache_5m,
        cache_creation_1h_tokens=cache_1h,
        cache_read_tokens=_count(usage, "cache_read_input_tokens"),
        session_id=_identifier(raw.get("sessionId"), "sessionId", required=False),
        project_path=_text(raw.get("cwd"), "cwd"),
        is_sidechain=_flag(raw.get("isSidechain"), "isSidechain"),
        host=host,
        speed=_text(usage.get("speed"), "message.usage.speed", longest=MAX_TAG_LENGTH),
        service_tier=_text(
            usage.get("service_tier"), "message.usage.service_tier", longest=MAX_TAG_LENGTH
        ),
        web_search_requests=_web_searches(usage),
    )
    check_storable(record)
    return record


def check_storable(record: UsageRecord) -> None:
    """Refuse what the log could not store or give back as it was sent: a NUL (PostgreSQL's
    text refuses it) or a lone surrogate (not UTF-8: no database, Redis or JSON encoder
    takes it) in any text. The parsers have already bounded every count (far below the
    columns' 64 bits) and every timestamp (``parse_timestamp``)."""
    text = "".join(
        (
            record.message_id,
            record.request_id,
            record.model,
            record.session_id,
            record.project_path,
            record.host,
            record.speed,
            record.service_tier,
        )
    )
    if "\x00" in text:
        raise InvalidRecord(f"a NUL character in {_field_holding(record, chr(0))}")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise InvalidRecord("a lone surrogate (not UTF-8) in a text field") from None


_TEXT_FIELDS = {
    "message_id": "message.id",
    "request_id": "requestId",
    "model": "message.model",
    "session_id": "sessionId",
    "project_path": "cwd",
    "host": "the host name",
    "speed": "message.usage.speed",
    "service_tier": "message.usage.service_tier",
}


def _field_holding(record: UsageRecord, character: str) -> str:
    for name, label in _TEXT_FIELDS.items():
        if character in getattr(record, name):
            return label
    return "a text field"


def _cache_creation(usage: dict[str, object]) -> tuple[int, int]:
    """(5-minute, 1-hour) cache writes. Without the split every write is a 5-minute one."""
    total = _count(usage, "cache_creation_input_tokens")
    split = usage.get("cache_creation")
    if split is None:
        return total, 0
    if not isinstance(split, dict):
        raise InvalidRecord("message.usage.cache_creation must be an object")
    one_hour = min(_count(split, "ephemeral_1h_input_tokens"), total)
    return total - one_hour, one_hour


def _web_searches(usage: dict[str, object]) -> int:
    server_tools = usage.get("server_tool_use")
    if server_tools is None:
        return 0
    if not isinstance(server_tools, dict):
        raise InvalidRecord("message.usage.server_tool_use must be an object")
    return _count(server_tools, "web_search_requests")


def _count(container: dict[str, object], key: str) -> int:
    value = container.get(key, 0)
    if type(value) is int and 0 <= value <= MAX_TOKENS_PER_FIELD:
        return value  # the usual case, first (bool is a subclass of int, not ``int`` itself)
    if value is None:
        return 0
    # bool is an int in Python; JSON true is no token count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(f"{key} must be a whole number, got {value!r}")
    if value < 0:
        raise InvalidRecord(f"{key} must not be negative, got {value}")
    if value > MAX_TOKENS_PER_FIELD:
        raise InvalidRecord(f"{key} is implausibly large ({value} > {MAX_TOKENS_PER_FIELD})")
    return value


def _identifier(value: object, name: str, *, required: bool) -> str:
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH:
        return value  # the usual case, first
    if value is None or value == "":
        if required:
            raise InvalidRecord(f"{name} is missing")
        return ""
    if not isinstance(value, str):
        raise InvalidRecord(f"{name} must be a string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRecord(f"{name} is longer than {MAX_ID_LENGTH} characters")
    return value


def _text(value: object, name: str, *, longest: int = MAX_TEXT_LENGTH) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRecord(f"{name} must be a string")
    if len(value) > longest:
        raise InvalidRecord(f"{name} is longer than {longest} characters")
    return value


def _flag(value: object, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRecord(f"{name} must be true or false")
    return value


def parse_timestamp(value: object, now: datetime) -> datetime:
    if not isinstance(value, str) or not value:
        raise InvalidRecord("timestamp is missing")
    try:
        parsed = datetime.fromisoformat(value)
        # Claude Code writes UTC with a Z; a naive time is taken as UTC too. The conversion
        # overflows past datetime's range (0001-01-01T00:00:00+01:00).
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise InvalidRecord(f"timestamp is not ISO 8601: {value[:40]!r}") from None
    except OverflowError:
        raise InvalidRecord(f"timestamp {value[:40]!r} is out of range in UTC") from None
    if parsed > now + MAX_CLOCK_SKEW:
        raise InvalidRecord(f"timestamp {value[:40]} is more than a day in the future")
    if parsed < EARLIEST_TIMESTAMP:
        raise InvalidRecord(f"timestamp {value[:40]} is before the year 2000")
    return parsed


class UsageEvent(NamedTuple):
    """An event of the log: a fact about one (message id, request id) of one user.

    ``position`` is None until the log has stored it; positions grow in commit order.
    A retraction carries the withdrawn copy's identity with zero tokens and cost.
    A NamedTuple for the reason ``UsageRecord`` is one: the ingest builds two per record.
    """

    kind: EventKind
    user_id: int
    revision: int
    record: UsageRecord
    cost_nanos: int
    priced: bool
    recorded_at: datetime
    position: int | None = None
    schema_version: int = EVENT_SCHEMA_VERSION
    # The part of ``cost_nanos`` that is web search fees (issue 13). Both are the cost with
    # the price data of the ingest; the projections price every event afresh.
    web_search_cost_nanos: int = 0

    @property
    def counted(self) -> bool:
        return self.kind is not EventKind.RETRACTED

    @property
    def messages(self) -> int:
        """Every event is about one message (what the projections count as messages)."""
        return 1

    @property
    def reported_cost_nanos(self) -> int:
        """The cost Claude Code reported for this request (0 when it reported none)."""
        reported = self.record.reported_cost_nanos
        return 0 if reported is None else reported

    @property
    def compared_cost_nanos(self) -> int:
        """Our cost of this request where Claude Code reported one (else 0): summed beside
        ``reported_cost_nanos``, the two compare like with like."""
        return 0 if self.record.reported_cost_nanos is None else self.cost_nanos

    def at_position(self, position: int) -> UsageEvent:
        """This event as the log stored it: every field kept, ``position`` set. (Not
        ``_replace``, which is slower: the ingest calls this once per record.)"""
        return tuple.__new__(UsageEvent, (*self[:_POSITION], position, *self[_POSITION + 1 :]))


_POSITION = UsageEvent._fields.index("position")


# An OpenTelemetry api_request event has no message id (issue 16). Its copy is keyed by its
# request id, under a message id that says so; without a request id (older Claude Code), by
# its session, its sequence number in the session and its time, so that an exporter's retry
# of the same event is the same copy.
OTLP_MESSAGE_ID_PREFIX = "otel:"
MAX_OTLP_REQUEST_ID_LENGTH = MAX_ID_LENGTH - len(OTLP_MESSAGE_ID_PREFIX)


def otlp_message_id(request_id: str) -> str:
    return OTLP_MESSAGE_ID_PREFIX + request_id


def otlp_sequence_message_id(session_id: str, sequence: int, timestamp: datetime) -> str:
    key = f"{session_id}\0{sequence}\0{timestamp.isoformat()}".encode()
    return f"{OTLP_MESSAGE_ID_PREFIX}seq:{hashlib.blake2b(key, digest_size=16).hexdigest()}"


def fingerprint(message_id: str, request_id: str, revision: int) -> str:
    """A short name for one event of a log (its message, request and revision): a
    projection's checkpoint carries its last event's, so that a log whose position holds
    another event (a restored backup) is told apart."""
    key = f"{message_id}\0{request_id}\0{revision}".encode()
    return hashlib.blake2b(key, digest_size=6).hexdigest()


def newest_revisions(events: Iterable[UsageEvent]) -> list[UsageEvent]:
    """The newest revision of each (message id, request id) among ``events``."""
    newest: dict[tuple[str, str], UsageEvent] = {}
    for event in events:
        key = (event.record.message_id, event.record.request_id)
        held = newest.get(key)
        if held is None or held.revision < event.revision:
            newest[key] = event
    return list(newest.values())
