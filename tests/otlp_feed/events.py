"""Claude Code's OpenTelemetry log events, built by the OpenTelemetry SDK itself and encoded
by its own OTLP encoder: what an exporter would send, without a hand-made message."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, set_span_in_context

SONNET = "claude-sonnet-4-5-20250929"
API_REQUEST = "claude_code.api_request"
TRACE_ID = 0x5B8EFFF798038103D269B633813FC60C
SPAN_ID = 0xEEE19B7EC3C1B174


def api_request_attributes(
    *,
    at: datetime,
    request_id: str | None = "req_01",
    session: str = "session-1",
    sequence: int | None = None,
    model: str = SONNET,
    input_tokens: int = 10,
    output_tokens: int = 100,
    cache_read: int = 5000,
    cache_creation: int = 1000,
    cost_usd: float = 0.0123,
) -> dict[str, Any]:
    """An api_request event's attributes, as Claude Code sets them."""
    attributes: dict[str, Any] = {
        "event.name": "api_request",
        "event.timestamp": at.isoformat().replace("+00:00", "Z"),
        "session.id": session,
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read,
        "cache_creation_tokens": cache_creation,
        "cost_usd": cost_usd,
        "duration_ms": 1234,
    }
    if request_id is not None:
        attributes["request_id"] = request_id
    if sequence is not None:
        attributes["event.sequence"] = sequence
    return attributes


def user_prompt_attributes(*, at: datetime, prompt: str) -> dict[str, Any]:
    return {
        "event.name": "user_prompt",
        "event.timestamp": at.isoformat().replace("+00:00", "Z"),
        "session.id": "session-1",
        "prompt_length": len(prompt),
        "prompt": prompt,
    }


def log_record(
    attributes: dict[str, Any],
    *,
    host: str | None = "laptop",
    body: str = API_REQUEST,
    resource: dict[str, Any] | None = None,
    traced: bool = True,
) -> ReadableLogRecord:
    """One log record of the SDK, in a resource naming ``host`` (``host.name``). ``traced``
    puts it in a span, so that it carries a trace id and a span id."""
    context = None
    if traced:
        span = SpanContext(trace_id=TRACE_ID, span_id=SPAN_ID, is_remote=False)
        context = set_span_in_context(NonRecordingSpan(span))
    names = {"service.name": "claude-code", **({"host.name": host} if host else {})}
    return ReadableLogRecord(
        LogRecord(
            timestamp=1_759_700_000_000_000_000,
            body=body,
            attributes=attributes,
            context=context,
        ),
        # Exactly these attributes: Resource.create would add the SDK's random
        # service.instance.id, a host name of its own.
        resource=Resource({**names, **(resource or {})}),
    )


def protobuf_body(records: Sequence[ReadableLogRecord]) -> bytes:
    return encode_logs(records).SerializeToString()


def json_body(records: Sequence[ReadableLogRecord]) -> bytes:
    """OTLP/JSON as an exporter writes it: protobuf's JSON mapping, with trace and span ids
    in hex (OTLP's deviation from the mapping's base64)."""
    document = json_format.MessageToDict(encode_logs(records))
    for resource in document.get("resourceLogs", []):
        for scope in resource.get("scopeLogs", []):
            for record in scope.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64decode(record[key]).hex().upper()
    return orjson.dumps(document)
