"""A WebSocket client that stops reading must not grow the server's memory.

daphne hands every frame to Twisted, which buffers without limit for a peer that does not
read. Before each send we look at what the connection's transport still holds; past the
limit the client has fallen hopelessly behind and is disconnected. It reconnects and gets
a fresh, complete snapshot at once.

This reads internals of Twisted (the send buffers of ``abstract.FileDescriptor``), daphne
(``WebSocketProtocol.serverSend``) and autobahn (``dropConnection``): requirements.txt pins
the versions it was written for, and tests/realtime/test_backpressure.py fails if they change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings

ServerSend = Callable[..., None]

_installed = False


def buffered_bytes(transport: Any) -> int:
    """Bytes written to a Twisted TCP transport and not yet taken by the kernel: the part of
    ``dataBuffer`` from ``offset`` on, which ``doWrite`` is sending, and the ``_tempDataLen``
    bytes that writes queued since. A transport without them (daphne serving TLS itself
    wraps the TCP one) counts as empty, so the guard stays off instead of failing sends."""
    pending = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return max(pending, 0) + int(getattr(transport, "_tempDataLen", 0))


def install() -> None:
    """Wrap daphne's WebSocket send (idempotent)."""
    global _installed
    if _installed:
        return
    from daphne.ws_protocol import WebSocketProtocol

    WebSocketProtocol.serverSend = guarded(WebSocketProtocol.serverSend)
    _installed = True


def guarded(server_send: ServerSend) -> ServerSend:
    """daphne's ``serverSend``, dropping the connection instead of sending while its
    transport holds more than ``USAGE_WS_MAX_BUFFERED_BYTES``."""

    @functools.wraps(server_send)
    def guarded_send(self: Any, content: Any, binary: bool = False) -> None:
        transport = getattr(self, "transport", None)
        limit = settings.USAGE_WS_MAX_BUFFERED_BYTES
        if transport is not None and buffered_bytes(transport) > limit:
            self.dropConnection(abort=True)  # abort: closing cleanly would wait for the buffer
            return
        server_send(self, content, binary)

    return guarded_send
