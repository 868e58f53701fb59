"""WebSocket routes, and where the consumers' dependencies are chosen: production shares one
hub per process and reads the system clock; tests build their own application."""

import time
from datetime import UTC, datetime
from typing import Any

from channels.routing import URLRouter
from django.urls import path

from realtime.auth import auth_stack
from realtime.consumers import Clock, DashboardConsumer, Ticker
from realtime.hub import Hub


def system_clock() -> datetime:
    return datetime.now(tz=UTC)


def build_websocket_application(*, hub: Hub, clock: Clock, ticker: Ticker = time.monotonic) -> Any:
    """``/ws/claude-usage/`` behind authentication; every connection shares ``hub``,
    computes its dashboards at ``clock()`` and meters its actions by ``ticker()``."""
    dashboard = DashboardConsumer.as_asgi(hub=hub, clock=clock, ticker=ticker)
    return auth_stack(URLRouter([path("ws/claude-usage/", dashboard)]))


websocket_application = build_websocket_application(hub=Hub(), clock=system_clock)
