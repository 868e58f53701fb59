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

# The server refuses a count above MAX_TOKENS_PER_FIELD, an id or a model name longer than
# MAX_ID_LENGTH and a cwd longer than MAX_TEXT_LENGTH (usage/events.py): such a record is never
# ranked (see copy_rank).
MAX_TOKENS_PER_FIELD = 50_000_000
MAX_ID_LENGTH = 255
MAX_TEXT_LENGTH = 1024
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

    None when the server would refuse the record (a missing id, a count or a text it refuses,
    an unreadable time...): ranked, it could outrank the copy the server keeps and be sent
    alone, to be refused. It is sent as it is, beside the others, and the server decides."""
    message = record["message"]
    if not _texts_accepted(record, message):
        return None
    sidechain = record.get("isSidechain")
    if sidechain is None:
        sidechain = False
    elif not isinstance(sidechain, bool):
        return None
    total = _total_tokens(message["usage"])
    moment = record_time(record)
    if total is None or moment is None:
        return None
    microseconds = (moment - EPOCH) // MICROSECOND
    return (message["id"], record.get("requestId") or ""), (not sidechain, total, -microseconds)


def _texts_accepted(record: Record, message: dict[str, Any]) -> bool:
    """Whether the server takes the record's ids and texts (usage/events.py): strings within
    its limits, the message id and the model not empty, the others possibly absent. One
    expression rather than a helper per field: the agent asks this of every record."""
    message_id, model = message.get("id"), message.get("model")
    request_id = record.get("requestId")
    session_id, cwd = record.get("sessionId"), record.get("cwd")
    return (
        type(message_id) is str
        and 0 < len(message_id) <= MAX_ID_LENGTH
        and type(model) is str
        and 0 < len(model) <= MAX_ID_LENGTH
        and (request_id is None or (type(request_id) is str and len(request_id) <= MAX_ID_LENGTH))
        and (session_id is None or (type(session_id) is str and len(session_id) <= MAX_ID_LENGTH))
        and (cwd is None or (type(cwd) is str and len(cwd) <= MAX_TEXT_LENGTH))
    )


def _total_tokens(usage: dict[str, Any]) -> int | None:
    """The four counts added up as the server adds them; None when it would refuse one of
    them, or the 1-hour share of the cache writes, which it reads even though the sum does
    not need it."""
    total = 0
    for name in USAGE_COUNTS:
        value = usage.get(name)
        if value is None:
            continue
        # `type`, not isinstance: JSON true is a bool, which Python counts as an int.
        if type(value) is not int or not 0 <= value <= MAX_TOKENS_PER_FIELD:
            return None
        total += value
    split = usage.get("cache_creation")
    if split is None:
        return total
    if type(split) is not dict:
        return None
    one_hour = split.get("ephemeral_1h_input_tokens")
    if one_hour is None or (type(one_hour) is int and 0 <= one_hour <= MAX_TOKENS_PER_FIELD):
        return total
    return None


def describe_record(line: bytes) -> str:
    """`message.id / requestId` of an encoded record, for log lines about it."""
    try:
        record = parse_line(line)
    except MalformedLineError:
        return "an unreadable record"
    message = record.get("message")
    message_id = message.get("id") if isinstance(message, dict) else None
    return f"message {message_id}, request {record.get('requestId')}"
