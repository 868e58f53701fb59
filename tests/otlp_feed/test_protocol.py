"""OTLP's messages in and out with the official classes: OTLP/JSON's deviations from
protobuf's JSON mapping, AnyValues as Python, the host of a resource."""

from __future__ import annotations

import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from otlp_feed import protocol
from otlp_feed.api_requests import Value


def json_request(record: dict[str, object], resource: dict[str, object] | None = None) -> bytes:
    return orjson.dumps(
        {"resourceLogs": [{"resource": resource or {}, "scopeLogs": [{"logRecords": [record]}]}]}
    )


@pytest.mark.parametrize(
    "ids",
    [
        {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174"},
        {"traceId": "abc", "spanId": "not hex at all!"},  # odd, and not even base64
        {"trace_id": "5b8efff798038103d269b633813fc60c"},
    ],
)
def test_trace_and_span_ids_in_hex_do_not_stop_a_json_body(ids: dict[str, str]) -> None:
    body = json_request(
        {"timeUnixNano": "1759700000000000000", "body": {"stringValue": "x"}, **ids}
    )

    decoded = protocol.decode_logs(body, protocol.JSON)

    [event] = protocol.log_events(decoded)
    assert (event.body, event.time_unix_nano) == ("x", 1_759_700_000_000_000_000)


def test_json_takes_int64_as_numbers_unknown_fields_and_enums_as_integers() -> None:
    body = json_request(
        {"timeUnixNano": 1759700000000000000, "severityNumber": 9, "aFieldFromTheFuture": 1}
    )

    [event] = protocol.log_events(protocol.decode_logs(body, protocol.JSON))

    assert event.time_unix_nano == 1_759_700_000_000_000_000


def test_the_attributes_read_become_python_scalars_and_the_others_are_left() -> None:
    values = {
        "model": AnyValue(string_value="a"),
        "input_tokens": AnyValue(int_value=7),
        "cost_usd": AnyValue(double_value=0.5),
        "speed": AnyValue(bool_value=True),
        "session.id": AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)])),
        "request_id": AnyValue(kvlist_value=KeyValueList(values=[])),
        "event.name": AnyValue(bytes_value=b"\x00"),
        "prompt": AnyValue(string_value="never read"),  # not an attribute of api_request
        "user.email": AnyValue(string_value="dev@example.com"),
    }
    record = LogRecord(attributes=[KeyValue(key=k, value=v) for k, v in values.items()])
    message = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])]
    )

    [event] = protocol.log_events(message)

    assert event.attributes == {
        "model": "a",
        "input_tokens": 7,
        "cost_usd": 0.5,
        "speed": True,
        "session.id": None,
        "request_id": None,
        "event.name": None,
    }


def test_an_event_named_in_its_own_field_is_named_by_it() -> None:
    record = LogRecord(event_name="claude_code.api_request", observed_time_unix_nano=5)
    message = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[record])])]
    )

    [event] = protocol.log_events(message)

    assert (event.body, event.time_unix_nano) == ("claude_code.api_request", 5)


@pytest.mark.parametrize(
    ("attributes", "host"),
    [
        ({"host.name": "laptop", "service.instance.id": "i-1"}, "laptop"),
        ({"service.instance.id": "i-1"}, "i-1"),
        ({"host.name": " ", "service.instance.id": "i-1"}, "i-1"),
        ({"host.name": 5}, ""),
        ({}, ""),
    ],
)
def test_a_resource_names_its_host(attributes: dict[str, Value], host: str) -> None:
    assert protocol.resource_host(attributes) == host


def test_a_full_success_leaves_partial_success_unset_in_both_encodings() -> None:
    assert protocol.logs_answer(protocol.PROTOBUF, rejected=0, message="") == b""
    assert protocol.logs_answer(protocol.JSON, rejected=0, message="") == b"{}"


def test_a_partial_success_says_how_many_were_rejected_and_why() -> None:
    body = protocol.logs_answer(protocol.PROTOBUF, rejected=2, message="log record 1: bad")

    partial = ExportLogsServiceResponse.FromString(body).partial_success
    assert (partial.rejected_log_records, partial.error_message) == (2, "log record 1: bad")
    assert orjson.loads(protocol.logs_answer(protocol.JSON, rejected=2, message="m")) == {
        "partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "m"}
    }


def test_a_status_is_protobuf_or_json_with_the_envelope_beside_it() -> None:
    extra = {"error": {"code": "VALIDATION_ERROR", "message": "bad"}}

    binary = protocol.status(protocol.PROTOBUF, code=3, message="bad", extra=extra)
    text = protocol.status(protocol.JSON, code=3, message="bad", extra=extra)

    assert Status.FromString(binary) == Status(code=3, message="bad")
    assert orjson.loads(text) == {"code": 3, "message": "bad", **extra}


@pytest.mark.parametrize(
    ("body", "media_type"),
    [(b"\x0a\x02\xff\xff", protocol.PROTOBUF), (b'{"resourceLogs": [1]}', protocol.JSON)],
)
def test_what_the_official_classes_refuse_is_undecodable(body: bytes, media_type: str) -> None:
    with pytest.raises(protocol.Undecodable):
        protocol.decode_logs(body, media_type)
