"""``manage.py rotate_token USER`` and ``revoke_token USER``: the old key stops working at
once, over REST and on open WebSockets (closed 4401 at the next resync)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from pytest_django.fixtures import Settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from realtime.hub import Hub
from realtime.routing import build_websocket_application
from tests.conftest import Clock

pytestmark = pytest.mark.usefixtures("isolated_channel_layer")

STATS = "/app/claude-usage/stats/"
TIMEOUT = 10.0  # a bound on waiting, never an expectation of speed


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def status_with(key: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return int(client.get(STATS).status_code)


@pytest.fixture
def key(user: User) -> str:
    return str(Token.objects.create(user=user).key)


@pytest.mark.django_db
def test_rotate_token_prints_only_the_new_key_and_the_old_one_stops_working(
    user: User, key: str
) -> None:
    printed = command("rotate_token", user.username)

    new_key = printed.strip()
    assert printed == new_key + "\n"
    assert new_key != key
    assert Token.objects.get(user=user).key == new_key
    assert status_with(key) == 401
    assert status_with(new_key) == 200


@pytest.mark.django_db
def test_rotate_token_gives_a_user_without_a_token_one(user: User) -> None:
    new_key = command("rotate_token", user.username).strip()

    assert status_with(new_key) == 200


@pytest.mark.django_db
def test_revoke_token_leaves_the_user_without_a_working_key(user: User, key: str) -> None:
    printed = command("revoke_token", user.username)

    assert key not in printed
    assert not Token.objects.filter(user=user).exists()
    assert status_with(key) == 401


@pytest.mark.django_db
def test_revoking_twice_is_harmless_and_create_token_then_makes_a_new_key(
    user: User, key: str
) -> None:
    command("revoke_token", user.username)
    command("revoke_token", user.username)

    new_key = command("create_token", user.username).strip()

    assert new_key != key
    assert status_with(new_key) == 200


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["rotate_token", "revoke_token"])
def test_an_unknown_user_is_an_error_that_creates_nobody(name: str) -> None:
    with pytest.raises(CommandError, match="no user 'nobody'"):
        command(name, "nobody")

    assert not User.objects.filter(username="nobody").exists()


# --- open WebSockets ------------------------------------------------------------------------


async def close_code_after(communicator: Any) -> int:
    for _ in range(1000):
        output = await communicator.receive_output(timeout=TIMEOUT)
        if output["type"] == "websocket.close":
            return int(output["code"])
    raise AssertionError("the socket was never closed")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["revoke_token", "rotate_token"])
async def test_an_open_websocket_of_a_revoked_or_rotated_token_is_closed_4401_at_the_next_resync(
    user: User, key: str, clock: Clock, settings: Settings, name: str
) -> None:
    settings.USAGE_WS_RESYNC_SECONDS = 0.05
    app = build_websocket_application(hub=Hub(), clock=clock)
    communicator = WebsocketCommunicator(app, f"/ws/claude-usage/?token={key}")
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    first = await communicator.receive_output(timeout=TIMEOUT)

    await sync_to_async(command)(name, user.username)
    code = await close_code_after(communicator)
    await communicator.disconnect(timeout=TIMEOUT)

    assert first["type"] == "websocket.send"
    assert code == 4401
