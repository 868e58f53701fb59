"""From a Claude Code transcript line to the slim record the server needs.

Pure: no I/O. Only usage-bearing lines leave the machine, and never with message or tool text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

Record = dict[str, Any]
# How the server ranks the copies of one (message id, request id): higher is kept.
CopyRank = tuple[bool, int, int]

# The server refuses a count above this (usage/events.py); such a record is never ranked.
MAX_TOKENS_PER_FIELD = 50_000_000
USAGE_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Built once: building it for every record cost more than the division it serves.
MICROSECOND = timedelta(microseconds=1)

# The envelope fields the server uses; everything else on a line (parentUuid, userType,
# toolUseResult, error text...) stays on the machine.
ENVELOPE_FIELDS = (
    "type",
    "timestamp",
    "sessionId",
    "cwd",
    "isSidechain",
    "requestId",
    "uuid",
    "version",
    "gitBranch",
    "isApiErrorMessage",
    "costUSD",
)
# `content` (the text and tool calls) is deliberately absent.
MESSAGE_FIELDS = ("id", "type", "role", "model", "stop_reason", "usage")


class MalformedLineError(ValueError):
    """A complete line that is not a JSON object (truncated write, merge marker, bare string)."""


def might_carry_usage(line: bytes) -> bool:
    """Cheap pre-filter: a line without a "usage" key cannot carry usage.

    Most lines are prompts and tool output, often large; not parsing them is what makes a first
    backfill fast.
    """
    return b'"usage"' in line


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: re-encoded, they would make the server refuse the batch.
    raise MalformedLineError(f"non-standard JSON constant {name}")


def parse_line(line: bytes) -> Record:
    """Decode one line; only JSON objects are records.

    msgspec first; the standard library for what it refuses but JSON allows (lone surrogate
    escapes), so that no line counts as malformed only because of the parser."""
    try:
        value = _ANY_DECODER.decode(line)
    except msgspec.DecodeError:
        try:
            value = json.loads(line, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as error:
            raise MalformedLineError(str(error)) from error
    if not isinstance(value, dict):
        raise MalformedLineError(f"expected a JSON object, got {type(value).__name__}")
    return value


def slim_record(record: Record) -> Record | None:
    """The record without any text, or None when it carries no `message.usage` object."""
    message = record.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("usage"), dict):
        return None
    slim = {key: record[key] for key in ENVELOPE_FIELDS if key in record}
    slim["message"] = {key: message[key] for key in MESSAGE_FIELDS if key in message}
    return slim


class _Message(msgspec.Struct):
    """The fields of `message` that are kept, in MESSAGE_FIELDS' order; `content` is skipped
    unread. A field the line lacks stays UNSET, which ``to_builtins`` leaves out."""

    id: Any = msgspec.UNSET
    type: Any = msgspec.UNSET
    role: Any = msgspec.UNSET
    model: Any = msgspec.UNSET
    stop_reason: Any = msgspec.UNSET
    usage: Any = msgspec.UNSET


class _Line(msgspec.Struct):
    """The envelope fields that are kept, in ENVELOPE_FIELDS' order, then `message`; every
    other key is skipped."""

    type: Any = msgspec.UNSET
    timestamp: Any = msgspec.UNSET
    sessionId: Any = msgspec.UNSET  # the transcript's own keys
    cwd: Any = msgspec.UNSET
    isSidechain: Any = msgspec.UNSET
    requestId: Any = msgspec.UNSET
    uuid: Any = msgspec.UNSET
    version: Any = msgspec.UNSET
    gitBranch: Any = msgspec.UNSET
    isApiErrorMessage: Any = msgspec.UNSET
    costUSD: Any = msgspec.UNSET
    message: _Message | msgspec.UnsetType = msgspec.UNSET


_ANY_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_LINE_DECODER = msgspec.json.Decoder(_Line)


def slim_line(line: bytes) -> Record | None:
    """``slim_record(parse_line(line))`` without building what is dropped.

    An assistant line is mostly `content` (thinking, text, tool calls): decoding only the
    kept fields skips it unread, which is most of a first backfill's parsing. A line of any
    other shape (`message` not an object, a top level that is not one, JSON that msgspec
    refuses) takes the general path, with the same result. One difference, on purpose: text
    that is dropped is not checked, so a line whose `content` is not valid UTF-8 still
    counts its usage (ccusage counts it too) instead of being malformed."""
    try:
        decoded = _LINE_DECODER.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return slim_record(parse_line(line))
    message = decoded.message
    if isinstance(message, msgspec.UnsetType) or not isinstance(message.usage, dict):
        return None
    # The fields the line had, in the order slim_record gives them (the structs' field order
    # is ENVELOPE_FIELDS' and MESSAGE_FIELDS'); one C call.
    slim: Record = msgspec.to_builtins(decoded)
    return slim


def record_time(record: Record) -> datetime | None:
    """The record's timestamp as an aware datetime, or None when absent or unreadable."""
    raw = record.get("timestamp")
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    # Claude Code writes UTC with a `Z`; a naive stamp can only be UTC too.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_older_than(record: Record, since: datetime | None) -> bool:
    """True when `--since` excludes the record. Undated records are kept: the server decides."""
    if since is None:
        return False
    moment = record_time(record)
    return moment is not None and moment < since


def encode_record(record: Record) -> bytes:
    """One compact NDJSON line (without its newline)."""
    try:
        return _ENCODER.encode(record)
    except (msgspec.EncodeError, UnicodeEncodeError):  # lone surrogates (see parse_line)
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode(
            errors="surrogatepass"
        )


_ENCODER = msgspec.json.Encoder()


def copy_rank(record: Record) -> tuple[tuple[str, str], CopyRank] | None:
    """A slim record's (message id, request id) and the rank the server gives this copy
    among the copies of it: the parent's copy over a sidechain's, then more tokens, then
    the earliest (``usage/dedupe.py``). Of two copies with different ranks the server keeps
    the higher whatever the order they arrive in, so the other need not be sent.

    None when the record is not plainly valid (a missing id, a count the server would
    refuse...): it is then sent as it is, and the server decides."""
    message = record["message"]
    message_id = message.get("id")
    request_id = record.get("requestId")
    if request_id is None:
        request_id = ""
    if not (isinstance(message_id, str) and message_id and isinstance(request_id, str)):
        return None
    model = message.get("model")
    if not (isinstance(model, str) and model):
        return None
    sidechain = record.get("isSidechain")
    if sidechain is None:
        sidechain = False
    elif not isinstance(sidechain, bool):
        return None
    usage = message["usage"]
    total = 0
    for name in USAGE_COUNTS:
        value = usage.get(name)
        if value is None:
            continue
        if type(value) is not int or not 0 <= value <= MAX_TOKENS_PER_FIELD:
            return None
        total += value
    moment = record_time(record)
    if moment is None:
        return None
    microseconds = (moment - EPOCH) // MICROSECOND
    return (message_id, request_id), (not sidechain, total, -microseconds)


def describe_record(line: bytes) -> str:
    """`message.id / requestId` of an encoded record, for log lines about it."""
    try:
        record = parse_line(line)
    except MalformedLineError:
        return "an unreadable record"
    message = record.get("message")
    message_id = message.get("id") if isinstance(message, dict) else None
    return f"message {message_id}, request {record.get('requestId')}"
