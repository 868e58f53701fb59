"""The ingest's fast path: an NDJSON line of the usual shape, decoded straight into its usage.

Nearly every line the agent sends is an assistant line with the same few fields. msgspec
decodes such a line into the typed structs below, checking on the way every type and bound
that ``events.parse_record`` checks, and skipping the fields the log does not keep unread.
Any line it does not take (another shape, a bad value, broken JSON) goes the general way:
``orjson`` into Python objects and ``events.parse_record``, which gives the exact answer and
error message. So the fast path never decides anything the general one would decide
otherwise; ``tests/usage/test_wire.py`` compares the two on every sample line and on
generated lines.

One deliberate difference: bytes that are not UTF-8 inside a field the log does not keep
(the message's text, say) do not make the whole line malformed here. Its usage counts, as
ccusage counts it and as the agent reads it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
import orjson

from usage.events import (
    MAX_ID_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_TOKENS_PER_FIELD,
    MalformedLine,
    UsageRecord,
    check_storable,
    parse_record,
    parse_timestamp,
)

Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS_PER_FIELD)]
RequiredId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
OptionalId = Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_LENGTH)]
Tag = Annotated[str, msgspec.Meta(max_length=MAX_TAG_LENGTH)]


class CacheCreation(msgspec.Struct):
    ephemeral_1h_input_tokens: Count = 0


class ServerToolUse(msgspec.Struct):
    web_search_requests: Count = 0


class Usage(msgspec.Struct):
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_creation_input_tokens: Count = 0
    cache_read_input_tokens: Count = 0
    cache_creation: CacheCreation | msgspec.UnsetType = msgspec.UNSET
    speed: Tag = ""
    service_tier: Tag = ""
    server_tool_use: ServerToolUse | msgspec.UnsetType = msgspec.UNSET


class Message(msgspec.Struct):
    id: RequiredId
    model: RequiredId
    usage: Usage | msgspec.UnsetType = msgspec.UNSET


class WireLine(msgspec.Struct):
    """A transcript line as the fast path reads it: only what the log keeps. The defaults
    are what ``events.parse_record`` takes a missing field for; a ``null`` leaves the fast
    path, since msgspec refuses it for these types."""

    message: Message | msgspec.UnsetType = msgspec.UNSET
    timestamp: str = ""
    request_id: OptionalId = msgspec.field(name="requestId", default="")
    session_id: OptionalId = msgspec.field(name="sessionId", default="")
    cwd: Text = ""
    is_sidechain: bool = msgspec.field(name="isSidechain", default=False)


_decode_line = msgspec.json.Decoder(WireLine).decode


def read_line(line: bytes) -> object:
    """One NDJSON line: a ``WireLine`` when the fast path takes it, else the JSON value for
    ``events.parse_record`` or, when it is not JSON, a ``MalformedLine``."""
    try:
        return _decode_line(line)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return MalformedLine(f"Line is not valid JSON: {error}")


def parse(raw: object, *, host: str, now: datetime) -> UsageRecord | None:
    """``events.parse_record`` for what ``read_line`` gives (and for any JSON value)."""
    if type(raw) is WireLine:
        return _record(raw, host, now)
    return parse_record(raw, host=host, now=now)


def _record(line: WireLine, host: str, now: datetime) -> UsageRecord | None:
    message = line.message
    if message is msgspec.UNSET or message.usage is msgspec.UNSET:
        return None  # not a usage line: skipped
    usage = message.usage
    cache_creation = usage.cache_creation_input_tokens
    split = usage.cache_creation
    one_hour = 0 if split is msgspec.UNSET else min(split.ephemeral_1h_input_tokens, cache_creation)
    tools = usage.server_tool_use
    record = UsageRecord(
        message_id=message.id,
        request_id=line.request_id,
        # A check msgspec has not made; it raises what the general path raises.
        timestamp=parse_timestamp(line.timestamp, now),
        model=message.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_creation_5m_tokens=cache_creation - one_hour,
        cache_creation_1h_tokens=one_hour,
        cache_read_tokens=usage.cache_read_input_tokens,
        session_id=line.session_id,
        project_path=line.cwd,
        is_sidechain=line.is_sidechain,
        host=host,
        speed=usage.speed,
        service_tier=usage.service_tier,
        web_search_requests=0 if tools is msgspec.UNSET else tools.web_search_requests,
    )
    check_storable(record)  # what the general path checks last, too
    return record
