"""The monitor's plain values, shared by the link, the screen and the view (standard library
only, so the command can use them without the `[monitor]` extra)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

CONNECTING = "connecting"
LIVE = "live"
RECONNECTING = "reconnecting"


@dataclass(frozen=True)
class DashboardParams:
    """What `--hours`, `--plan`, `--token-limit` and `--window-align` ask for; None: the
    server's default."""

    hours: float | None = None
    plan: str | None = None
    token_limit: int | None = None
    window_align: str | None = None

    def fields(self) -> dict[str, object]:
        given = {
            "hours": self.hours,
            "plan": self.plan,
            "token_limit": self.token_limit,
            "window_align": self.window_align,
        }
        return {name: value for name, value in given.items() if value is not None}

    def query(self) -> str:
        """The same settings as the REST dashboard's query string."""
        return urllib.parse.urlencode(self.fields())

    def configure_action(self) -> dict[str, object] | None:
        fields = self.fields()
        return {"action": "configure", **fields} if fields else None


@dataclass(frozen=True)
class Snapshot:
    """One dashboard frame and when it arrived (the countdown runs on from there)."""

    dashboard: Mapping[str, Any]
    received_at: datetime


@dataclass(frozen=True)
class LinkState:
    """The WebSocket as the screen shows it."""

    status: str = CONNECTING
    retry_at: datetime | None = None  # when reconnecting: the next try
    attempt: int = 0  # failed connections in a row
    reason: str = ""
