"""From a Claude Code transcript line to the slim record the server needs.

Pure: no I/O. Only usage-bearing lines leave the machine, and never with message or tool text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

Record = dict[str, Any]

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
    """Decode one line; only JSON objects are records."""
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
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def describe_record(line: bytes) -> str:
    """`message.id / requestId` of an encoded record, for log lines about it."""
    try:
        record = parse_line(line)
    except MalformedLineError:
        return "an unreadable record"
    message = record.get("message")
    message_id = message.get("id") if isinstance(message, dict) else None
    return f"message {message_id}, request {record.get('requestId')}"
