"""WebSocket clients for the realtime tests: channels' communicator, connected and always
disconnected, and the JSON frames it receives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from channels.testing import WebsocketCommunicator

WS_PATH = "/ws/claude-usage/"
TIMEOUT = 10.0  # generous: a bound on waiting, never an expectation of speed
Frame = dict[str, Any]
Application = Any  # an ASGI application (channels has no type hints)


@asynccontextmanager
async def dashboard(
    app: Application, path: str = WS_PATH, headers: Sequence[tuple[bytes, bytes]] = ()
) -> AsyncIterator[Any]:
    """A connected WebSocket client, always disconnected afterwards."""
    communicator = WebsocketCommunicator(app, path, headers=list(headers))
    try:
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        yield communicator
    finally:
        await communicator.disconnect(timeout=TIMEOUT)


async def next_frame(communicator: Any) -> Frame:
    frame: Frame = orjson.loads(await communicator.receive_from(timeout=TIMEOUT))
    return frame
