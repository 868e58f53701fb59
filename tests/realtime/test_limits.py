"""What one WebSocket connection may cost: a bounded snapshot cache per user, a token bucket
on the actions that force a computation (``configure``, ``refresh``), and credentials that
are checked again on every resync (a deleted token or a deactivated user is closed 4401).

The real WebSocket application around a hub of the test's own, real Redis and database;
only the clocks are fake (the dashboard clock, and the monotonic one the bucket reads).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from realtime.hub import Credential, Hub, Snapshot
from realtime.limits import ActionLimit, TokenBucket, Verdict, whole_minutes
from realtime.routing import build_websocket_application
from tests.conftest import Clock
from tests.realtime.communicators import TIMEOUT, WS_PATH, Frame, next_frame
from tests.realtime.communicators import dashboard as connected

pytestmark = pytest.mark.usefixtures("isolated_channel_layer")


# --- the pure parts ------------------------------------------------------------------------


def test_a_full_bucket_allows_a_burst_of_20_then_refuses() -> None:
    bucket = TokenBucket(burst=20, per_minute=60)

    taken = [bucket.take(now=100.0) for _ in range(21)]

    assert taken == [True] * 20 + [False]


@pytest.mark.parametrize(
    ("seconds_later", "allowed"),
    [(0.5, 0), (1.0, 1), (2.5, 2), (60.0, 20), (3600.0, 20)],  # never more than the burst
)
def test_an_empty_bucket_refills_at_one_action_a_second(seconds_later: float, allowed: int) -> None:
    bucket = TokenBucket(burst=20, per_minute=60)
    for _ in range(20):
        bucket.take(now=100.0)

    taken = [bucket.take(now=100.0 + seconds_later) for _ in range(25)]

    assert taken.count(True) == allowed


def test_a_client_that_keeps_going_past_the_limit_is_closed_after_a_burst_of_refusals() -> None:
    limit = ActionLimit(TokenBucket(burst=2, per_minute=60), max_refused=3)

    verdicts = [limit.check(now=0.0) for _ in range(6)]

    assert verdicts == [Verdict.ALLOW] * 2 + [Verdict.REFUSE] * 3 + [Verdict.CLOSE]


def test_an_allowed_action_forgives_earlier_refusals() -> None:
    limit = ActionLimit(TokenBucket(burst=1, per_minute=60), max_refused=2)
    limit.check(now=0.0)
    limit.check(now=0.0)  # refused once

    later = [limit.check(now=1.0), limit.check(now=1.0), limit.check(now=2.0)]

    assert later == [Verdict.ALLOW, Verdict.REFUSE, Verdict.ALLOW]


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        (6.0, 6.0),
        (6.0000001, 6.0),
        (5.99999, 6.0),
        (0.0167, 1 / 60),
        (1.5, 1.5),
        (0.5 / 60, 1 / 60),
    ],
)
def test_hours_are_normalised_to_whole_minutes(hours: float, expected: float) -> None:
    assert whole_minutes(hours) == expected


# --- the hub's cache -----------------------------------------------------------------------


class Listener:
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.credential: Credential = (user_id, None)

    def wake(self, position: int) -> None:
        pass

    def revoke(self) -> None:
        pass


async def test_the_hub_keeps_at_most_8_snapshots_per_user_the_most_recently_used() -> None:
    hub = Hub()
    hub.join(Listener(1))
    hub.join(Listener(2))

    async def compute() -> Snapshot:
        return Snapshot(position=1, text="{}", computed_at=0.0, next_reset_at=None)

    for hours in range(30):
        await hub.snapshot((1, (hours,)), min_position=0, max_age=1e9, compute=compute)
        if hours >= 1:  # settings 0 stay in use
            await hub.snapshot((1, (0,)), min_position=0, max_age=1e9, compute=compute)
    await hub.snapshot((2, ("other",)), min_position=0, max_age=1e9, compute=compute)

    # least recently used first
    assert hub.cached_snapshots(1) == [(1, (hours,)) for hours in range(23, 30)] + [(1, (0,))]
    assert hub.cached_snapshots(2) == [(2, ("other",))]


# --- through the consumer ------------------------------------------------------------------


class Ticker:
    """The monotonic clock the consumers' buckets read: frozen unless a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hub() -> Hub:
    return Hub()


@pytest.fixture
def ticker() -> Ticker:
    return Ticker()


@pytest.fixture
def app(hub: Hub, clock: Clock, ticker: Ticker) -> Any:
    return build_websocket_application(hub=hub, clock=clock, ticker=ticker)


@pytest.fixture
def token(api: APIClient, user: User) -> str:
    return str(Token.objects.get(user=user).key)


def dashboard(app: Any, token: str) -> AbstractAsyncContextManager[Any]:
    return connected(app, f"{WS_PATH}?token={token}")


async def send(communicator: Any, message: object) -> None:
    await communicator.send_to(text_data=orjson.dumps(message).decode())


async def outputs_until_closed(communicator: Any) -> tuple[list[Frame], int]:
    """The frames sent before the close, and the close code (bounded)."""
    frames: list[Frame] = []
    for _ in range(1000):
        output = await communicator.receive_output(timeout=TIMEOUT)
        if output["type"] == "websocket.close":
            return frames, int(output["code"])
        frames.append(orjson.loads(output["text"]))
    raise AssertionError("the socket was never closed")


@pytest.mark.django_db(transaction=True)
async def test_twenty_refreshes_are_answered_and_the_next_one_is_refused_with_the_socket_open(
    app: Any, token: str
) -> None:
    async with dashboard(app, token) as ws:
        await next_frame(ws)
        answers = []
        for _ in range(20):
            await send(ws, {"action": "refresh"})
            answers.append((await next_frame(ws))["type"])

        await send(ws, {"action": "refresh"})
        refused = await next_frame(ws)
        await send(ws, {"action": "ping"})
        pong = await next_frame(ws)

    assert answers == ["dashboard"] * 20
    assert refused["type"] == "error"
    assert refused["error"]["code"] == "RATE_LIMITED"
    assert "retry" in refused["error"]["message"].lower()
    assert pong == {"type": "pong"}


@pytest.mark.django_db(transaction=True)
async def test_configure_and_refresh_share_one_bucket_that_refills_with_time(
    app: Any, token: str, ticker: Ticker
) -> None:
    async with dashboard(app, token) as ws:
        await next_frame(ws)
        for number in range(20):
            action = {"action": "configure", "hours": 1} if number % 2 else {"action": "refresh"}
            await send(ws, action)
            await next_frame(ws)
        await send(ws, {"action": "configure", "hours": 2})
        refused = await next_frame(ws)

        ticker.now += 1.0  # one action's worth
        await send(ws, {"action": "configure", "hours": 2})
        allowed = await next_frame(ws)

    assert refused["error"]["code"] == "RATE_LIMITED"
    assert allowed["type"] == "dashboard"
    assert allowed["summary"]["time_range_hours"] == 2


@pytest.mark.django_db(transaction=True)
async def test_a_client_that_keeps_flooding_is_closed_with_4429(app: Any, token: str) -> None:
    async with dashboard(app, token) as ws:
        await next_frame(ws)
        for _ in range(60):
            await send(ws, {"action": "refresh"})

        frames, code = await outputs_until_closed(ws)

    errors = [frame for frame in frames if frame["type"] == "error"]
    assert code == 4429
    assert len([frame for frame in frames if frame["type"] == "dashboard"]) == 20
    assert {frame["error"]["code"] for frame in errors} == {"RATE_LIMITED"}
    assert len(errors) == 20  # a burst's worth of refusals, then the close


@pytest.mark.django_db(transaction=True)
async def test_configures_that_differ_below_a_minute_share_one_cached_snapshot(
    app: Any, hub: Hub, token: str, user: User
) -> None:
    async with dashboard(app, token) as ws:
        await next_frame(ws)
        for step in range(1, 16):
            await send(ws, {"action": "configure", "hours": 1 + step * 1e-7})
            await next_frame(ws)
        same_minute = len(hub.cached_snapshots(user.pk))

        for minutes in range(61, 66):
            await send(ws, {"action": "configure", "hours": minutes / 60})
            await next_frame(ws)
        distinct = hub.cached_snapshots(user.pk)

    assert same_minute == 2  # the default 6 hours, and 1 hour
    assert len(distinct) <= 8


# --- credentials, checked again on every resync ----------------------------------------


@pytest.fixture
def fast_resync(settings: Settings) -> None:
    settings.USAGE_WS_RESYNC_SECONDS = 0.05


async def delete_token(user: User) -> None:
    await sync_to_async(Token.objects.filter(user=user).delete)()


async def deactivate(user: User) -> None:
    user.is_active = False
    await sync_to_async(user.save)(update_fields=["is_active"])


async def replace_token(user: User) -> None:
    def replace() -> None:
        Token.objects.filter(user=user).delete()
        Token.objects.create(user=user)

    await sync_to_async(replace)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_resync")
@pytest.mark.parametrize("change", [delete_token, deactivate, replace_token])
async def test_a_socket_whose_credentials_are_gone_is_closed_with_4401_at_the_next_resync(
    app: Any, token: str, user: User, change: Any
) -> None:
    async with dashboard(app, token) as ws:
        await next_frame(ws)

        await change(user)
        _, code = await outputs_until_closed(ws)

    assert code == 4401


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_resync")
async def test_another_users_socket_stays_open_when_one_token_is_revoked(
    app: Any, token: str, user: User, other_user: User
) -> None:
    other_token = str((await sync_to_async(Token.objects.create)(user=other_user)).key)
    async with dashboard(app, token) as alice, dashboard(app, other_token) as bob:
        await next_frame(alice)
        await next_frame(bob)

        await delete_token(user)
        _, code = await outputs_until_closed(alice)
        await send(bob, {"action": "ping"})
        pong = await next_frame(bob)

    assert code == 4401
    assert pong == {"type": "pong"}
