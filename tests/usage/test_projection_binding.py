"""Redis answers only from projections of *this* log: a projection built from another log (a
new database, another deployment sharing the Redis, a restored backup) is rebuilt from this
one, never served."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connection
from pytest_django.fixtures import Settings

from tests.support import API, ServerProcess, manage
from usage import services, store
from usage.models import LoggedEvent, LogIdentity
from usage.projection import projector, redis_store

NOW = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)
SONNET = "claude-sonnet-4-5-20250929"
TABLE = LoggedEvent._meta.db_table  # deleted from directly: the model refuses nothing, SQL shows it


def line(message_id: str, minutes_ago: int = 10, tokens: int = 100) -> dict[str, object]:
    return {
        "timestamp": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "sessionId": "s",
        "cwd": "/home/alice/api",
        "requestId": f"req_{message_id}",
        "message": {
            "id": message_id,
            "model": SONNET,
            "usage": {"input_tokens": tokens, "output_tokens": tokens},
        },
    }


def ingest(user: User, *lines: dict[str, object]) -> None:
    services.ingest_records(user_id=user.pk, records=lines, host="laptop", now=NOW)


def projected_messages(user: User) -> int:
    projector.ensure_current(user.pk)
    return redis_store.totals(user.pk)[0].messages


def forget_the_log() -> None:
    """What a new database looks like to the projections: no events, another identity."""
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}")
    LogIdentity.objects.all().delete()


@pytest.mark.django_db(transaction=True)
def test_a_projection_of_another_log_is_rebuilt_not_served(user: User) -> None:
    ingest(user, line("a"), line("b"))
    assert projected_messages(user) == 2

    forget_the_log()  # the same user id in a fresh database
    ingest(user, line("c"))

    assert projected_messages(user) == 1
    assert redis_store.totals(user.pk)[0].input_tokens == 100


@pytest.mark.django_db(transaction=True)
def test_a_projection_ahead_of_the_log_is_rebuilt(user: User) -> None:
    ingest(user, line("a"), line("b"), line("c"))
    assert projected_messages(user) == 3
    last = LoggedEvent.objects.filter(user=user).order_by("-position").first()
    assert last is not None
    # a backup restored from before the last event: same log, shorter
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {LoggedEvent._meta.db_table} WHERE position = %s", [last.position]
        )

    assert projected_messages(user) == 2


@pytest.mark.django_db(transaction=True)
def test_a_projection_whose_checkpoint_event_is_another_is_rebuilt(user: User) -> None:
    """A restored backup that took new events since: the positions the projection holds
    now belong to other events, and the log is no longer behind it."""
    ingest(user, line("a"), line("b"), line("c"))
    assert projected_messages(user) == 3
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE} WHERE message_id != 'a'")
    ingest(user, line("d"), line("e"))  # a longer log again, with other events

    assert projected_messages(user) == 3  # a, d, e
    stored = redis_store.checkpoint(user.pk)
    assert stored is not None
    assert stored.position == store.last_position(user.pk)


# --- the issue's own reproduction: two servers, one Redis ----------------------------------


@pytest.fixture
def shared_prefix() -> Iterator[str]:
    prefix = f"bindtest{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis_store.client()
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def server_env(database: Path, prefix: str) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": django_settings.REDIS_URL,
        "USAGE_REDIS_PREFIX": prefix,
        "USAGE_RETENTION_HOURS": "0",
        "USAGE_VAR_DIR": str(database.parent / "var"),
        "DJANGO_SETTINGS_MODULE": "backend.settings",
    }


def stats_of_the_first_user(env: dict[str, str], workdir: Path, send: bool) -> dict[str, object]:
    manage(env, "migrate", "--noinput", "-v0")
    token = manage(env, "create_token", "first").strip()
    server = ServerProcess(env, workdir / "daphne.log")
    server.start()
    try:
        headers = {"Authorization": f"Token {token}"}
        if send:
            body = {"records": [line("a"), line("b")]}
            answer = httpx.post(f"{server.url}{API}events/", json=body, headers=headers, timeout=60)
            assert answer.status_code == 200, answer.text
        stats: dict[str, object] = httpx.get(
            f"{server.url}{API}stats/", headers=headers, timeout=60
        ).json()
        return stats
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.django_db
def test_a_second_server_on_a_fresh_database_shows_its_first_user_nothing_of_the_first(
    tmp_path: Path, shared_prefix: str, settings: Settings
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = stats_of_the_first_user(
        server_env(tmp_path / "one" / "db.sqlite3", shared_prefix), tmp_path / "one", send=True
    )
    second = stats_of_the_first_user(
        server_env(tmp_path / "two" / "db.sqlite3", shared_prefix), tmp_path / "two", send=False
    )

    assert first["total_messages"] == 2
    assert (second["total_messages"], second["projects"], second["hosts"]) == (0, 0, [])
