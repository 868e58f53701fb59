"""The OpenTelemetry SDK's own OTLP/HTTP exporters against the real server (one daphne
process, on the suite's database engine and Redis): what Claude Code's exporter does, end
to end, up to the REST answers and a WebSocket dashboard."""

from __future__ import annotations

import asyncio
import gzip
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from websockets.asyncio.client import connect

from tests.otlp_feed.events import (
    api_request_attributes,
    json_body,
    log_record,
    protobuf_body,
    user_prompt_attributes,
)
from tests.support import API, ServerProcess, manage, own_database, own_server

pytestmark = [pytest.mark.slow]

TIMEOUT = 30.0  # a bound on waiting, never an expectation of speed
MAX_RECORDS = 50
TOKENS = 10 + 100 + 1000 + 5000  # one api_request of api_request_attributes
SECRET_PROMPT = "the launch code is 0000"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("otlp-live")
    with (
        own_database(workdir) as database_url,
        own_server(
            workdir,
            "otlplive",
            variables={"DATABASE_URL": database_url, "USAGE_MAX_RECORDS": str(MAX_RECORDS)},
        ) as server,
    ):
        yield server


@pytest.fixture
def token(live: ServerProcess) -> str:
    """A user of the test's own, so that its stats/ say what this test sent."""
    return manage(live.env, "create_token", f"otlp{uuid.uuid4().hex[:12]}").strip()


def exporter(live: ServerProcess, token: str, **options: Any) -> OTLPLogExporter:
    return OTLPLogExporter(
        endpoint=f"{live.url}/v1/logs",
        headers={"Authorization": f"Token {token}"},
        timeout=TIMEOUT,
        **options,
    )


def calls(count: int, *, first: int = 0, host: str = "laptop") -> list[ReadableLogRecord]:
    now = datetime.now(tz=UTC)
    return [
        log_record(
            api_request_attributes(at=now - timedelta(minutes=30 - n), request_id=f"req_{n}"),
            host=host,
        )
        for n in range(first, first + count)
    ]


def stats(live: ServerProcess, token: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{live.url}{API}stats/", headers={"Authorization": f"Token {token}"}, timeout=TIMEOUT
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def requests_logged(live: ServerProcess, status: int, since: int) -> int:
    """How many POSTs to /v1/logs the server's access log answered ``status`` after the
    log's first ``since`` characters."""
    text = live.log_path.read_text(errors="replace")[since:]
    lines = [line for line in text.splitlines() if '"POST /v1/logs' in line]
    return sum(1 for line in lines if f" {status} " in line)


def log_size(live: ServerProcess) -> int:
    return len(live.log_path.read_text(errors="replace"))


# --- what the SDK's exporter sends is counted -------------------------------------------


def test_a_logger_provider_s_batches_are_counted_with_the_host_of_their_resource(
    live: ServerProcess, token: str
) -> None:
    provider = LoggerProvider(resource=Resource.create({"host.name": "build-box"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter(live, token)))
    logger = provider.get_logger("com.anthropic.claude_code.events")
    now = datetime.now(tz=UTC)
    prompt = user_prompt_attributes(at=now, prompt=SECRET_PROMPT)
    logger.emit(LogRecord(body="claude_code.user_prompt", attributes=prompt))
    for n in range(3):
        attributes = api_request_attributes(at=now - timedelta(minutes=n), request_id=f"r{n}")
        logger.emit(LogRecord(body="claude_code.api_request", attributes=attributes))

    assert provider.force_flush(int(TIMEOUT * 1000))
    provider.shutdown()

    answer = stats(live, token)
    assert answer["total_messages"] == 3
    assert answer["total_tokens"] == 3 * TOKENS
    assert [(row["host"], row["total_messages"]) for row in answer["hosts"]] == [("build-box", 3)]
    log = live.log_path.read_text(errors="replace")
    assert token not in log
    assert SECRET_PROMPT not in log


def test_a_gzip_export_is_counted(live: ServerProcess, token: str) -> None:
    sender = exporter(live, token, compression=Compression.Gzip)

    assert sender.export(calls(4)) == LogRecordExportResult.SUCCESS
    assert stats(live, token)["total_messages"] == 4


def test_an_otlp_json_export_with_hex_trace_ids_is_counted(live: ServerProcess, token: str) -> None:
    answer = httpx.post(
        f"{live.url}/v1/logs",
        content=json_body(calls(2)),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )

    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {}
    assert answer.headers["X-Usage-Accepted"] == "2"
    assert stats(live, token)["total_messages"] == 2


def test_an_exporter_sending_a_batch_again_has_it_counted_once(
    live: ServerProcess, token: str
) -> None:
    sender, batch = exporter(live, token), calls(5)

    results = [sender.export(batch), sender.export(batch)]

    assert results == [LogRecordExportResult.SUCCESS] * 2
    assert stats(live, token)["total_messages"] == 5


def test_a_bad_record_is_a_partial_success_and_the_rest_is_counted(
    live: ServerProcess, token: str
) -> None:
    batch = calls(3)
    now = datetime.now(tz=UTC)
    batch.insert(1, log_record(api_request_attributes(at=now, request_id="bad", input_tokens=-1)))

    answer = httpx.post(
        f"{live.url}/v1/logs",
        content=gzip.compress(protobuf_body(batch)),
        headers={
            "Authorization": f"Token {token}",
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
        },
        timeout=TIMEOUT,
    )

    partial = ExportLogsServiceResponse.FromString(answer.content).partial_success
    assert answer.status_code == 200
    assert partial.rejected_log_records == 1
    assert "log record 1: VALIDATION_ERROR: input_tokens must not be negative" in (
        partial.error_message
    )
    assert stats(live, token)["total_messages"] == 3


# --- failures an exporter must not retry, and one it must -------------------------------


def test_a_refused_token_fails_the_export_once_without_a_retry(live: ServerProcess) -> None:
    since = log_size(live)

    result = exporter(live, "0000not-a-real-token0000").export(calls(1))

    assert result == LogRecordExportResult.FAILURE
    time.sleep(0.5)  # the access log line is written after the answer
    assert requests_logged(live, 401, since) == 1


def test_a_batch_over_the_record_limit_fails_once_without_a_retry(
    live: ServerProcess, token: str
) -> None:
    since = log_size(live)

    result = exporter(live, token).export(calls(MAX_RECORDS + 1))

    assert result == LogRecordExportResult.FAILURE
    time.sleep(0.5)
    assert requests_logged(live, 413, since) == 1
    assert stats(live, token)["total_messages"] == 0


def test_an_undecodable_body_is_a_400_with_a_status(live: ServerProcess, token: str) -> None:
    answer = httpx.post(
        f"{live.url}/v1/logs",
        content=b"\xff\xff\xff\xff",
        headers={"Authorization": f"Token {token}", "Content-Type": "application/x-protobuf"},
        timeout=TIMEOUT,
    )

    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/x-protobuf"
    assert "not an ExportLogsServiceRequest" in Status.FromString(answer.content).message


def test_a_body_over_the_limit_is_refused_before_it_is_read(
    live: ServerProcess, token: str
) -> None:
    limit = int(live.env.get("USAGE_MAX_BODY_BYTES", 10 * 1024 * 1024))

    answer = httpx.post(
        f"{live.url}/v1/logs",
        content=b"\x00" * (limit + 1),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/x-protobuf"},
        timeout=TIMEOUT,
    )

    assert answer.status_code == 413
    assert answer.headers["Content-Type"] == "application/x-protobuf"
    status = Status.FromString(answer.content)  # OTLP/HTTP: a Status, in the request's encoding
    assert (status.code, status.message) == (
        3,
        f"Body of {limit + 1} bytes; the limit is {limit} bytes",
    )


# --- the other signals, and the dashboard -------------------------------------------------


def test_the_sdk_s_metric_exporter_succeeds_and_nothing_is_counted(
    live: ServerProcess, token: str
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({}), metric_readers=[reader])
    provider.get_meter("claude_code").create_counter("claude_code.token.usage").add(1000)
    data = reader.get_metrics_data()
    assert data is not None
    sender = OTLPMetricExporter(
        endpoint=f"{live.url}/v1/metrics",
        headers={"Authorization": f"Token {token}"},
        timeout=TIMEOUT,
    )

    assert sender.export(data) == MetricExportResult.SUCCESS
    assert stats(live, token)["total_messages"] == 0


async def test_a_dashboard_gets_a_frame_after_an_otlp_export(
    live: ServerProcess, token: str
) -> None:
    url = f"ws://127.0.0.1:{live.port}/ws/claude-usage/?token={token}"
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/x-protobuf"}
    async with (
        connect(url, open_timeout=TIMEOUT) as dashboard,
        httpx.AsyncClient(base_url=live.url, headers=headers, timeout=TIMEOUT) as client,
    ):
        first = orjson.loads(await asyncio.wait_for(dashboard.recv(), TIMEOUT))
        answer = await client.post("/v1/logs", content=protobuf_body(calls(2)))
        position = int(answer.headers["X-Usage-Position"])
        frame = first
        while frame.get("position", -1) < position:
            frame = orjson.loads(await asyncio.wait_for(dashboard.recv(), TIMEOUT))

    assert first["summary"]["total_messages"] == 0
    assert frame["type"] == "dashboard"
    assert frame["summary"]["total_tokens"] == 2 * TOKENS


def test_json_failures_parse_as_a_status(live: ServerProcess) -> None:
    answer = httpx.post(
        f"{live.url}/v1/logs",
        content=b"{}",
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )

    status = json_format.Parse(answer.content, Status(), ignore_unknown_fields=True)
    assert answer.status_code == 401
    assert status.code == 16
    assert answer.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
