"""``realtime.backpressure`` against the real Twisted, daphne and autobahn whose internals it
reads (pinned in requirements.txt): these tests are what fails when an upgrade moves them.

- ``buffered_bytes`` on a real TCP connection of a Twisted reactor, to a peer that stopped
  reading;
- daphne's ``serverSend``, which the guard wraps, has the signature the guard passes on;
- a real daphne server (daphne's own test process) with the guard installed: a client that
  reads gets every frame, one that stops reading is dropped once the server holds more than
  the limit for it.

Every wait is bounded by a generous timeout; nothing here asserts a latency.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import select
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from daphne.testing import DaphneProcess
from daphne.ws_protocol import WebSocketProtocol
from pytest_django.fixtures import Settings
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.selectreactor import SelectReactor
from websockets.sync.client import connect

from realtime import backpressure
from realtime.backpressure import buffered_bytes

TIMEOUT = 10.0  # generous: a bound on waiting, never an expectation of speed
ROUNDS = 1000  # reactor rounds allowed for the kernel's buffers to fill up
SMALL_BUFFER = 4096  # socket buffer sizes asked for, so that the kernel takes little
PAYLOAD = bytes(range(256)) * 8192  # 2 MiB, far more than those buffers hold
FRAME = bytes(range(256)) * 256  # 64 KiB
FRAMES = 256  # 16 MiB: more than the kernel holds for a client that does not read
LIMIT = 256 * 1024  # USAGE_WS_MAX_BUFFERED_BYTES for the server in these tests

Message = dict[str, Any]


# --- buffered_bytes on a real Twisted connection -----------------------------------------


@pytest.fixture
def reactor() -> Iterator[SelectReactor]:
    """A Twisted reactor of the test's own, driven round by round with ``iterate``: never
    installed as the global one and never run."""
    reactor = SelectReactor()
    yield reactor
    reactor.disconnectAll()
    reactor.waker.connectionLost(None)  # closes the pipe it was built with


def accept_a_peer_that_does_not_read(reactor: SelectReactor) -> tuple[Any, socket.socket]:
    """The server-side Twisted transport of a connection, and the peer's socket."""
    accepted: list[Protocol] = []

    class Accepted(Protocol):
        def connectionMade(self) -> None:
            accepted.append(self)

    factory = Factory.forProtocol(Accepted)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[no-untyped-call]
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)  # before connecting
    peer.settimeout(TIMEOUT)
    peer.connect(("127.0.0.1", port.getHost().port))
    for _ in range(ROUNDS):
        if accepted:
            break
        reactor.iterate(TIMEOUT)
    else:
        pytest.fail(f"the reactor did not accept the connection in {ROUNDS} rounds")
    transport: Any = accepted[0].transport  # a tcp.Server (typed as ITransport)
    transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    return transport, peer


def flush_until_the_kernel_takes_no_more(reactor: SelectReactor, transport: Any) -> None:
    kernel_side = transport.getHandle()
    for _ in range(ROUNDS):
        if not select.select([], [kernel_side], [], 0)[1]:
            return
        reactor.iterate(0)
    pytest.fail(f"the kernel still took data after {ROUNDS} reactor rounds")


def what_the_kernel_took(transport: Any, peer: socket.socket) -> bytes:
    """Every byte the kernel accepted from Twisted, read by the peer at last. The reactor
    does not run again, so nothing more leaves Twisted's buffers: the kernel sends what it
    holds and then the end of the stream."""
    transport.getHandle().shutdown(socket.SHUT_WR)
    received = bytearray()
    while chunk := peer.recv(1 << 20):
        received += chunk
    return bytes(received)


def test_buffered_bytes_is_what_was_written_and_not_yet_taken_by_the_kernel(
    reactor: SelectReactor,
) -> None:
    transport, peer = accept_a_peer_that_does_not_read(reactor)
    more = FRAME

    transport.write(PAYLOAD)
    flush_until_the_kernel_takes_no_more(reactor, transport)
    held_after_the_flush = buffered_bytes(transport)
    transport.write(more)  # not flushed: no reactor round after it
    held = buffered_bytes(transport)
    received = what_the_kernel_took(transport, peer)
    peer.close()

    written, taken = len(PAYLOAD) + len(more), len(received)
    assert 0 < taken < len(PAYLOAD)  # the kernel took some, Twisted kept the rest
    assert received == PAYLOAD[:taken]
    assert held == written - taken
    assert held - held_after_the_flush == len(more)


# --- daphne's send path --------------------------------------------------------------------


def test_the_guard_passes_on_exactly_what_daphnes_server_send_takes() -> None:
    shipped = inspect.unwrap(WebSocketProtocol.serverSend)  # daphne's own, guarded or not

    guard = backpressure.guarded(shipped)

    assert str(inspect.signature(shipped)) == "(self, content, binary=False)"
    assert inspect.signature(guard, follow_wrapped=False) == inspect.signature(shipped)


class Sender:
    """An ASGI application: accepts a WebSocket, sends ``messages`` one by one (letting the
    reactor hand what it can to the kernel after each), then waits for the client to go.
    ``sent_all`` is set once every send has been made."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self.messages = messages
        self.sent_all = multiprocessing.Event()

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        for message in self.messages:
            await send(message)
            await asyncio.sleep(0)
        self.sent_all.set()
        while (await receive())["type"] != "websocket.disconnect":
            pass


@contextmanager
def daphne_serving(application: Sender) -> Iterator[int]:
    """daphne's own test server, in a process forked from this one (so it has this test's
    settings), with the guard installed as backend.asgi installs it; yields its port."""
    server = DaphneProcess(
        host="127.0.0.1", get_application=lambda: application, setup=backpressure.install
    )
    server.start()
    try:
        if not server.ready.wait(TIMEOUT):
            pytest.fail(f"daphne did not start: {_startup_error(server)}")
        yield int(server.port.value)
    finally:
        server.terminate()
        server.join(TIMEOUT)


def _startup_error(server: DaphneProcess) -> str:
    return "no error reported" if server.errors.empty() else str(server.errors.get()[1])


def test_a_client_that_reads_gets_every_frame_through_the_guard(settings: Settings) -> None:
    settings.USAGE_WS_MAX_BUFFERED_BYTES = LIMIT
    messages: list[Message] = [
        {"type": "websocket.send", "text": "dashboard ✓"},
        {"type": "websocket.send", "bytes": FRAME},
        {"type": "websocket.send", "text": '{"type":"pong"}'},
    ]

    with (
        daphne_serving(Sender(messages)) as port,
        connect(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT) as client,
    ):
        received = [client.recv(timeout=TIMEOUT) for _ in messages]

    assert received == ["dashboard ✓", FRAME, '{"type":"pong"}']


def open_without_reading(port: int) -> socket.socket:
    """A WebSocket handshake on a raw socket; after it the client reads nothing."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)  # before connecting
    client.settimeout(TIMEOUT)
    client.connect(("127.0.0.1", port))
    client.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    status_line = client.recv(len(b"HTTP/1.1 101"), socket.MSG_WAITALL)
    assert status_line == b"HTTP/1.1 101", status_line
    return client


def read_until_the_end(client: socket.socket, at_most: int) -> tuple[int, str]:
    """How many bytes arrive before the connection ends, and how it ended. Reading stops
    early once ``at_most`` bytes arrived, or when nothing arrives for TIMEOUT seconds."""
    received = 0
    try:
        while received < at_most:
            chunk = client.recv(1 << 20)
            if not chunk:
                return received, "closed"
            received += len(chunk)
    except ConnectionResetError:
        return received, "reset"
    except TimeoutError:
        pass
    return received, "still open"


def test_a_client_that_stops_reading_is_dropped_once_the_server_holds_more_than_the_limit(
    settings: Settings,
) -> None:
    settings.USAGE_WS_MAX_BUFFERED_BYTES = LIMIT
    flood = Sender([{"type": "websocket.send", "bytes": FRAME}] * FRAMES)
    everything = FRAMES * len(FRAME)

    with daphne_serving(flood) as port, open_without_reading(port) as client:
        assert flood.sent_all.wait(TIMEOUT), "the application never finished sending"
        received, ending = read_until_the_end(client, at_most=everything)

    assert ending == "reset"  # aborted: a clean close would wait for the buffer to drain
    assert received < everything
