"""No API token in any log line: daphne's access log (REST, WebSocket, pages) against a real
daphne, and the formatter every ``logging`` message goes through."""

from __future__ import annotations

import asyncio
import http.client
import logging
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets

from backend.access_log import REDACTED, RedactingFormatter, redact, redact_target
from tests.support import API, ServerProcess, manage, own_server, wait_until

KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (f"/stats/?token={KEY}", f"/stats/?token={REDACTED}"),
        (f"/stats/?TOKEN={KEY}&hours=6", f"/stats/?TOKEN={REDACTED}&hours=6"),
        (f"/stats/?hours=6&%74oken={KEY}", f"/stats/?hours=6&%74oken={REDACTED}"),
        (
            f"/stats/?access_token={KEY}&api_key={KEY}",
            f"/stats/?access_token={REDACTED}&api_key={REDACTED}",
        ),
        (f"/x/?authorization=Token%20{KEY}", f"/x/?authorization={REDACTED}"),
        (f"/x/?token={KEY}#top", f"/x/?token={REDACTED}#top"),
        ("/x/?tokens=3&hours=6", "/x/?tokens=3&hours=6"),  # not a credential's name
        ("/x/?token", "/x/?token"),
        ("/stats/", "/stats/"),
    ],
)
def test_a_request_target_keeps_everything_but_the_credentials(target: str, expected: str) -> None:
    assert redact_target(target) == expected


@pytest.mark.parametrize(
    "text",
    [
        f"GET /app/claude-usage/stats/?token={KEY} HTTP/1.1",
        f"Authorization: Token {KEY}",
        f"{{'authorization': 'Token {KEY}'}}",
        f"headers=[(b'authorization', b'Bearer {KEY}')]",
        f"Cookie: sessionid={KEY}",
        f"token {KEY} was refused",
    ],
)
def test_a_log_message_loses_its_credentials(text: str) -> None:
    assert KEY not in redact(text)


def test_the_logging_formatter_redacts_messages_arguments_and_tracebacks() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise ValueError(f"bad ?token={KEY}")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "GET %s", (f"/a/?token={KEY}",), sys.exc_info()
        )

    assert KEY not in formatter.format(record)


def test_the_settings_log_through_the_redacting_formatter() -> None:
    root_handlers = logging.getLogger().handlers
    assert any(isinstance(handler.formatter, RedactingFormatter) for handler in root_handlers)


# --- a real daphne ------------------------------------------------------------------------


@dataclass(frozen=True)
class Live:
    server: ServerProcess
    token: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tokens: list[str] = []

    def create_token(env: dict[str, str]) -> None:
        tokens.append(manage(env, "create_token", "alice").strip())

    workdir = tmp_path_factory.mktemp("access-log")
    with own_server(workdir, "accesslog", before_start=create_token) as server:
        yield Live(server, tokens[0])


def get(live: Live, target: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", live.server.port, timeout=60)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


async def open_and_close_a_socket(live: Live, query: str) -> None:
    url = f"ws://127.0.0.1:{live.server.port}/ws/claude-usage/?{query}"
    async with websockets.connect(url, open_timeout=60) as socket:
        await asyncio.wait_for(socket.recv(), 60)


@pytest.mark.slow
def test_no_request_line_of_a_real_daphne_shows_the_token(live: Live) -> None:
    key = live.token
    statuses = [
        get(live, f"{API}stats/?token={key}"),  # REST reads only the header: still 401
        get(live, f"{API}dashboard/?hours=6&TOKEN={key}"),
        get(live, f"{API}projects/?%74oken={key}"),
        get(live, f"/no-such-page/?token={key}"),  # a page: 404
    ]
    asyncio.run(open_and_close_a_socket(live, f"token={key}"))
    marker = f"/after-{uuid.uuid4().hex}/"
    get(live, marker)
    wait_until(lambda: marker in live.server.log_tail(200_000), "the access log line")

    log = live.server.log_path.read_text(errors="replace")

    assert statuses == [401, 401, 401, 404]
    assert key not in log
    assert log.count(REDACTED) >= 4
    assert "WSCONNECT /ws/claude-usage/" in log


def test_the_log_file_is_the_servers_own(live: Live, tmp_path: Path) -> None:
    # The module's server writes where the test reads (a wrong path would pass vacuously).
    assert live.server.log_path.exists()
    assert "Listening on" in live.server.log_path.read_text(errors="replace")
