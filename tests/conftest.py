"""Shared fixtures: real Redis (embedded unless REDIS_URL is set: tests/embedded_redis_setup.py
starts it before the settings load), the real database (SQLite unless DATABASE_URL is set),
an API client with a token, and a controllable clock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from channels.layers import channel_layers
from django.conf import settings as settings_module
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support import samples
from usage.projection import redis_address, redis_store

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
SAMPLE_PROJECTS = SAMPLES / "claude-config" / "projects"


@pytest.fixture(autouse=True)
def _isolated_redis_namespace(settings, request) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Every test gets its own key prefix in the one real Redis, and leaves nothing behind."""
    settings.USAGE_REDIS_PREFIX = f"cutest{os.getpid()}x{abs(hash(request.node.nodeid)) % 10**8}"
    yield
    drop_all_projections()


@pytest.fixture
def isolated_channel_layer(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """A channel layer of the test's own (the prefix is read when the layer is built), so
    no prompt leaks between tests."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": redis_address.node_urls(settings.REDIS_URL),
                "prefix": f"wstest{uuid.uuid4().hex}",
            },
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def drop_all_projections() -> None:
    """Every key under the current prefix, of every layout (and the rebuild locks)."""
    client = redis_store.client()
    pattern = redis_store.glob_escape(settings_module.USAGE_REDIS_PREFIX) + ":*"
    keys = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


class Clock:
    """The one fake the standards allow: the time the views read."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(datetime(2025, 10, 5, 22, 0, tzinfo=UTC))
    monkeypatch.setattr("usage.api.views._now", fake)
    return fake


@pytest.fixture
def user(db):  # type: ignore[no-untyped-def]
    return get_user_model().objects.create(username="alice")


@pytest.fixture
def other_user(db):  # type: ignore[no-untyped-def]
    return get_user_model().objects.create(username="bob")


def client_for(user) -> APIClient:  # type: ignore[no-untyped-def]
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(user) -> APIClient:  # type: ignore[no-untyped-def]
    return client_for(user)


def sample_lines() -> list[bytes]:
    """Every line of the sample transcript tree, in a stable order. A missing tree fails the
    test: rglob would find no file, and a test looping over no line would pass."""
    lines: list[bytes] = []
    for path in sorted(samples("claude-config", "projects").rglob("*.jsonl")):
        lines.extend(line for line in path.read_bytes().splitlines() if line.strip())
    return lines


@pytest.fixture(autouse=True)
def _database_taken_to_be_up() -> Iterator[None]:
    """A test that found the database down (usage.outage) leaves it up for the next."""
    yield
    from usage import outage

    outage.succeeded()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.postgres_only``: skipped where the suite's database is SQLite."""
    if item.get_closest_marker("postgres_only") is None:
        return
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL=postgres://...)")
