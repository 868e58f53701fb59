"""Request bodies over the limit are refused by daphne's HTTP parser, before the application
runs and before the body is read: ``backend/body_limit.py`` against a real daphne.

The ingest path may carry ``USAGE_MAX_BODY_BYTES`` (here 256 KiB, to keep the bodies small),
every other path ``USAGE_MAX_OTHER_BODY_BYTES`` (its default, 64 KiB). No request here
carries a token unless it says so: the limit holds before authentication, on any path.

The requests are written by hand on raw sockets where the test must control what is sent
when: a head that declares 400 MB and then waits shows that the answer came before the body.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.rpc.status_pb2 import Status

from backend import body_limit
from tests.support import API, ServerProcess, manage, own_server

pytestmark = [pytest.mark.slow]

INGEST_LIMIT = 256 * 1024
OTHER_LIMIT = 64 * 1024  # the default of USAGE_MAX_OTHER_BODY_BYTES
DECLARED = 400 * 1024 * 1024  # what the attacker of issue 12 sent
BLOCK = 1024 * 1024
TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed
MISSING = "/nowhere/at/all/"  # a path that does not exist: Django would answer 404


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with own_server(
        tmp_path_factory.mktemp("body-limit"),  # a bare `daphne backend.asgi:...`
        "bodylimit",
        variables={"USAGE_RETENTION_HOURS": "0", "USAGE_MAX_BODY_BYTES": str(INGEST_LIMIT)},
    ) as server:
        yield server


# --- talking to the server ----------------------------------------------------------------


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)


def head(path: str, *lines: str) -> bytes:
    text = "".join(f"{line}\r\n" for line in (f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *lines))
    return f"{text}\r\n".encode()


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: http.client.HTTPMessage


def read_answer(connection: socket.socket) -> Answer:
    response = http.client.HTTPResponse(connection)
    response.begin()
    return Answer(response.status, orjson.loads(response.read()), response.headers)


def send_until_refused(connection: socket.socket, blocks: Iterable[bytes]) -> int:
    """Sends ``blocks`` until the server will take no more; how many bytes went out."""
    sent = 0
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        for block in blocks:
            connection.sendall(block)
            sent += len(block)
    return sent


def post(
    server: ServerProcess, path: str, body: bytes | Iterable[bytes], headers: dict[str, str]
) -> Answer:
    """http.client's way: the whole body is sent before the answer is read."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        chunked = not isinstance(body, bytes)
        connection.request("POST", path, body, headers, encode_chunked=chunked)
        response = connection.getresponse()
        return Answer(response.status, orjson.loads(response.read()), response.headers)
    finally:
        connection.close()


def chunks(size: int, chunk: int = 8 * 1024) -> Iterator[bytes]:
    for start in range(0, size, chunk):
        yield b" " * min(chunk, size - start)


def chunk_frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def peak_rss_kib(pid: int) -> int:
    """The process's high-water mark of resident memory (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def assert_refused(answer: Answer, limit: int) -> None:
    assert answer.status == 413, answer
    assert answer.body["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert str(limit) in answer.body["error"]["message"]


def ingest_token(live: ServerProcess) -> str:
    return manage(live.env, "create_token", f"user{uuid.uuid4().hex[:12]}").strip()


# --- the limit of each path ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "answered_as"),
    [
        (f"{API}events/", "application/x-ndjson", "application/json"),
        ("/v1/logs", "application/x-protobuf", "application/x-protobuf"),
        ("/v1/metrics", "application/json; charset=utf-8", "application/json"),
        ("/v1/traces", "", "application/json"),
    ],
)
def test_a_refusal_on_otlps_paths_is_a_status_in_the_requests_encoding(
    path: str, content_type: str, answered_as: str
) -> None:
    body, media_type = body_limit.refusal(path.encode(), "", content_type, "Body too large")

    assert media_type == answered_as
    if media_type == "application/x-protobuf":
        assert Status.FromString(body) == Status(code=3, message="Body too large")
    else:
        answer = orjson.loads(body)
        assert answer["error"] == {"code": "PAYLOAD_TOO_LARGE", "message": "Body too large"}
        if path.startswith("/v1/"):
            assert (answer["code"], answer["message"]) == (3, "Body too large")


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        (f"{API}events/", "ingest"),
        (f"{API}%65vents/", "ingest"),  # Django decodes the path before it resolves it
        (f"{API}limits/", "other"),
        (f"{API}events", "other"),
        (f"{API}events/x/", "other"),
        (MISSING, "other"),
        ("/v1/logs", "ingest"),  # OTLP/HTTP's three signals (otlp_feed)
        ("/v1/metrics", "ingest"),
        ("/v1/traces", "ingest"),
        ("/v1/logs/", "other"),
        ("/v1/profiles", "other"),
    ],
)
def test_only_the_ingest_path_may_carry_the_ingest_limit(
    settings: Any, path: str, limit: str
) -> None:
    settings.USAGE_MAX_BODY_BYTES = INGEST_LIMIT
    expected = INGEST_LIMIT if limit == "ingest" else settings.USAGE_MAX_OTHER_BODY_BYTES

    assert body_limit.limit_for(path.encode(), root_path="") == expected


def test_the_ingest_path_keeps_its_limit_under_a_root_path(settings: Any) -> None:
    settings.USAGE_MAX_BODY_BYTES = INGEST_LIMIT

    assert body_limit.limit_for(f"/usage{API}events/".encode(), root_path="/usage") == (
        INGEST_LIMIT
    )


# --- a declared length over the limit -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "declared", "limit"),
    [
        (MISSING, DECLARED, OTHER_LIMIT),
        (f"{API}limits/", OTHER_LIMIT + 1, OTHER_LIMIT),
        (f"{API}events/", INGEST_LIMIT + 1, INGEST_LIMIT),
        (f"{API}events/", DECLARED, INGEST_LIMIT),
    ],
    ids=[
        "400 MB to a missing path",
        "limits/ one byte over",
        "events/ one byte over",
        "events/ 400 MB",
    ],
)
def test_a_declared_length_over_the_limit_is_answered_413_before_the_body_is_sent(
    live: ServerProcess, path: str, declared: int, limit: int
) -> None:
    with connect(live) as connection:
        connection.sendall(head(path, f"Content-Length: {declared}"))

        answer = read_answer(connection)  # not a byte of the body has gone out

    assert_refused(answer, limit)
    assert answer.headers["Connection"] == "close"


def test_a_client_that_asks_to_continue_gets_the_413_instead(live: ServerProcess) -> None:
    with connect(live) as connection:
        connection.sendall(head(MISSING, f"Content-Length: {DECLARED}", "Expect: 100-continue"))

        answer = read_answer(connection)

    assert_refused(answer, OTHER_LIMIT)


def test_a_client_that_sends_400_mb_anyway_is_cut_off_and_the_worker_does_not_grow(
    live: ServerProcess,
) -> None:
    peak_before = peak_rss_kib(live.pid)
    block = b"x" * BLOCK

    with connect(live) as connection:
        connection.sendall(head(MISSING, f"Content-Length: {DECLARED}"))
        sent = send_until_refused(connection, (block for _ in range(DECLARED // BLOCK)))

    growth_mib = (peak_rss_kib(live.pid) - peak_before) / 1024
    assert sent < DECLARED
    assert growth_mib < 32, f"the worker's peak memory grew by {growth_mib:.0f} MiB"


def test_a_client_that_sends_its_whole_body_before_reading_still_reads_the_413(
    live: ServerProcess,
) -> None:
    # http.client, urllib and the agent send the whole body before they read anything: the
    # server must keep reading (and dropping) a reasonable excess, or the client only sees
    # its connection reset.
    answer = post(live, MISSING, b"x" * BLOCK, {"Content-Type": "application/json"})

    assert_refused(answer, OTHER_LIMIT)


# --- a chunked body -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "limit"), [(MISSING, OTHER_LIMIT), (f"{API}events/", INGEST_LIMIT)]
)
def test_a_chunked_body_is_answered_413_as_soon_as_it_passes_the_limit(
    live: ServerProcess, path: str, limit: int
) -> None:
    with connect(live) as connection:
        connection.sendall(head(path, "Transfer-Encoding: chunked"))
        connection.sendall(b"".join(chunk_frame(data) for data in chunks(limit + 1)))

        answer = read_answer(connection)  # the body has not ended

    assert_refused(answer, limit)


def test_a_chunked_body_sent_whole_before_reading_is_answered_413(live: ServerProcess) -> None:
    answer = post(live, MISSING, chunks(BLOCK), {"Content-Type": "application/json"})

    assert_refused(answer, OTHER_LIMIT)


def test_a_chunked_body_that_never_ends_is_disconnected(live: ServerProcess) -> None:
    peak_before = peak_rss_kib(live.pid)
    frame = chunk_frame(b"x" * BLOCK)

    with connect(live) as connection:
        connection.sendall(head(MISSING, "Transfer-Encoding: chunked"))
        sent = send_until_refused(connection, (frame for _ in range(DECLARED // BLOCK)))

    growth_mib = (peak_rss_kib(live.pid) - peak_before) / 1024
    assert sent < DECLARED
    assert growth_mib < 32, f"the worker's peak memory grew by {growth_mib:.0f} MiB"


# --- bodies within the limit ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "status"), [(OTHER_LIMIT, 404), (OTHER_LIMIT + 1, 413)], ids=["at", "over"]
)
def test_a_missing_path_takes_a_body_up_to_the_other_limit(
    live: ServerProcess, size: int, status: int
) -> None:
    answer = post(live, MISSING, b" " * size, {"Content-Type": "application/json"})

    assert answer.status == status, answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_ingest_body_at_the_limit_is_ingested(live: ServerProcess, chunked: bool) -> None:
    line = orjson.dumps(
        {
            "type": "assistant",
            "timestamp": "2025-10-05T21:00:00Z",
            "message": {
                "id": f"msg_{uuid.uuid4().hex}",
                "model": "claude-sonnet-4-20250514",
                "usage": {"input_tokens": 10, "output_tokens": 1},
            },
        }
    )
    body = line + b"\n" * (INGEST_LIMIT - len(line))  # blank lines are skipped
    headers = {
        "Authorization": f"Token {ingest_token(live)}",
        "Content-Type": "application/x-ndjson",
    }
    pieces = (body[start : start + 8192] for start in range(0, len(body), 8192))

    answer = post(live, f"{API}events/", pieces if chunked else body, headers)

    assert (answer.status, answer.body.get("accepted")) == (200, 1), answer


def test_two_requests_on_one_connection_are_both_served(live: ServerProcess) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=TIMEOUT)
    try:
        statuses = []
        for size in (OTHER_LIMIT, 10):
            connection.request("POST", MISSING, b" " * size)
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()

    assert statuses == [404, 404]


# --- the launcher's workers -----------------------------------------------------------------


def test_the_workers_of_the_launcher_refuse_before_the_body_too(
    live: ServerProcess, tmp_path: Path
) -> None:
    server = ServerProcess(live.env, tmp_path / "serve.log", workers=1)
    server.start()
    try:
        with connect(server) as connection:
            connection.sendall(head(MISSING, f"Content-Length: {DECLARED}"))
            answer = read_answer(connection)
    finally:
        server.stop()

    assert_refused(answer, OTHER_LIMIT)
