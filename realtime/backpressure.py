"""A WebSocket client that stops reading must not grow the server's memory.

daphne hands every frame to Twisted, which buffers without limit for a peer that does not
read (39 MiB for one stalled dashboard, measured here). Before each send we look at what the
connection's transport still holds; past the limit the client has fallen hopelessly behind
and is disconnected. It reconnects and gets a fresh, complete snapshot at once.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

_installed = False


def buffered_bytes(transport: Any) -> int:
    """Bytes written to a Twisted TCP transport and not yet taken by the kernel."""
    pending = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return max(pending, 0) + int(getattr(transport, "_tempDataLen", 0))


def install() -> None:
    """Wrap daphne's WebSocket send (idempotent)."""
    global _installed
    if _installed:
        return
    from daphne.ws_protocol import WebSocketProtocol

    original_send = WebSocketProtocol.serverSend

    def guarded_send(self: Any, content: Any, binary: bool = False) -> None:
        limit = int(getattr(settings, "USAGE_WS_MAX_BUFFERED_BYTES", 1024 * 1024))
        transport = getattr(self, "transport", None)
        if transport is not None and buffered_bytes(transport) > limit:
            self.dropConnection(abort=True)
            return
        original_send(self, content, binary)

    WebSocketProtocol.serverSend = guarded_send
    _installed = True
