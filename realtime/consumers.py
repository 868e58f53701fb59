"""``/ws/claude-usage/``: a dashboard snapshot on connect and after every change.

Each frame is exactly the REST dashboard's JSON plus ``type`` and ``position``. Changes
arrive as small "changed up to N" prompts on a per-user group; the data itself is always
read back from the projections, so a lost prompt loses nothing (the hub's resync catches
it) and positions never go backwards.

Close codes: 4401 for credentials that do not hold (at connect, or at a later resync once
the token is deleted or replaced or the user deactivated); 4429 for a client that keeps
sending ``configure``/``refresh`` past its limit (``realtime/limits.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from functools import partial
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import close_old_connections

from realtime import auth, limits, signals
from realtime.hub import Credential, Hub, Snapshot
from usage import selectors
from usage.api.serializers import DashboardParams
from usage.notify import user_group
from usage.selectors import LimitSettings
from usage.windows import WindowAlign

log = logging.getLogger(__name__)

UNAUTHENTICATED = 4401
MAX_CLIENT_FRAME_BYTES = 4096
# A sender keeps going until what it sent covers what was asked for, one round per
# interval; past this many rounds it gives up and the resync starts it again.
MAX_SEND_ROUNDS = 8

Clock = Callable[[], datetime]  # the wall clock dashboards are computed at (aware, UTC)
Ticker = Callable[[], float]  # a monotonic clock in seconds: the action limit's


class DashboardConsumer(AsyncWebsocketConsumer):
    user_id: int

    def __init__(self, *, hub: Hub, clock: Clock, ticker: Ticker = time.monotonic) -> None:
        """Channels builds one consumer per connection, with the keyword arguments given to
        ``as_asgi``: ``realtime.routing`` passes the process's hub and the system clocks."""
        super().__init__()
        self.hub = hub
        self.clock = clock
        self.ticker = ticker

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=UNAUTHENTICATED)  # nothing is ever sent before this
            return
        self.user_id = int(user.pk)
        token = self.scope.get("auth_token") if self.scope.get("auth_method") == "token" else None
        self.credential: Credential = (self.user_id, token)
        self.action_limit = limits.ActionLimit()
        self.hours: float = 6.0
        self.limits = LimitSettings(
            plan=settings.USAGE_DEFAULT_PLAN,
            token_limit=None,
            window_align=WindowAlign(settings.USAGE_WINDOW_ALIGN),
        )
        self.sent_position = -1
        self.wanted_position = 0
        self.last_sent_at = 0.0
        self.sender: asyncio.Task[None] | None = None
        self.reset_timer: asyncio.TimerHandle | None = None
        # The loop holds only weak references to tasks: ours are kept here until they end.
        self.tasks: set[asyncio.Task[None]] = set()
        self.connected = True
        await self.channel_layer.group_add(user_group(self.user_id), self.channel_name)
        await self.accept()
        self.counted = True  # one connection_closed follows, in disconnect
        signals.connection_opened.send(sender=DashboardConsumer)
        self.hub.join(self)
        self.hub.ensure_resync(settings.USAGE_WS_RESYNC_SECONDS, _read_checkpoints, _revoked)
        await self.send_snapshot(force=True)

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "user_id"):
            return
        self.connected = False
        if getattr(self, "counted", False):
            self.counted = False
            signals.connection_closed.send(sender=DashboardConsumer)
        self.hub.leave(self)
        if self.reset_timer is not None:
            self.reset_timer.cancel()
        if self.sender is not None:
            self.sender.cancel()
        for task in list(self.tasks):
            task.cancel()
        await self.channel_layer.group_discard(user_group(self.user_id), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The limit is on bytes as sent, not on characters: one character can take four.
        size = len((text_data or "").encode()) + len(bytes_data or b"")
        if size > MAX_CLIENT_FRAME_BYTES:
            await self.send_error(
                "PAYLOAD_TOO_LARGE", f"Frames are limited to {MAX_CLIENT_FRAME_BYTES} bytes"
            )
            return
        try:
            message = orjson.loads(text_data if text_data is not None else bytes_data or b"")
        except orjson.JSONDecodeError:
            await self.send_error("VALIDATION_ERROR", "Frames must be JSON objects")
            return
        if not isinstance(message, dict):
            await self.send_error("VALIDATION_ERROR", "Frames must be JSON objects")
            return
        await self.handle_action(message)

    async def handle_action(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        if action == "ping":
            await self.send(text_data='{"type":"pong"}')
        elif action in ("configure", "refresh") and not await self.within_limit():
            return
        elif action == "configure":
            await self.configure(message)
        elif action == "refresh":
            await self.send_snapshot(force=True)
        else:
            await self.send_error(
                "VALIDATION_ERROR", f"Unknown action {action!r}: use configure, ping or refresh"
            )

    async def configure(self, message: dict[str, Any]) -> None:
        fields = {k: v for k, v in message.items() if k != "action" and v is not None}
        params = DashboardParams(data=fields)
        if not params.is_valid():
            problems = "; ".join(
                f"{name}: {' '.join(str(e) for e in errors)}"
                for name, errors in params.errors.items()
            )
            await self.send_error("VALIDATION_ERROR", problems)
            return
        unknown = set(fields) - set(params.fields)
        if unknown:
            await self.send_error("VALIDATION_ERROR", f"Unknown settings: {sorted(unknown)}")
            return
        # Whole minutes: the hub caches per settings, and new floats must not mean new keys.
        self.hours = limits.whole_minutes(params.validated_data["hours"])
        self.limits = params.limits()
        await self.send_snapshot(force=True)

    async def within_limit(self) -> bool:
        """Whether a configure or refresh may run now; if not, the client is told (or, past
        a burst of refusals, closed with 4429)."""
        now = self.ticker()
        verdict = self.action_limit.check(now=now)
        if verdict is limits.Verdict.REFUSE:
            wait = self.action_limit.retry_after(now=now)
            await self.send_error(
                "RATE_LIMITED",
                f"At most {limits.PER_MINUTE:g} configure or refresh a minute (bursts of"
                f" {limits.BURST}): retry in {wait:.1f} s",
            )
        elif verdict is limits.Verdict.CLOSE:
            await self.end(limits.CLOSE_CODE)
        return verdict is limits.Verdict.ALLOW

    def revoke(self) -> None:
        """The hub found this connection's credentials gone."""
        if self.connected:
            self.spawn(self.end(UNAUTHENTICATED))

    async def end(self, code: int) -> None:
        # Nothing is sent after the close frame: pending senders see connected == False.
        self.connected = False
        await self.close(code=code)

    async def usage_changed(self, event: dict[str, Any]) -> None:
        """The group prompt: ``{"type": "usage.changed", "position": N, "refresh": bool}``."""
        if event.get("refresh") and self.connected:
            self.spawn(self.send_snapshot(force=True))
            return
        self.wake(int(event.get("position", 0)))

    def wake(self, position: int) -> None:
        """Schedule a snapshot that includes ``position``; stale prompts are dropped and a
        burst is coalesced into at most one frame per interval, the last one complete."""
        if not self.connected:
            return
        self.wanted_position = max(self.wanted_position, position)
        # A sender starts whenever the sent position is behind the wanted one, not only for
        # a new prompt: a prompt that arrives while a snapshot is being computed only raises
        # wanted_position and may not be in that snapshot, and nothing else would send it
        # (not even the resync, whose wake is then "stale").
        if self.wanted_position > self.sent_position and (
            self.sender is None or self.sender.done()
        ):
            self.sender = asyncio.get_running_loop().create_task(self._send_when_due())

    async def _send_when_due(self) -> None:
        # Rounds until the sent snapshot covers wanted_position (see wake); every round
        # after the first waits a full interval, so a projection that lags cannot spin.
        interval = settings.USAGE_WS_MIN_INTERVAL_SECONDS
        for round_number in range(MAX_SEND_ROUNDS):
            delay = interval if round_number else self.last_sent_at + interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.send_snapshot(force=False)
            if not self.connected or self.sent_position >= self.wanted_position:
                return

    async def send_snapshot(self, *, force: bool) -> None:
        # The settings are bound now: the hub runs the computation in a task of its own,
        # which may start after a "configure" changed self.hours, and it must compute for
        # the key it is cached under.
        key = self.snapshot_key()
        try:
            snapshot = await self.hub.snapshot(
                key,
                min_position=max(self.wanted_position, 0),
                max_age=0.0 if force else settings.USAGE_WS_MIN_INTERVAL_SECONDS,
                compute=partial(self.compute_snapshot, self.hours, self.limits),
            )
        except Exception:
            log.exception("snapshot failed for user %s", self.user_id)
            await self.send_error("SERVER_ERROR", "Could not compute the dashboard")
            return
        if key != self.snapshot_key():
            return  # "configure" changed the settings meanwhile and sends its own snapshot
        if not self.connected or (not force and snapshot.position <= self.sent_position):
            return
        self.sent_position = max(self.sent_position, snapshot.position)
        self.last_sent_at = time.monotonic()
        await self.send(text_data=snapshot.text)
        self.arm_reset_timer(snapshot.next_reset_at)

    def snapshot_key(self) -> tuple[int, tuple[object, ...]]:
        limits = self.limits
        settings_key = (self.hours, limits.plan, limits.token_limit, limits.window_align.value)
        return (self.user_id, settings_key)

    async def compute_snapshot(self, hours: float, limits: LimitSettings) -> Snapshot:
        moment = self.clock()
        position, dashboard = await sync_to_async(_dashboard_with_position, thread_sensitive=False)(
            user_id=self.user_id, now=moment, hours=hours, limits=limits
        )
        frame = {"type": "dashboard", "position": position, **dashboard}
        return Snapshot(
            position=position,
            text=orjson.dumps(frame).decode(),
            computed_at=time.monotonic(),
            next_reset_at=_reset_epoch(dashboard),
        )

    def arm_reset_timer(self, next_reset_at: float | None) -> None:
        """Push a snapshot when the active window ends, so countdowns and "no active
        window" update without polling and without new events."""
        if self.reset_timer is not None:
            self.reset_timer.cancel()
            self.reset_timer = None
        if next_reset_at is None:
            return
        delay = max(next_reset_at - self.clock().timestamp(), 0) + 0.05
        loop = asyncio.get_running_loop()
        self.reset_timer = loop.call_later(delay, self._on_reset)

    def _on_reset(self) -> None:
        self.reset_timer = None
        if self.connected:
            self.spawn(self.send_snapshot(force=True))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send_error(self, code: str, message: str) -> None:
        frame = {"type": "error", "error": {"code": code, "message": message}}
        await self.send(text_data=orjson.dumps(frame).decode())


def _reset_epoch(dashboard: dict[str, Any]) -> float | None:
    rate_limit = dashboard.get("rate_limit") or {}
    value = rate_limit.get("next_reset_at")
    return datetime.fromisoformat(value).timestamp() if value else None


def _dashboard_with_position(**arguments: Any) -> tuple[int, dict[str, object]]:
    """Runs on one of the event loop's executor threads, which no request cycle cleans up.
    The selector reads the database (official limits, catch-up), and the connection it opens
    must go back to the PostgreSQL pool here, or every such thread keeps one checked out for
    good (and a broken one after a database restart). It is closed inside the call because
    channels' database_sync_to_async closes outside it and, measured under pytest, did not
    see this connection."""
    try:
        return selectors.dashboard_with_position(**arguments)
    finally:
        close_old_connections()


async def _read_checkpoints(user_ids: list[int]) -> dict[int, int]:
    return await sync_to_async(selectors.checkpoints, thread_sensitive=False)(user_ids)


async def _revoked(credentials: list[Credential]) -> set[Credential]:
    return await sync_to_async(_revoked_in_thread, thread_sensitive=False)(credentials)


def _revoked_in_thread(credentials: list[Credential]) -> set[Credential]:
    # An executor thread: its connection goes back to the pool here (_dashboard_with_position).
    try:
        return auth.revoked(credentials)
    finally:
        close_old_connections()
