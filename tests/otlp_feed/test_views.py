"""POST /v1/logs (and /v1/metrics, /v1/traces) in process: the real database and Redis,
bodies encoded by the OpenTelemetry SDK's own encoder, answers read with the official
classes. The headline cases also run against a real server (test_live_export.py)."""

from __future__ import annotations

import gzip
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.db import OperationalError
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import ReadableLogRecord
from pytest_django import Settings
from rest_framework.test import APIClient

from tests.conftest import Clock
from tests.otlp_feed.events import (
    api_request_attributes,
    json_body,
    log_record,
    protobuf_body,
    user_prompt_attributes,
)
from usage import outage
from usage.models import LoggedEvent

pytestmark = [pytest.mark.django_db(transaction=True)]

LOGS = "/v1/logs"
STATS = "/app/claude-usage/stats/"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ENCODINGS = {PROTOBUF: protobuf_body, JSON: json_body}
# What one api_request of api_request_attributes counts: 10 in, 100 out, 1000 written, 5000 read.
TOKENS = 10 + 100 + 1000 + 5000
SECRET_PROMPT = "the launch code is 0000"


def post(client: APIClient, body: bytes, content_type: str = PROTOBUF, **headers: Any) -> Any:
    return client.post(LOGS, data=body, content_type=content_type, **headers)


def logs_answer(response: Any) -> ExportLogsServiceResponse:
    if response["Content-Type"] == JSON:
        return json_format.Parse(response.content, ExportLogsServiceResponse())
    return ExportLogsServiceResponse.FromString(response.content)


def failure(response: Any) -> Status:
    """The Status of a failure, in either encoding (JSON also carries the envelope)."""
    if response["Content-Type"] == JSON:
        return json_format.Parse(response.content, Status(), ignore_unknown_fields=True)
    return Status.FromString(response.content)


def counts(response: Any) -> dict[str, int]:
    names = ("Accepted", "Duplicates", "Ignored", "Rejected", "Expired")
    return {name.lower(): int(response[f"X-Usage-{name}"]) for name in names}


def stats(client: APIClient) -> dict[str, Any]:
    answer: dict[str, Any] = client.get(STATS).json()
    return answer


def a_session(clock: Clock, requests: int = 2) -> list[ReadableLogRecord]:
    """A prompt, then ``requests`` api_request events, a minute apart."""
    start = clock.now - timedelta(minutes=30)
    prompt = log_record(
        user_prompt_attributes(at=start, prompt=SECRET_PROMPT), body="claude_code.user_prompt"
    )
    calls = [
        log_record(api_request_attributes(at=start + timedelta(minutes=n), request_id=f"req_{n}"))
        for n in range(1, requests + 1)
    ]
    return [prompt, *calls]


# --- what is counted --------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_an_export_counts_its_api_requests_and_ignores_every_other_event(
    api: APIClient, otlp_clock: Clock, content_type: str
) -> None:
    response = post(api, ENCODINGS[content_type](a_session(otlp_clock)), content_type)

    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert not logs_answer(response).HasField("partial_success")
    assert counts(response) == {
        "accepted": 2,
        "duplicates": 0,
        "ignored": 1,
        "rejected": 0,
        "expired": 0,
    }
    assert int(response["X-Usage-Position"]) >= 1
    assert stats(api)["total_tokens"] == 2 * TOKENS


def test_a_gzip_body_is_counted(api: APIClient, otlp_clock: Clock) -> None:
    body = gzip.compress(protobuf_body(a_session(otlp_clock, requests=3)))

    response = post(api, body, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200
    assert counts(response)["accepted"] == 3


def test_each_resource_names_its_own_host(api: APIClient, otlp_clock: Clock) -> None:
    at = otlp_clock.now - timedelta(minutes=10)
    records = [
        log_record(api_request_attributes(at=at, request_id="req_a"), host="laptop"),
        log_record(
            api_request_attributes(at=at, request_id="req_b"),
            host=None,
            resource={"service.instance.id": "ci-runner-7"},
        ),
        log_record(api_request_attributes(at=at, request_id="req_c"), host=None),
    ]

    assert post(api, protobuf_body(records)).status_code == 200

    hosts = {row["host"]: row["total_messages"] for row in stats(api)["hosts"]}
    assert hosts == {"laptop": 1, "ci-runner-7": 1, "": 1}


def test_an_exporter_sending_the_same_batch_again_counts_it_once(
    api: APIClient, otlp_clock: Clock
) -> None:
    body = protobuf_body(a_session(otlp_clock))

    first, again = post(api, body), post(api, body)

    assert counts(first)["accepted"] == 2
    assert counts(again)["accepted"] == 0
    assert counts(again)["duplicates"] == 2
    assert stats(api)["total_tokens"] == 2 * TOKENS


def test_without_request_ids_a_resent_batch_counts_once_by_session_and_sequence(
    api: APIClient, otlp_clock: Clock
) -> None:
    at = otlp_clock.now - timedelta(minutes=10)
    records = [
        log_record(api_request_attributes(at=at, request_id=None, sequence=n)) for n in (1, 2)
    ]
    body = json_body(records)

    first, again = post(api, body, JSON), post(api, body, JSON)

    assert (counts(first)["accepted"], counts(again)["duplicates"]) == (2, 2)
    assert stats(api)["total_messages"] == 2


def test_a_bad_record_is_a_partial_success_that_names_it_and_the_others_are_kept(
    api: APIClient, otlp_clock: Clock
) -> None:
    records = a_session(otlp_clock, requests=3)
    broken = api_request_attributes(at=otlp_clock.now, request_id="req_broken", model="")
    records.insert(2, log_record(broken))

    response = post(api, json_body(records), JSON)

    assert response.status_code == 200
    partial = logs_answer(response).partial_success
    assert partial.rejected_log_records == 1
    assert "log record 2" in partial.error_message
    assert "model is missing" in partial.error_message
    assert counts(response)["accepted"] == 3
    assert counts(response)["rejected"] == 1


def test_a_prompt_is_never_stored(api: APIClient, otlp_clock: Clock) -> None:
    post(api, protobuf_body(a_session(otlp_clock)))

    stored = [str(row.__dict__) for row in LoggedEvent.objects.all()]
    assert len(stored) == 2
    assert not any(SECRET_PROMPT in row for row in stored)


def test_an_export_of_prompts_only_is_a_success_that_counts_nothing(
    api: APIClient, otlp_clock: Clock
) -> None:
    prompt = user_prompt_attributes(at=otlp_clock.now, prompt=SECRET_PROMPT)

    response = post(api, protobuf_body([log_record(prompt, body="claude_code.user_prompt")]))

    assert response.status_code == 200
    assert counts(response)["ignored"] == 1
    assert stats(api)["total_messages"] == 0


def test_an_empty_export_is_a_success(api: APIClient) -> None:
    response = post(api, b"")

    assert response.status_code == 200
    assert counts(response)["accepted"] == 0


# --- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
@pytest.mark.parametrize("authorization", [None, "Token 0000not-a-token0000", "Bearer abc"])
def test_without_a_valid_token_the_answer_is_401_with_a_status(
    user: Any, content_type: str, authorization: str | None
) -> None:
    client = APIClient()
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}

    response = post(client, b"", content_type, **headers)

    assert response.status_code == 401
    assert response["Content-Type"] == content_type
    assert failure(response).code == 16  # UNAUTHENTICATED
    assert failure(response).message.startswith("Authentication required")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (PROTOBUF, b"\xff\xff\xff"),
        (PROTOBUF, b"\x0a\x05\x12\x03\x12\x05abc"),  # a record runs past its scope
        (JSON, b"not json"),
        (JSON, b'{"resourceLogs": 5}'),
        (JSON, b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "x"}]}]}]}'),
        (JSON, b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": 5}]}]}]}'),
        (JSON, b"[" * 5000 + b"]" * 5000),
    ],
)
def test_an_undecodable_body_is_a_400_that_is_not_retried(
    api: APIClient, content_type: str, body: bytes
) -> None:
    response = post(api, body, content_type)

    assert response.status_code == 400
    assert response["Content-Type"] == content_type
    assert failure(response).code == 3  # INVALID_ARGUMENT
    if content_type == JSON:
        assert orjson.loads(response.content)["error"]["code"] == "VALIDATION_ERROR"


def test_a_json_failure_carries_the_status_fields_and_the_api_envelope(api: APIClient) -> None:
    response = post(api, b"{", JSON)

    answer = orjson.loads(response.content)
    assert set(answer) == {"code", "message", "error"}
    assert answer["error"]["message"] == answer["message"]


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "text/plain", "application/grpc"])
def test_another_content_type_is_a_415(api: APIClient, content_type: str) -> None:
    response = post(api, b"{}", content_type)

    assert response.status_code == 415
    assert response["Content-Type"] == JSON
    assert orjson.loads(response.content)["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_more_log_records_than_allowed_are_a_413_before_any_is_decoded(
    api: APIClient, otlp_clock: Clock, settings: Settings, content_type: str
) -> None:
    settings.USAGE_MAX_RECORDS = 3
    records = a_session(otlp_clock, requests=3)  # four log records, one a prompt

    response = post(api, ENCODINGS[content_type](records), content_type)

    assert response.status_code == 413
    assert "More than 3 log records" in failure(response).message
    assert stats(api)["total_messages"] == 0


def test_a_million_empty_log_records_are_refused_without_building_them(
    api: APIClient,
) -> None:
    # ExportLogsServiceRequest{resource_logs{scope_logs{log_records{} x 1,000,000}}}:
    # two bytes a record, 700 MB of decoded messages.
    records = b"\x12\x00" * 1_000_000
    scope = b"\x12" + _varint(len(records)) + records
    body = b"\x0a" + _varint(len(scope)) + scope

    response = post(api, gzip.compress(body), HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 413
    assert "log records" in failure(response).message


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def test_a_gzip_bomb_is_refused_at_the_body_limit(api: APIClient, settings: Settings) -> None:
    settings.USAGE_MAX_BODY_BYTES = 1024 * 1024
    bomb = gzip.compress(b"\x00" * (20 * 1024 * 1024))  # 20 KB that inflate to 20 MB

    response = post(api, bomb, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 413
    assert "Decompressed body over the limit" in failure(response).message


def test_an_export_over_the_write_rate_is_a_429_with_retry_after(
    api: APIClient, settings: Settings
) -> None:
    settings.USAGE_THROTTLE_WRITE_PER_MINUTE = 1
    post(api, b"")

    response = post(api, b"")

    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    assert failure(response).code == 8  # RESOURCE_EXHAUSTED


@pytest.mark.postgres_only  # usage.outage: SQLite never goes down this way
def test_an_export_while_the_database_is_down_is_a_503_with_retry_after(
    api: APIClient, otlp_clock: Clock
) -> None:
    assert post(api, b"").status_code == 200  # the token is now known to this process
    outage.failed(OperationalError("connection refused"))

    response = post(api, protobuf_body(a_session(otlp_clock)))

    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert failure(response).code == 14  # UNAVAILABLE


@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=400), content_type=st.sampled_from([PROTOBUF, JSON]))
def test_no_body_makes_the_server_fail(api: APIClient, body: bytes, content_type: str) -> None:
    response = post(api, body, content_type)

    assert response.status_code in (200, 400)


# --- the signals that are dropped ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/metrics", "/v1/traces"])
@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_metrics_and_traces_are_answered_success_and_dropped(
    api: APIClient, path: str, content_type: str
) -> None:
    response = api.post(path, data=b"\x0a\x00", content_type=content_type)

    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response.content == (b"{}" if content_type == JSON else b"")
    assert stats(api)["total_messages"] == 0


def test_metrics_need_the_token_too(user: Any) -> None:
    response = APIClient().post("/v1/metrics", data=b"", content_type=PROTOBUF)

    assert response.status_code == 401
    assert failure(response).code == 16
