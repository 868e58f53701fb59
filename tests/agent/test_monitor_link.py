"""The monitor's WebSocket link against a small stand-in server speaking the consumer's
protocol: it configures, hands on only configured dashboards, backs off on other closes and
stops for good on a refused token (4401)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.importorskip("websockets", reason="the [monitor] extra is not installed")

from websockets.asyncio.server import ServerConnection, serve

from claude_usage_agent.backoff import RetryPolicy
from claude_usage_agent.monitor.link import (
    Follower,
    SettingsRefusedError,
    TokenRefusedError,
    websocket_url,
)
from claude_usage_agent.monitor.state import (
    LIVE,
    RECONNECTING,
    DashboardParams,
    LinkState,
)

T0 = datetime(2025, 10, 5, 18, 0, tzinfo=UTC)


def test_the_websocket_url_carries_the_token_in_the_query() -> None:
    assert websocket_url("https://u.example/base", "a b") == (
        "wss://u.example/base/ws/claude-usage/?token=a+b"
    )
    assert (
        websocket_url("http://127.0.0.1:8000", "k")
        == "ws://127.0.0.1:8000/ws/claude-usage/?token=k"
    )


class StandIn:
    """A WebSocket server speaking the consumer's protocol, scripted per connection."""

    def __init__(self, close_code: int | None = None, refuse_settings: bool = False) -> None:
        self.close_code = close_code
        self.refuse_settings = refuse_settings
        self.received: list[dict[str, Any]] = []
        self.connections = 0

    async def handle(self, socket: ServerConnection) -> None:
        self.connections += 1
        if self.close_code is not None:
            await socket.close(self.close_code)
            return
        await socket.send(json.dumps(frame(hours=6, position=1)))
        async for raw in socket:
            message = json.loads(raw)
            self.received.append(message)
            if self.refuse_settings:
                error = {"code": "VALIDATION_ERROR", "message": "hours: At most 720 hours."}
                await socket.send(json.dumps({"type": "error", "error": error}))
            else:
                await socket.send(json.dumps(frame(hours=message["hours"], position=1)))
        # the client went away


def frame(hours: float, position: int) -> dict[str, Any]:
    return {"type": "dashboard", "position": position, "summary": {"time_range_hours": hours}}


@pytest.fixture
async def stand_in(request: pytest.FixtureRequest) -> AsyncIterator[tuple[StandIn, str]]:
    param = getattr(request, "param", None)
    server_side = StandIn(refuse_settings=True) if param == "refuse" else StandIn(param)
    async with serve(server_side.handle, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield server_side, f"ws://127.0.0.1:{port}/ws/claude-usage/?token=k"


async def test_the_link_configures_and_hands_on_only_the_configured_dashboard(
    stand_in: tuple[StandIn, str],
) -> None:
    server_side, url = stand_in
    dashboards: list[dict[str, Any]] = []
    links: list[LinkState] = []
    arrived = asyncio.Event()

    def on_dashboard(dashboard: dict[str, Any]) -> None:
        dashboards.append(dashboard)
        arrived.set()

    follower = Follower(url, DashboardParams(hours=3, plan="max5"), on_dashboard, links.append)
    task = asyncio.create_task(follower.run())
    await asyncio.wait_for(arrived.wait(), timeout=10)
    task.cancel()

    assert server_side.received == [{"action": "configure", "hours": 3, "plan": "max5"}]
    assert dashboards == [{"summary": {"time_range_hours": 3}}]  # no type, no position
    assert links[-1].status == LIVE


@pytest.mark.parametrize("stand_in", [4401], indirect=True)
async def test_a_refused_token_stops_the_link_without_retrying(
    stand_in: tuple[StandIn, str],
) -> None:
    server_side, url = stand_in
    follower = Follower(url, DashboardParams(), print, lambda link: None)
    with pytest.raises(TokenRefusedError):
        await asyncio.wait_for(follower.run(), timeout=10)
    assert server_side.connections == 1


@pytest.mark.parametrize("stand_in", [1011], indirect=True)
async def test_other_closes_are_retried_with_growing_delays(
    stand_in: tuple[StandIn, str],
) -> None:
    server_side, url = stand_in
    links: list[LinkState] = []
    third_retry = asyncio.Event()

    def on_link(link: LinkState) -> None:
        links.append(link)
        if link.attempt == 3:
            third_retry.set()

    fast = RetryPolicy(base_delay=0.01, max_delay=0.04)
    follower = Follower(
        url, DashboardParams(), print, on_link, clock=lambda: T0, jitter=lambda: 1.0, policy=fast
    )
    task = asyncio.create_task(follower.run())
    await asyncio.wait_for(third_retry.wait(), timeout=10)
    task.cancel()

    retries = [link for link in links if link.status == RECONNECTING]
    assert [link.attempt for link in retries] == [1, 2, 3]
    delays = [(link.retry_at - T0).total_seconds() for link in retries if link.retry_at]
    assert delays == pytest.approx([0.01, 0.02, 0.04])
    assert server_side.connections == 3
    assert "closed by the server (1011)" in retries[0].reason


@pytest.mark.parametrize("stand_in", ["refuse"], indirect=True)
async def test_settings_the_server_refuses_stop_the_link(stand_in: tuple[StandIn, str]) -> None:
    server_side, url = stand_in
    follower = Follower(url, DashboardParams(hours=100_000), print, lambda link: None)
    with pytest.raises(SettingsRefusedError, match="At most 720 hours"):
        await asyncio.wait_for(follower.run(), timeout=10)
    assert server_side.connections == 1
