"""Builders for Claude Code transcript lines, in the shapes of the reference samples."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SECRET = "TOP SECRET PROMPT TEXT"


def now_stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def assistant_record(
    message_id: str,
    request_id: str | None,
    *,
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_creation: int = 0,
    cache_read: int = 0,
    timestamp: str | None = None,
    session_id: str = "session-1",
    sidechain: bool = False,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "parentUuid": None,
        "isSidechain": sidechain,
        "userType": "external",
        "cwd": "/home/dev/acme-api",
        "sessionId": session_id,
        "version": "2.0.29",
        "gitBranch": "main",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": SECRET}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": cache_creation,
                "cache_read_input_tokens": cache_read,
                "output_tokens": output_tokens,
                "service_tier": "standard",
            },
        },
        "type": "assistant",
        "uuid": f"uuid-{message_id}-{request_id}",
        "timestamp": timestamp or now_stamp(),
    }
    if request_id is not None:
        record["requestId"] = request_id
    return record


def user_record(text: str = SECRET, timestamp: str | None = None) -> dict[str, Any]:
    return {
        "type": "user",
        "sessionId": "session-1",
        "message": {"role": "user", "content": text},
        "uuid": "u-1",
        "timestamp": timestamp or now_stamp(),
    }


def line(record: object) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def assistant_line(message_id: str, request_id: str | None = "req-1", **fields: Any) -> bytes:
    return line(assistant_record(message_id, request_id, **fields))


def append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(data)
        handle.flush()


def tokens_of(record: dict[str, Any]) -> int:
    usage = record["message"]["usage"]
    return int(
        usage["input_tokens"]
        + usage["output_tokens"]
        + usage["cache_creation_input_tokens"]
        + usage["cache_read_input_tokens"]
    )
