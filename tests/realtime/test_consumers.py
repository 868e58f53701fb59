"""``/ws/claude-usage/`` through the real WebSocket application, built as production builds
it but around a hub of the test's own: real Redis (projections and the channel layer), the
real database, real ingests through the REST API. Only the clock is fake, and it is the same
clock for the REST views and the consumers.

Every wait for a frame is bounded by a generous timeout; nothing here asserts a latency.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from realtime import consumers
from realtime.hub import Compute, Hub, Snapshot, SnapshotKey
from realtime.routing import build_websocket_application
from tests.conftest import Clock, client_for
from tests.realtime.communicators import (
    TIMEOUT,
    WS_PATH,
    Application,
    Frame,
    dashboard,
    next_frame,
)
from usage import selectors, services

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("isolated_channel_layer"),
]

EVENTS = "/app/claude-usage/events/"
DASHBOARD = "/app/claude-usage/dashboard/"
SONNET = "claude-sonnet-4-20250514"
OPUS = "claude-opus-4-1-20250805"
NOW = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def app(clock: Clock) -> Application:
    """The WebSocket application around a hub of this test's own (no cached snapshot or
    resync loop leaks between tests), reading the same fake clock as the REST views."""
    return build_websocket_application(hub=Hub(), clock=clock)


@pytest.fixture
def token(api: APIClient, user: User) -> str:
    return str(Token.objects.get(user=user).key)


@pytest.fixture
def deactivated_token(token: str, user: User) -> str:
    """Alice's token, kept after her account was deactivated."""
    user.is_active = False
    user.save(update_fields=["is_active"])
    return token


@pytest.fixture
def bob_api(other_user: User) -> APIClient:
    return client_for(other_user)


@pytest.fixture
def bob_token(bob_api: APIClient, other_user: User) -> str:
    return str(Token.objects.get(user=other_user).key)


# --- helpers -----------------------------------------------------------------------------


def record(
    number: int,
    *,
    at: datetime,
    model: str = SONNET,
    input_tokens: int = 100,
    output_tokens: int = 50,
    session: str = "session-1",
) -> dict[str, object]:
    """One assistant line of a Claude Code transcript, as the agent ships it."""
    return {
        "type": "assistant",
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "sessionId": session,
        "cwd": "/home/dev/project",
        "requestId": f"req_{number}",
        "message": {
            "id": f"msg_{number}",
            "model": model,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        },
    }


async def ingest(client: APIClient, records: Sequence[dict[str, object]]) -> dict[str, Any]:
    body = b"\n".join(orjson.dumps(one) for one in records)
    response = await sync_to_async(client.post)(EVENTS, body, content_type="application/x-ndjson")
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


async def rest_dashboard(client: APIClient, query: str = "") -> dict[str, Any]:
    response = await sync_to_async(client.get)(DASHBOARD + query)
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def without_envelope(frame: Frame) -> Frame:
    return {key: value for key, value in frame.items() if key not in ("type", "position")}


async def frames_until(communicator: Any, done: Callable[[Frame], bool]) -> list[Frame]:
    """Every frame up to and including the first one ``done`` accepts (bounded)."""
    frames: list[Frame] = []
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not frames or not done(frames[-1]):
        remaining = deadline - asyncio.get_running_loop().time()
        assert remaining > 0, f"no frame satisfied the condition; got {frames}"
        frames.append(orjson.loads(await communicator.receive_from(timeout=remaining)))
    return frames


async def send(communicator: Any, message: object) -> None:
    await communicator.send_to(text_data=orjson.dumps(message).decode())


async def assert_still_answers_ping(communicator: Any) -> None:
    await send(communicator, {"action": "ping"})
    assert await next_frame(communicator) == {"type": "pong"}


async def assert_closed_with_4401_and_nothing_sent(
    app: Application, path: str, headers: list[tuple[bytes, bytes]]
) -> None:
    communicator = WebsocketCommunicator(app, path, headers=headers)

    await communicator.connect(timeout=TIMEOUT)
    first_output = await communicator.receive_output(timeout=TIMEOUT)

    assert first_output == {"type": "websocket.close", "code": 4401}
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect(timeout=TIMEOUT)


def session_cookie(user: User) -> bytes:
    browser = Client()
    browser.force_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={browser.cookies[name].value}".encode()


# --- authentication ----------------------------------------------------------------------


async def test_a_token_in_the_query_string_authenticates(
    app: Application, api: APIClient, token: str
) -> None:
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        frame = await next_frame(ws)

    assert frame["type"] == "dashboard"


async def test_an_authorization_token_header_authenticates(
    app: Application, api: APIClient, token: str
) -> None:
    async with dashboard(app, headers=[(b"authorization", f"Token {token}".encode())]) as ws:
        frame = await next_frame(ws)

    assert frame["type"] == "dashboard"


@pytest.mark.parametrize("origin", [b"http://localhost:8000", b"http://[::1]:8000"])
async def test_a_session_from_an_allowed_origin_authenticates(
    app: Application, user: User, origin: bytes
) -> None:
    cookie = await sync_to_async(session_cookie)(user)
    headers = [(b"cookie", cookie), (b"origin", origin)]

    async with dashboard(app, headers=headers) as ws:
        frame = await next_frame(ws)

    assert frame["type"] == "dashboard"


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param("none", id="no-credentials"),
        pytest.param("bad-query-token", id="bad-query-token"),
        pytest.param("bad-header-token", id="bad-header-token"),
        pytest.param("session-from-foreign-origin", id="session-from-foreign-origin"),
    ],
)
async def test_without_valid_credentials_the_socket_is_closed_with_4401_and_nothing_sent(
    app: Application, user: User, credentials: str
) -> None:
    path, headers = WS_PATH, []
    if credentials == "bad-query-token":
        path = f"{WS_PATH}?token=not-a-real-token"
    elif credentials == "bad-header-token":
        headers = [(b"authorization", b"Token not-a-real-token")]
    elif credentials == "session-from-foreign-origin":
        cookie = await sync_to_async(session_cookie)(user)
        headers = [(b"cookie", cookie), (b"origin", b"https://evil.example")]

    await assert_closed_with_4401_and_nothing_sent(app, path, headers)


@pytest.mark.parametrize("where", ["query-string", "authorization-header"])
async def test_a_deactivated_users_token_is_closed_with_4401_and_nothing_sent(
    app: Application, deactivated_token: str, where: str
) -> None:
    path, headers = f"{WS_PATH}?token={deactivated_token}", []
    if where == "authorization-header":
        path, headers = WS_PATH, [(b"authorization", f"Token {deactivated_token}".encode())]

    await assert_closed_with_4401_and_nothing_sent(app, path, headers)


# --- snapshots ---------------------------------------------------------------------------


async def test_the_first_snapshot_has_exactly_the_rest_dashboard_keys_plus_type_and_position(
    app: Application, api: APIClient, token: str
) -> None:
    answer = await ingest(api, [record(1, at=NOW - timedelta(minutes=30))])

    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        frame = await next_frame(ws)
    rest = await rest_dashboard(api)

    assert set(frame) == set(rest) | {"type", "position"}
    assert frame["type"] == "dashboard"
    assert frame["position"] == answer["position"]
    assert without_envelope(frame) == rest


async def test_an_ingest_through_the_api_pushes_a_snapshot_that_includes_it(
    app: Application, api: APIClient, token: str
) -> None:
    await ingest(api, [record(1, at=NOW - timedelta(minutes=50))])
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        first = await next_frame(ws)

        answer = await ingest(
            api,
            [
                record(2, at=NOW - timedelta(minutes=5), model=OPUS, input_tokens=7000),
                record(3, at=NOW - timedelta(minutes=4), output_tokens=900),
            ],
        )
        frames = await frames_until(ws, lambda f: f["position"] >= answer["position"])
    rest = await rest_dashboard(api)

    assert first["summary"]["total_messages"] == 1
    assert without_envelope(frames[-1]) == rest
    assert frames[-1]["summary"]["total_messages"] == 3
    assert {m["model"] for m in frames[-1]["model_distribution"]} == {SONNET, OPUS}


async def test_retention_taking_an_event_out_pushes_a_snapshot_without_it(
    app: Application, api: APIClient, token: str, settings: Settings
) -> None:
    await ingest(api, [record(1, at=NOW - timedelta(hours=5, minutes=50))])
    await ingest(api, [record(2, at=NOW - timedelta(minutes=10))])
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        first = await next_frame(ws)
        settings.USAGE_RETENTION_HOURS = 5  # the first record is now past the horizon

        await sync_to_async(services.prune_events)(now=NOW)
        frames = await frames_until(ws, lambda f: f["summary"]["total_messages"] == 1)
    rest = await rest_dashboard(api)

    assert first["summary"]["total_messages"] == 2
    assert frames[-1]["position"] == first["position"]  # the log did not move forward
    assert without_envelope(frames[-1]) == rest


async def test_a_burst_of_ingests_is_coalesced_and_the_last_frame_has_every_event(
    app: Application, api: APIClient, token: str, settings: Settings
) -> None:
    # One frame per second at most: a burst of six ingests, unless it takes longer than
    # five seconds, cannot be sent as six frames.
    settings.USAGE_WS_MIN_INTERVAL_SECONDS = 1.0
    burst = 6
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        first = await next_frame(ws)
        answers = [
            await ingest(api, [record(n, at=NOW - timedelta(minutes=30 - n))]) for n in range(burst)
        ]
        last_position = answers[-1]["position"]
        frames = await frames_until(ws, lambda f: f["position"] >= last_position)
        assert await ws.receive_nothing(timeout=0.3)  # nothing after the complete frame
    rest = await rest_dashboard(api)

    positions = [first["position"], *(f["position"] for f in frames)]
    assert positions == sorted(positions)
    assert len(frames) < burst
    assert frames[-1]["summary"]["total_messages"] == burst
    assert without_envelope(frames[-1]) == rest


# --- configure, ping and bad frames ------------------------------------------------------


async def test_configure_answers_with_a_snapshot_under_the_new_settings(
    app: Application, api: APIClient, token: str
) -> None:
    await ingest(api, [record(1, at=NOW - timedelta(minutes=90), input_tokens=5000)])
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        default = await next_frame(ws)

        await send(ws, {"action": "configure", "hours": 1, "plan": "max5"})
        max5 = await next_frame(ws)
        await send(
            ws,
            {
                "action": "configure",
                "hours": 2,
                "plan": "custom",
                "token_limit": 123456,
                "window_align": "exact",
            },
        )
        custom = await next_frame(ws)

    assert default["rate_limit"]["plan"] == "pro"
    assert default["summary"]["total_messages"] == 1
    assert max5["rate_limit"]["plan"] == "max5"
    assert max5["rate_limit"]["token_limit"] == 88_000
    assert max5["summary"]["total_messages"] == 0  # the one record is 90 minutes old
    assert without_envelope(max5) == await rest_dashboard(api, "?hours=1&plan=max5")
    assert custom["rate_limit"]["token_limit"] == 123456
    assert without_envelope(custom) == await rest_dashboard(
        api, "?hours=2&plan=custom&token_limit=123456&window_align=exact"
    )


@pytest.mark.parametrize(
    "settings_sent",
    [
        pytest.param({"hours": 0}, id="hours-zero"),
        pytest.param({"hours": "many"}, id="hours-not-a-number"),
        pytest.param({"hours": 10_000}, id="hours-too-many"),
        pytest.param({"plan": "ultra"}, id="unknown-plan"),
        pytest.param({"token_limit": -5}, id="negative-token-limit"),
        pytest.param({"window_align": "day"}, id="unknown-alignment"),
        pytest.param({"colour": "blue"}, id="unknown-key"),
    ],
)
async def test_invalid_settings_get_an_error_and_the_connection_stays_open(
    app: Application, api: APIClient, token: str, settings_sent: dict[str, object]
) -> None:
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        await next_frame(ws)

        await send(ws, {"action": "configure", **settings_sent})
        error = await next_frame(ws)
        await assert_still_answers_ping(ws)

    assert error["type"] == "error"
    assert error["error"]["code"] == "VALIDATION_ERROR"
    assert error["error"]["message"]


async def test_ping_gets_pong(app: Application, api: APIClient, token: str) -> None:
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        await next_frame(ws)

        await assert_still_answers_ping(ws)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param({"text_data": "{not json"}, "VALIDATION_ERROR", id="malformed-json"),
        pytest.param({"text_data": "[1, 2, 3]"}, "VALIDATION_ERROR", id="a-list"),
        pytest.param({"text_data": '"ping"'}, "VALIDATION_ERROR", id="a-string"),
        pytest.param({"bytes_data": b"\xff\xfe\x00"}, "VALIDATION_ERROR", id="binary-garbage"),
        pytest.param({"text_data": '{"action": "dance"}'}, "VALIDATION_ERROR", id="unknown-action"),
        pytest.param({"text_data": "x" * 5000}, "PAYLOAD_TOO_LARGE", id="oversized-text"),
        pytest.param(
            {"text_data": orjson.dumps({"action": "ping", "pad": "x" * 4100}).decode()},
            "PAYLOAD_TOO_LARGE",
            id="oversized-valid-json",
        ),
        pytest.param(
            # 2,100 characters but 4,200 bytes: the limit is on bytes
            {"text_data": orjson.dumps({"action": "ping", "pad": "é" * 2100}).decode()},
            "PAYLOAD_TOO_LARGE",
            id="oversized-in-bytes-not-characters",
        ),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_consumer_keeps_working(
    app: Application, api: APIClient, token: str, frame: dict[str, Any], code: str
) -> None:
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        await next_frame(ws)

        await ws.send_to(**frame)
        error = await next_frame(ws)
        await assert_still_answers_ping(ws)

    assert error["type"] == "error"
    assert error["error"]["code"] == code


# --- isolation ---------------------------------------------------------------------------


async def test_a_user_never_receives_another_users_data(
    app: Application, api: APIClient, token: str, bob_api: APIClient, bob_token: str
) -> None:
    await ingest(bob_api, [record(n, at=NOW - timedelta(minutes=40 + n)) for n in range(3)])
    await ingest(api, [record(100, at=NOW - timedelta(minutes=20))])
    async with (
        dashboard(app, f"{WS_PATH}?token={token}") as alice,
        dashboard(app, f"{WS_PATH}?token={bob_token}") as bob,
    ):
        alice_first, bob_first = await next_frame(alice), await next_frame(bob)

        answer = await ingest(api, [record(101, at=NOW - timedelta(minutes=10))])
        alice_frames = await frames_until(alice, lambda f: f["position"] >= answer["position"])
        # Alice's prompt has been delivered; Bob's socket got nothing from it.
        assert await bob.receive_nothing(timeout=0.5)

    assert alice_first["summary"]["total_messages"] == 1  # none of Bob's three
    assert bob_first["summary"]["total_messages"] == 3
    assert alice_frames[-1]["summary"]["total_messages"] == 2
    assert without_envelope(alice_frames[-1]) == await rest_dashboard(api)


# --- pushes without a new event ----------------------------------------------------------


async def test_the_window_reset_pushes_a_snapshot_without_any_new_event(
    app: Application, api: APIClient, token: str, clock: Clock
) -> None:
    window_start = datetime(2025, 10, 5, 17, 0, tzinfo=UTC)
    reset = window_start + timedelta(hours=5)
    clock.now = reset - timedelta(seconds=0.3)
    await ingest(api, [record(1, at=window_start)])
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        active = await next_frame(ws)

        clock.now = reset + timedelta(seconds=1)
        frames = await frames_until(
            ws, lambda f: f["rate_limit"]["is_within_active_window"] is False
        )

    assert active["rate_limit"]["is_within_active_window"] is True
    assert active["rate_limit"]["next_reset_at"] == reset.isoformat()
    assert frames[-1]["rate_limit"]["next_reset_at"] is None
    assert frames[-1]["position"] == active["position"]  # no new event: only the clock moved


async def test_a_lost_prompt_is_repaired_by_the_resync(
    app: Application,
    api: APIClient,
    token: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.USAGE_WS_RESYNC_SECONDS = 0.2
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        first = await next_frame(ws)
        monkeypatch.setattr("usage.notify.changed", lambda *args, **kwargs: None)

        answer = await ingest(api, [record(1, at=NOW - timedelta(minutes=3))])
        frames = await frames_until(ws, lambda f: f["position"] >= answer["position"])

    assert first["summary"]["total_messages"] == 0
    assert frames[-1]["summary"]["total_messages"] == 1


# --- races -------------------------------------------------------------------------------


class GatedSnapshots:
    """Wraps ``selectors.dashboard_with_position``: once closed, each computation reads the
    projections and then waits for the gate, so a test can act while it is in flight."""

    def __init__(self) -> None:
        self.real = selectors.dashboard_with_position
        self.open = threading.Event()
        self.open.set()
        self.in_flight = threading.Event()

    def __call__(self, **kwargs: Any) -> tuple[int, dict[str, object]]:
        result = self.real(**kwargs)
        if not self.open.is_set():
            self.in_flight.set()
            assert self.open.wait(TIMEOUT), "the test never opened the gate"
        return result

    async def wait_in_flight(self) -> None:
        assert await asyncio.to_thread(self.in_flight.wait, TIMEOUT)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedSnapshots]:
    gate = GatedSnapshots()
    monkeypatch.setattr(selectors, "dashboard_with_position", gate)
    yield gate
    gate.open.set()


async def test_a_prompt_arriving_while_a_snapshot_is_computed_is_not_lost(
    app: Application,
    api: APIClient,
    token: str,
    gated: GatedSnapshots,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    woken = asyncio.Event()
    real_wake = consumers.DashboardConsumer.wake

    def wake(self: consumers.DashboardConsumer, position: int) -> None:
        real_wake(self, position)
        woken.set()

    monkeypatch.setattr(consumers.DashboardConsumer, "wake", wake)
    async with dashboard(app, f"{WS_PATH}?token={token}") as ws:
        await next_frame(ws)
        gated.open.clear()

        first = await ingest(api, [record(1, at=NOW - timedelta(minutes=2))])
        await gated.wait_in_flight()  # the snapshot for `first` has read the projections
        woken.clear()
        second = await ingest(api, [record(2, at=NOW - timedelta(minutes=1))])
        await asyncio.wait_for(woken.wait(), TIMEOUT)  # its prompt reached the consumer
        gated.open.set()
        frames = await frames_until(ws, lambda f: f["position"] >= second["position"])

    assert frames[0]["position"] == first["position"]
    assert frames[-1]["summary"]["total_messages"] == 2


class WatchedHub(Hub):
    """Tells the test when a connection starts waiting for a computation already running."""

    def __init__(self) -> None:
        super().__init__()
        self.joined_a_computation = asyncio.Event()

    async def snapshot(
        self, key: SnapshotKey, *, min_position: int, max_age: float, compute: Compute
    ) -> Snapshot:
        if key in self._computing:
            self.joined_a_computation.set()
        return await super().snapshot(
            key, min_position=min_position, max_age=max_age, compute=compute
        )


async def test_a_closing_connection_does_not_break_a_snapshot_another_one_shares(
    api: APIClient, token: str, gated: GatedSnapshots, clock: Clock
) -> None:
    hub = WatchedHub()
    app = build_websocket_application(hub=hub, clock=clock)
    async with dashboard(app, f"{WS_PATH}?token={token}") as leaving:
        await next_frame(leaving)
        gated.open.clear()
        await ingest(api, [record(1, at=NOW - timedelta(minutes=2))])
        await gated.wait_in_flight()  # `leaving`'s update is being computed
        async with dashboard(app, f"{WS_PATH}?token={token}") as staying:
            # `staying` waits for the same computation (same user, same settings)...
            await asyncio.wait_for(hub.joined_a_computation.wait(), TIMEOUT)
            await leaving.disconnect(timeout=TIMEOUT)  # ...whose first waiter goes away
            gated.open.set()
            frame = await next_frame(staying)
            await assert_still_answers_ping(staying)

    assert frame["summary"]["total_messages"] == 1
