"""The live full-screen view: rich's Live on the alternate screen, redrawn on every frame
and once a second in between (the countdown ticks), until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live

from claude_usage_agent.monitor.link import Follower
from claude_usage_agent.monitor.state import DashboardParams, LinkState, Snapshot
from claude_usage_agent.monitor.view import ViewOptions, render

Clock = Callable[[], datetime]


@dataclass
class ScreenState:
    snapshot: Snapshot | None = None
    link: LinkState = field(default_factory=LinkState)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def show(url: str, params: DashboardParams, options: ViewOptions) -> None:
    """Runs until interrupted (KeyboardInterrupt, also on SIGTERM) or until the link raises
    TokenRefusedError / SettingsRefusedError; the terminal is restored either way."""
    # websockets logs connection trouble; on the alternate screen a stray line would tear the
    # view, and the screen shows the state anyway.
    logging.getLogger("websockets").addHandler(logging.NullHandler())
    logging.getLogger("websockets").propagate = False
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    asyncio.run(_show(url, params, options, lambda: datetime.now(UTC)))


async def _show(url: str, params: DashboardParams, options: ViewOptions, clock: Clock) -> None:
    state = ScreenState()

    def on_dashboard(dashboard: dict[str, Any]) -> None:
        state.snapshot = Snapshot(dashboard, clock())
        state.changed.set()

    def on_link(link: LinkState) -> None:
        state.link = link
        state.changed.set()

    follower = Follower(url, params, on_dashboard, on_link, clock=clock)
    console = Console()
    with Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
        task = asyncio.create_task(follower.run())
        try:
            while not task.done():
                live.update(render(state.snapshot, state.link, clock(), options), refresh=True)
                await _next_tick(state.changed, clock())
            task.result()  # the link's fatal error, if that is why it ended
        finally:
            task.cancel()


async def _next_tick(changed: asyncio.Event, now: datetime) -> None:
    """Until something changed or the next whole second (the countdown's next figure)."""
    wait = 1.0 - now.microsecond / 1_000_000
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(changed.wait(), timeout=wait)
    changed.clear()
