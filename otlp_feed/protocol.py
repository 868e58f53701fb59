"""OTLP/HTTP's messages in and out, in binary protobuf or OTLP/JSON: the one module that
imports the protobuf packages (opentelemetry-proto's generated classes, google.protobuf,
google.rpc). Every body is decoded by the official classes, never by hand."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otlp_feed.api_requests import READ_ATTRIBUTES, Value

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES = (PROTOBUF, JSON)
# OTLP/JSON writes these ids in hex, where protobuf's JSON mapping expects base64: a valid
# id could be misread and an odd one refused. Nothing here reads them, so they are dropped.
_HEX_IDS = ("traceId", "spanId", "trace_id", "span_id")
_SCALARS = frozenset({"string_value", "int_value", "double_value", "bool_value"})
EMPTY_ANSWERS: dict[str, type[Message]] = {
    "logs": ExportLogsServiceResponse,
    "metrics": ExportMetricsServiceResponse,
    "traces": ExportTraceServiceResponse,
}


class Undecodable(ValueError):
    """The body is not an ``ExportLogsServiceRequest`` in the stated encoding."""


@dataclass(frozen=True)
class LogEvent:
    """One log record of a request, as ``otlp_feed.api_requests`` reads it."""

    host: str
    body: Value
    attributes: dict[str, Value]
    time_unix_nano: int


def decode_logs(body: bytes, media_type: str) -> ExportLogsServiceRequest:
    """The request in ``body`` (``media_type`` is PROTOBUF or JSON). Raises ``Undecodable``."""
    if media_type == PROTOBUF:
        try:
            return ExportLogsServiceRequest.FromString(body)
        except DecodeError as error:
            raise Undecodable(f"Body is not a protobuf ExportLogsServiceRequest: {error}") from None
    try:
        document = orjson.loads(body)  # bounded depth, strict UTF-8
    except orjson.JSONDecodeError as error:
        raise Undecodable(f"Body is not valid JSON: {error}") from None
    _drop_hex_ids(document)
    try:
        return json_format.ParseDict(
            document, ExportLogsServiceRequest(), ignore_unknown_fields=True
        )
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise Undecodable(f"Body is not an OTLP/JSON ExportLogsServiceRequest: {error}") from None


def _drop_hex_ids(document: object) -> None:
    for record in _json_log_records(document):
        for key in _HEX_IDS:
            record.pop(key, None)


def _json_log_records(document: object) -> Iterator[dict[str, Any]]:
    """Every log record object of a decoded OTLP/JSON body; anything misshapen is left to
    the parser to refuse."""
    for resource in _objects(document, "resourceLogs", "resource_logs"):
        for scope in _objects(resource, "scopeLogs", "scope_logs"):
            yield from _objects(scope, "logRecords", "log_records")


def _objects(parent: object, camel: str, snake: str) -> Iterator[dict[str, Any]]:
    if not isinstance(parent, dict):
        return
    children = parent.get(camel, parent.get(snake))
    if isinstance(children, list):
        yield from (child for child in children if isinstance(child, dict))


def log_events(request: ExportLogsServiceRequest) -> Iterator[LogEvent]:
    """Every log record of the request in order, with the host its resource names."""
    for resource_logs in request.resource_logs:
        host = resource_host(_attributes(resource_logs.resource.attributes, HOST_ATTRIBUTES))
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                body = _value(record.body)
                yield LogEvent(
                    host=host,
                    # Newer SDKs may name the event in its own field and leave the body empty.
                    body=body if body is not None else (record.event_name or None),
                    attributes=_attributes(record.attributes, READ_ATTRIBUTES),
                    time_unix_nano=record.time_unix_nano or record.observed_time_unix_nano,
                )


HOST_ATTRIBUTES = ("host.name", "service.instance.id")  # in order of preference


def resource_host(attributes: dict[str, Value]) -> str:
    """The machine a resource names: ``host.name``, else ``service.instance.id``, else ""."""
    for key in HOST_ATTRIBUTES:
        name = attributes.get(key)
        if isinstance(name, str) and name.strip():
            return name.strip()
    return ""


def _attributes(key_values: Any, read: Collection[str]) -> dict[str, Value]:
    """The attributes named in ``read``, as Python values; the others are never converted."""
    pairs: Iterator[KeyValue] = iter(key_values)
    return {pair.key: _value(pair.value) for pair in pairs if pair.key in read}


def _value(value: AnyValue) -> Value:
    """A scalar ``AnyValue`` as Python; arrays, key-value lists and bytes as None (no usage
    attribute is one)."""
    kind = value.WhichOneof("value")
    if kind in _SCALARS:
        scalar: Value = getattr(value, kind)
        return scalar
    return None


def logs_answer(media_type: str, *, rejected: int, message: str) -> bytes:
    """``ExportLogsServiceResponse``: ``partial_success`` set only when there is something
    to say (OTLP: unset on full success; ``rejected`` 0 with a message is a warning)."""
    answer = ExportLogsServiceResponse()
    if rejected or message:
        answer.partial_success.CopyFrom(
            ExportLogsPartialSuccess(rejected_log_records=rejected, error_message=message)
        )
    return encode(answer, media_type)


def empty_answer(signal: str, media_type: str) -> bytes:
    """The full success of a signal whose data is dropped (metrics, traces)."""
    return encode(EMPTY_ANSWERS[signal](), media_type)


def status(media_type: str, *, code: int, message: str, extra: dict[str, Any]) -> bytes:
    """A ``google.rpc.Status`` (``code`` is gRPC's). In JSON, ``extra`` is merged in: the
    error envelope the rest of the API answers with."""
    failure = Status(code=code, message=message)
    if media_type == PROTOBUF:
        return failure.SerializeToString()
    return orjson.dumps({**json_format.MessageToDict(failure), **extra})


def encode(message: Message, media_type: str) -> bytes:
    if media_type == PROTOBUF:
        return message.SerializeToString()
    # OTLP/JSON: lowerCamelCase keys (the mapping's default), int64 as strings.
    return orjson.dumps(json_format.MessageToDict(message))
