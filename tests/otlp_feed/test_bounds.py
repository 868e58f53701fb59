"""Counting a request's log records before decoding it: the same count as the official
decoder's, in both encodings, and a refusal one past the limit."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otlp_feed import bounds

RECORD = LogRecord(
    time_unix_nano=1_759_700_000_000_000_000,
    severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
    body=AnyValue(string_value="claude_code.api_request"),
    attributes=[KeyValue(key="input_tokens", value=AnyValue(int_value=10))],
    trace_id=b"\x01" * 16,
    flags=1,
)


def request(*layout: list[int]) -> ExportLogsServiceRequest:
    """One resource per list, one scope per number, that many records in the scope."""
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(
                    attributes=[KeyValue(key="host.name", value=AnyValue(string_value="a"))]
                ),
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name="claude_code", version="2.0"),
                        log_records=[RECORD] * count,
                        schema_url="https://opentelemetry.io/schemas/1.0",
                    )
                    for count in scopes
                ],
                schema_url="https://opentelemetry.io/schemas/1.0",
            )
            for scopes in layout
        ]
    )


def encoded(message: ExportLogsServiceRequest, encoding: str) -> bytes:
    if encoding == "protobuf":
        return message.SerializeToString()
    return json_format.MessageToJson(message).encode()


COUNTERS = {"protobuf": bounds.count_protobuf, "json": bounds.count_json}
LAYOUTS = [[], [[]], [[0]], [[3]], [[1, 2], [0, 4]], [[5], [5], [5]]]


@pytest.mark.parametrize("encoding", COUNTERS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_it_counts_the_records_the_decoder_finds(encoding: str, layout: list[list[int]]) -> None:
    message = request(*layout)

    count = COUNTERS[encoding](encoded(message, encoding), 100)

    assert count == sum(sum(scopes) for scopes in layout)


@pytest.mark.parametrize("encoding", COUNTERS)
@pytest.mark.parametrize(
    ("layout", "what"),
    [
        ([[6]], "log records"),
        ([[3], [3]], "log records"),
        ([[0] * 6], "scopes"),
        ([[]] * 6, "resources"),
    ],
)
def test_one_past_the_limit_is_too_many(encoding: str, layout: list[list[int]], what: str) -> None:
    body = encoded(request(*layout), encoding)

    with pytest.raises(bounds.TooMany, match=f"More than 5 {what} in one request"):
        COUNTERS[encoding](body, 5)


def test_json_with_the_proto_field_names_is_counted_too() -> None:
    body = json_format.MessageToJson(request([2, 1]), preserving_proto_field_name=True).encode()

    assert bounds.count_json(body, 100) == 3


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",  # a varint cut short
        b"\x0a\x05ab",  # a resource longer than the body
        b"\x0b\x0c",  # a group
        b"\x0f",  # wire type 7 does not exist
    ],
)
def test_a_protobuf_body_it_cannot_follow_is_unfollowable(body: bytes) -> None:
    with pytest.raises(bounds.Unfollowable):
        bounds.count_protobuf(body, 100)


@pytest.mark.parametrize(
    "body", [b"", b"[]", b"{", b'{"resourceLogs": 5}', b'{"resourceLogs": [{"scopeLogs": {}}]}']
)
def test_a_json_body_it_cannot_follow_is_unfollowable(body: bytes) -> None:
    with pytest.raises(bounds.Unfollowable):
        bounds.count_json(body, 100)
