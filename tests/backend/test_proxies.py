"""``X-Forwarded-For`` counts only from ``USAGE_TRUSTED_PROXIES``: pure rules, the launcher's
daphne command, and real daphne processes whose access log and per-address rate limit show
which address they took for the client."""

from __future__ import annotations

import contextlib
import http.client
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.checks import Error
from django.test import override_settings
from twisted.web.http_headers import Headers

from backend import serve
from backend.checks import check_settings
from backend.proxies import forwarded_client, network, parse_forwarded
from tests.support import API, ServerProcess, own_server, wait_until

TRUSTED = [network("127.0.0.1"), network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        pytest.param(
            "203.0.113.9", ["6.6.6.6"], "203.0.113.9", id="an-untrusted-peer-is-the-client"
        ),
        pytest.param("127.0.0.1", ["6.6.6.6"], "6.6.6.6", id="a-trusted-proxy-names-the-client"),
        pytest.param(
            "127.0.0.1", ["1.1.1.1, 6.6.6.6"], "6.6.6.6", id="what-the-client-prepended-is-ignored"
        ),
        pytest.param(
            "127.0.0.1", ["1.1.1.1, 6.6.6.6, 10.1.1.1"], "6.6.6.6", id="a-chain-of-trusted-proxies"
        ),
        pytest.param("127.0.0.1", ["1.1.1.1", "6.6.6.6"], "6.6.6.6", id="two-headers"),
        pytest.param("127.0.0.1", ["10.2.2.2"], "10.2.2.2", id="all-trusted-the-left-most"),
        pytest.param("127.0.0.1", ["not-an-address"], "127.0.0.1", id="garbage-keeps-the-peer"),
        pytest.param("127.0.0.1", [], "127.0.0.1", id="no-header"),
        pytest.param("127.0.0.1", ["2001:db8::1"], "2001:db8::1", id="ipv6"),
    ],
)
def test_the_client_is_the_right_most_address_no_trusted_proxy_added(
    peer: str, forwarded_for: list[str], client: str
) -> None:
    assert forwarded_client(peer, forwarded_for, TRUSTED) == client


@override_settings(USAGE_TRUSTED_PROXIES=["127.0.0.1"])
def test_daphnes_parser_takes_the_forwarded_address_and_scheme_only_from_a_trusted_peer() -> None:
    headers = Headers({b"X-Forwarded-For": [b"6.6.6.6"], b"X-Forwarded-Proto": [b"https"]})
    names = ("X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto")

    trusted = parse_forwarded(headers, *names, ["127.0.0.1", 5000], "http")
    untrusted = parse_forwarded(headers, *names, ["198.51.100.7", 5000], "http")
    websocket = parse_forwarded({b"x-forwarded-for": b"6.6.6.6"}, *names, ["127.0.0.1", 5000])

    assert trusted == (["6.6.6.6", 0], "https")
    assert untrusted == (["198.51.100.7", 5000], "http")
    assert websocket == (["6.6.6.6", 0], None)


def test_without_trusted_proxies_daphnes_parser_trusts_nobody() -> None:
    headers = Headers({b"X-Forwarded-For": [b"6.6.6.6"]})

    result = parse_forwarded(headers, "X-Forwarded-For", None, None, ["127.0.0.1", 5000], "http")

    assert result == (["127.0.0.1", 5000], "http")


def test_the_launcher_asks_daphne_for_proxy_headers_only_behind_trusted_proxies() -> None:
    assert "--proxy-headers" not in serve.daphne_command(3, [])
    assert "--proxy-headers" in serve.daphne_command(3, [], trust_proxies=True)


@pytest.mark.parametrize("value", [["10.0.0.1", "a-host-name"], ["10.0.0.0/33"]])
def test_trusted_proxies_that_are_not_addresses_are_refused_at_start_up(value: list[str]) -> None:
    with override_settings(USAGE_TRUSTED_PROXIES=value):
        errors = [error.msg for error in check_settings() if isinstance(error, Error)]

    assert len(errors) == 1
    assert errors[0].startswith(f"USAGE_TRUSTED_PROXIES={value!r}: must be")


# --- real servers ---------------------------------------------------------------------------


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    """Starts a server in a fresh directory; stops it and drops its keys afterwards."""
    with contextlib.ExitStack() as servers:

        def _start(workers: int, options: tuple[str, ...] = (), **extra: str) -> ServerProcess:
            workdir = tmp_path / uuid.uuid4().hex
            workdir.mkdir()
            return servers.enter_context(
                own_server(
                    workdir, "proxies", workers=workers, daphne_options=options, variables=extra
                )
            )

        yield _start


def get(server: ServerProcess, target: str, forwarded_for: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("GET", target, headers={"X-Forwarded-For": forwarded_for})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def logged_client(server: ServerProcess, forwarded_for: str) -> str:
    """The client address the server's access log gives a request sent with this header."""
    marker = f"/marker-{uuid.uuid4().hex}/"
    get(server, marker, forwarded_for)
    request = f'"GET {marker}'  # the access log's request field (not Django's "Not Found")
    wait_until(lambda: request in server.log_tail(200_000), "the access log line")
    line = next(line for line in server.log_tail(200_000).splitlines() if request in line)
    return line.split(" ", 1)[0].rsplit(":", 1)[0]


@pytest.mark.slow
def test_a_bare_daphne_with_proxy_headers_ignores_them_without_trusted_proxies(
    start: object,
) -> None:
    server = start(0, ("--proxy-headers",))  # type: ignore[operator]

    assert logged_client(server, "6.6.6.6") == "127.0.0.1"


@pytest.mark.slow
def test_the_launcher_ignores_forwarded_headers_without_trusted_proxies(start: object) -> None:
    server = start(1)  # type: ignore[operator]

    assert logged_client(server, "6.6.6.6") == "127.0.0.1"


@pytest.mark.slow
def test_behind_a_trusted_proxy_the_client_it_names_is_logged_and_rate_limited(
    start: object,
) -> None:
    server = start(  # type: ignore[operator]
        1, USAGE_TRUSTED_PROXIES="127.0.0.1", USAGE_THROTTLE_ANONYMOUS_PER_MINUTE="2"
    )
    schema = f"{API}schema/?format=json"

    logged = logged_client(server, "1.1.1.1, 6.6.6.6")
    # Five requests from 7.7.7.7, each with another address prepended: one window holds at
    # least three of them even if a minute boundary falls between, so one is over the 2.
    same_client = [get(server, schema, f"{n}.{n}.{n}.{n}, 7.7.7.7") for n in range(1, 6)]
    another_client = get(server, schema, "8.8.8.8")

    assert logged == "6.6.6.6"
    assert 429 in same_client
    assert another_client == 200
