"""The WebSocket subscription: connect, send `configure`, hand on each dashboard frame, and
reconnect with exponential backoff for as long as the monitor runs.

The server's protocol (realtime/consumers.py): the first frame is the dashboard as of now,
and another follows every change, each the REST dashboard's JSON plus `type` and `position`.
Close code 4401 means the token does not hold: retrying cannot help.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from claude_usage_agent.backoff import RetryPolicy, backoff_delay
from claude_usage_agent.monitor.state import (
    CONNECTING,
    LIVE,
    RECONNECTING,
    DashboardParams,
    LinkState,
)

WEBSOCKET_PATH = "/ws/claude-usage/"
UNAUTHENTICATED = 4401
# Reconnect sooner than the shipper's 60 s cap: a person is watching this screen.
RECONNECT_POLICY = RetryPolicy(base_delay=1.0, max_delay=15.0)
FRAME_ONLY_KEYS = ("type", "position")

Clock = Callable[[], datetime]


class TokenRefusedError(Exception):
    """The server closed with 4401 (or refused the handshake with 401/403)."""


class SettingsRefusedError(Exception):
    """The server refused the `configure` action (an `--hours` beyond its retention, say)."""


def websocket_url(server: str, token: str) -> str:
    """`https://host` → `wss://host/ws/claude-usage/?token=KEY` (a browser-style WebSocket
    cannot send headers, so the server takes the token from the query)."""
    parts = urllib.parse.urlsplit(server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + WEBSOCKET_PATH
    return urllib.parse.urlunsplit(
        (scheme, parts.netloc, path, urllib.parse.urlencode({"token": token}), "")
    )


def dashboard_of(frame: dict[str, Any]) -> dict[str, Any]:
    """A frame without its envelope: exactly what `GET dashboard/` answers."""
    return {key: value for key, value in frame.items() if key not in FRAME_ONLY_KEYS}


@dataclass
class Follower:
    url: str
    params: DashboardParams
    on_dashboard: Callable[[dict[str, Any]], None]
    on_link: Callable[[LinkState], None]
    clock: Clock = lambda: datetime.now(UTC)
    jitter: Callable[[], float] = random.random
    policy: RetryPolicy = RECONNECT_POLICY
    failures: int = 0  # connections in a row that ended before a dashboard arrived

    async def run(self) -> NoReturn:
        """Until cancelled; raises TokenRefusedError or SettingsRefusedError, which no retry
        would change."""
        self.on_link(LinkState(CONNECTING))
        while True:
            try:
                reason = await self._session()
            except TokenRefusedError:
                raise
            except InvalidStatus as error:
                if error.response.status_code in (401, 403):
                    raise TokenRefusedError(str(error)) from None
                reason = f"HTTP {error.response.status_code}"
            # ValueError: a frame that is not JSON (a proxy's page, say); try again.
            except (OSError, TimeoutError, ValueError, WebSocketException) as error:
                reason = _describe(error)
            delay = backoff_delay(self.failures, self.policy, self.jitter())
            self.failures += 1
            retry_at = self.clock() + timedelta(seconds=delay)
            self.on_link(LinkState(RECONNECTING, retry_at, self.failures, reason))
            await asyncio.sleep(delay)

    async def _session(self) -> str:
        """One connection, until it closes; why it closed."""
        async with connect(self.url, open_timeout=10, proxy=None) as socket:
            with contextlib.suppress(ConnectionClosed):
                await self._receive(socket)
            code = socket.close_code
            if code == UNAUTHENTICATED:
                raise TokenRefusedError("the server refused the token (WebSocket close 4401)")
            return f"closed by the server ({code})"

    async def _receive(self, socket: ClientConnection) -> None:
        action = self.params.configure_action()
        # The connect frame is computed with the server's defaults, before our `configure`
        # is read (a consumer handles its messages one at a time): skip it, the configured
        # one follows at once (or an error frame, if the server refuses the settings).
        configuring = action is not None
        stale_frames = 1 if configuring else 0
        if action is not None:
            await socket.send(json.dumps(action))
        async for raw in socket:
            frame = json.loads(raw)
            if not isinstance(frame, dict):
                continue
            if frame.get("type") == "error":
                self._refused(frame, configuring=configuring)
            elif frame.get("type") == "dashboard":
                if stale_frames:
                    stale_frames -= 1
                    continue
                configuring = False
                self.failures = 0
                self.on_link(LinkState(LIVE))
                self.on_dashboard(dashboard_of(frame))

    def _refused(self, frame: dict[str, Any], *, configuring: bool) -> None:
        error = frame.get("error") or {}
        message = f"{error.get('code', 'ERROR')}: {error.get('message', '')}"
        if configuring and error.get("code") == "VALIDATION_ERROR":
            raise SettingsRefusedError(f"the server refused the settings ({message})")
        logging.getLogger(__name__).info("server error frame: %s", message)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 60 else text[:57] + "..."
