"""WebSocket routes, and where the consumers' dependencies are chosen: production shares one
hub per process and reads the system clock; tests build their own application."""

from datetime import UTC, datetime
from typing import Any

from channels.routing import URLRouter
from django.urls import path

from realtime.auth import auth_stack
from realtime.consumers import Clock, DashboardConsumer
from realtime.hub import Hub


def system_clock() -> datetime:
    return datetime.now(tz=UTC)


def build_websocket_application(*, hub: Hub, clock: Clock) -> Any:
    """``/ws/claude-usage/`` behind authentication; every connection shares ``hub`` and
    computes its dashboards at ``clock()``."""
    dashboard = DashboardConsumer.as_asgi(hub=hub, clock=clock)
    return auth_stack(URLRouter([path("ws/claude-usage/", dashboard)]))


websocket_application = build_websocket_application(hub=Hub(), clock=system_clock)
