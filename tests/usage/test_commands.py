"""The management commands: what an operator types, and what it leaves in the log and Redis."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management import call_command
from pytest_django.fixtures import Settings
from rest_framework.authtoken.models import Token

from tests.support import manage
from tests.usage.projection_dump import dump_projection
from usage import services, store
from usage.management.commands import run_worker
from usage.measures import Totals
from usage.models import CompletedWindow, LoggedEvent
from usage.projection import projector, redis_store
from usage.projection.batch import Contribution, Owner, epoch_ms
from usage.projection.redis_store import Checkpoint

SONNET = "claude-sonnet-4-5-20250929"


def run(*arguments: str) -> str:
    """``manage.py`` in this process; returns what the command wrote to stdout."""
    out = StringIO()
    call_command(*arguments, stdout=out, stderr=StringIO())
    return out.getvalue()


def assistant_record(message_id: str, at: datetime, tokens: int = 100) -> dict[str, object]:
    return {
        "type": "assistant",
        "timestamp": at.isoformat(),
        "sessionId": "session-1",
        "cwd": "/home/alice/rest-api",
        "requestId": f"req_{message_id}",
        "message": {
            "id": message_id,
            "model": SONNET,
            "usage": {"input_tokens": tokens, "output_tokens": tokens},
        },
    }


def ingest(user_id: int, records: Sequence[object], now: datetime) -> None:
    services.ingest_records(user_id=user_id, records=records, host="laptop", now=now)


# --- create_token --------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_token_creates_the_user_and_prints_only_its_token() -> None:
    printed = run("create_token", "carol")

    token = Token.objects.get(user__username="carol")
    assert printed == f"{token.key}\n"


@pytest.mark.django_db
def test_create_token_run_again_prints_the_same_token() -> None:
    first = run("create_token", "carol")
    second = run("create_token", "carol")

    assert first == second
    assert get_user_model().objects.filter(username="carol").count() == 1
    assert Token.objects.filter(user__username="carol").count() == 1


@pytest.mark.django_db
def test_create_token_for_an_existing_user_keeps_the_users_token(user: User) -> None:
    existing = Token.objects.create(user=user)

    assert run("create_token", user.username) == f"{existing.key}\n"


def test_create_token_from_the_shell_writes_nothing_else_to_stdout(tmp_path: Path) -> None:
    """The real process: ``TOKEN=$(manage.py create_token me)`` must capture only the key,
    so nothing at start-up (settings, the embedded Redis, logging) may print to stdout."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "USAGE_VAR_DIR": str(tmp_path),
        "REDIS_URL": django_settings.REDIS_URL,
    }

    manage(env, "migrate", "--verbosity", "0")
    first, second = manage(env, "create_token", "me"), manage(env, "create_token", "me")

    assert first == second
    key = first.removesuffix("\n")
    assert len(key) == 40
    assert key.isalnum()


# --- rebuild_projections -------------------------------------------------------------------


def a_contribution() -> Contribution:
    return Contribution(
        sign=1,
        timestamp_ms=epoch_ms(datetime(2025, 10, 5, 21, 0, tzinfo=UTC)),
        model=SONNET,
        values=Totals(input_tokens=1, output_tokens=1, messages=1, cost_nanos=18_000),
        message_id="gone",
        request_id="gone",
        owner=Owner(project_path="/gone", session_id="gone", host="laptop"),
        unpriced=False,
    )


@pytest.mark.django_db(transaction=True)
def test_rebuild_projections_recomputes_every_projection_from_the_log(
    user: User, other_user: User
) -> None:
    now = datetime.now(tz=UTC)
    ingest(user.pk, [assistant_record(f"a{i}", now - timedelta(minutes=i)) for i in range(5)], now)
    ingest(other_user.pk, [assistant_record("b", now)], now)
    expected = {uid: dump_projection(uid) for uid in (user.pk, other_user.pk)}
    # Damage both: a wrong total, a lost bucket; and a projection for a user without events.
    r = redis_store.client()
    r.hincrby(redis_store.user_prefix(user.pk) + "tot", "i", 999)
    r.delete(redis_store.user_prefix(other_user.pk) + "tot")
    gone = get_user_model().objects.create(username="gone")
    log = projector.binding()
    redis_store.reset_checkpoint(gone.pk, log)
    redis_store.apply(
        gone.pk, [(1, [a_contribution()])], after=Checkpoint(log, 0, ""), last_event="gone"
    )

    printed = run("rebuild_projections")

    assert printed.startswith("rebuilt projections of 3 users, priced with genai-prices ")
    assert dump_projection(user.pk) == expected[user.pk]
    assert dump_projection(other_user.pk) == expected[other_user.pk]
    assert dump_projection(gone.pk) == {"cp": f"{log}:0:"}


# --- prune_events --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_prune_events_deletes_what_retention_no_longer_keeps(
    user: User, settings: Settings
) -> None:
    now = datetime.now(tz=UTC)
    settings.USAGE_RETENTION_HOURS = 0
    ingest(user.pk, [assistant_record("old", now - timedelta(hours=7), tokens=1000)], now)
    ingest(user.pk, [assistant_record("young", now - timedelta(hours=1), tokens=10)], now)
    settings.USAGE_RETENTION_HOURS = 6

    printed = run("prune_events")

    assert printed == "pruned 1 events of 1 users\n"
    assert list(LoggedEvent.objects.values_list("message_id", flat=True)) == ["young"]
    totals = redis_store.totals(user.pk)[0]
    assert (totals.messages, totals.input_tokens, totals.output_tokens) == (1, 10, 10)


@pytest.mark.django_db(transaction=True)
def test_prune_events_with_retention_off_deletes_nothing(user: User, settings: Settings) -> None:
    now = datetime.now(tz=UTC)
    settings.USAGE_RETENTION_HOURS = 0
    ingest(user.pk, [assistant_record("ancient", now - timedelta(days=20))], now)

    printed = run("prune_events")

    assert printed == "pruned 0 events of 0 users\n"
    assert LoggedEvent.objects.count() == 1


# --- run_worker ----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_one_worker_tick_catches_up_keeps_finished_windows_and_applies_retention(
    user: User, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(tz=UTC)
    settings.USAGE_RETENTION_HOURS = 0
    ingest(user.pk, [assistant_record("old", now - timedelta(hours=7), tokens=1000)], now)
    ingest(user.pk, [assistant_record("young", now - timedelta(hours=1), tokens=10)], now)
    redis_store.drop_user(user.pk)  # as if Redis had restarted empty
    settings.USAGE_RETENTION_HOURS = 6

    with caplog.at_level(logging.ERROR):
        run("run_worker", "--once")

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert list(LoggedEvent.objects.values_list("message_id", flat=True)) == ["young"]
    totals = redis_store.totals(user.pk)[0]
    assert (totals.messages, totals.input_tokens) == (1, 10)
    stored = redis_store.checkpoint(user.pk)
    assert stored is not None
    assert stored.position == store.last_position(user.pk)
    # the window of the pruned event is kept (both alignments), the active one is not yet
    finished = CompletedWindow.objects.filter(user=user)
    assert sorted(finished.values_list("align", flat=True)) == ["exact", "hour"]
    assert {window.input_output_tokens for window in finished} == {2000}
    assert all(window.end <= now for window in finished)


@pytest.mark.django_db(transaction=True)
def test_a_worker_tick_repairs_a_projection_that_missed_an_ingest(user: User) -> None:
    now = datetime.now(tz=UTC)
    ingest(user.pk, [assistant_record("first", now)], now)
    expected = dump_projection(user.pk)
    # The ingest committed but its catch-up never ran (the process died in between):
    # the projection stands at position 0.
    redis_store.drop_user(user.pk)
    redis_store.reset_checkpoint(user.pk, projector.binding())

    run("run_worker", "--once")

    assert dump_projection(user.pk) == expected


@pytest.mark.django_db(transaction=True)
def test_a_ctrl_c_while_a_job_runs_ends_the_worker_quietly(
    user: User, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # make run's Ctrl-C reaches the worker at any moment, also inside a job's own
    # ``except Exception`` (which once logged it as a failed job and kept looping).
    calls = []

    def interrupted() -> list[int]:
        calls.append(1)
        if len(calls) > 1:  # stops the loop the old code went on with (it ignored more signals)
            raise SystemExit("the worker went on after its Ctrl-C")
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(500):  # its handler runs at the next check: here, in the main thread
            time.sleep(0.01)
        raise AssertionError("the signal's handler did not stop the job")

    monkeypatch.setattr(store, "user_ids_with_events", interrupted)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with caplog.at_level(logging.ERROR):
            run("run_worker", "--interval", "0")
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        run_worker._stopping.clear()

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- local_setup ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_local_setup_creates_the_local_user_and_prints_its_token_and_urls(
    settings: Settings,
) -> None:
    settings.USAGE_LOCAL_USER = "local"

    printed = run("local_setup", "--base-url", "http://127.0.0.1:9000/")

    token = Token.objects.get(user__username="local")
    assert f"API token:  {token.key}" in printed
    assert "http://127.0.0.1:9000/app/claude-usage/dashboard/" in printed
    assert "http://127.0.0.1:9000/app/claude-usage/schema/" in printed
    assert f"ws://127.0.0.1:9000/ws/claude-usage/?token={token.key}" in printed
    assert "Dashboard:  http://127.0.0.1:9000/ " in printed
    assert f"monitor --server http://127.0.0.1:9000 --token {token.key}" in printed
    assert "http://127.0.0.1:9000/readyz" in printed
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9000 " in printed
    assert f"'Authorization=Token {token.key}'" in printed


@pytest.mark.django_db
def test_local_setup_run_again_keeps_the_same_user_and_token(settings: Settings) -> None:
    settings.USAGE_LOCAL_USER = "local"

    first = run("local_setup")
    second = run("local_setup", "--base-url", "https://usage.example")

    token = Token.objects.get(user__username="local")
    assert token.key in first
    assert token.key in second
    assert f"wss://usage.example/ws/claude-usage/?token={token.key}" in second
    assert get_user_model().objects.filter(username="local").count() == 1
