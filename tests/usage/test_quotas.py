"""Per-user quotas of distinct models, projects, sessions and hosts: a record that would add
one past the limit is rejected by its index (QUOTA_EXCEEDED); records of the names already
in use still go in. Counted from the log, so every process agrees."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pytest_django import Settings
from rest_framework.test import APIClient

from tests.conftest import Clock
from tests.usage.test_ingest_api import fresh_client, ingest, line, stats
from usage import services, store
from usage.models import LoggedEvent

pytestmark = [pytest.mark.django_db(transaction=True)]

KINDS = {
    # kind: (setting, the line() argument that names the kind's i-th name)
    "model": ("USAGE_MAX_MODELS_PER_USER", "model", "claude-test-{}"),
    "project": ("USAGE_MAX_PROJECTS_PER_USER", "cwd", "/home/alice/p{}"),
    "session": ("USAGE_MAX_SESSIONS_PER_USER", "session", "session-{}"),
}


def record(kind: str, name: int, message: str) -> dict[str, Any]:
    _, argument, pattern = KINDS[kind]
    if argument == "model":
        return line(message, model=pattern.format(name))
    if argument == "cwd":
        return line(message, cwd=pattern.format(name))
    return line(message, session=pattern.format(name))


def rejected(answer: dict[str, Any]) -> list[tuple[int, str]]:
    return [(r["index"], r["error"]["code"]) for r in answer["rejected"]]


@pytest.mark.parametrize("kind", KINDS)
def test_a_record_of_a_new_name_past_the_quota_is_rejected_and_known_names_still_go_in(
    api: APIClient, clock: Clock, settings: Settings, kind: str
) -> None:
    setattr(settings, KINDS[kind][0], 2)
    ingest(api, record(kind, 1, "m1"), record(kind, 2, "m2"))

    answer = ingest(api, record(kind, 3, "m3"), record(kind, 1, "m4"), record(kind, 2, "m5"))

    assert answer["accepted"] == 2
    assert rejected(answer) == [(0, "QUOTA_EXCEEDED")]
    message = answer["rejected"][0]["error"]["message"]
    assert KINDS[kind][0] in message
    assert "limit of 2" in message
    assert stats(api)["total_messages"] == 4


def test_a_new_host_past_the_quota_is_rejected_record_by_record(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    settings.USAGE_MAX_HOSTS_PER_USER = 2
    ingest(api, line("m1"), HTTP_X_USAGE_HOST="laptop")
    ingest(api, line("m2"), HTTP_X_USAGE_HOST="desktop")

    third = ingest(api, line("m3"), line("m4"), HTTP_X_USAGE_HOST="server")
    known = ingest(api, line("m5"), HTTP_X_USAGE_HOST="laptop")

    assert rejected(third) == [(0, "QUOTA_EXCEEDED"), (1, "QUOTA_EXCEEDED")]
    assert "USAGE_MAX_HOSTS_PER_USER" in third["rejected"][0]["error"]["message"]
    assert known["accepted"] == 1
    assert {host["host"] for host in stats(api)["hosts"]} == {"laptop", "desktop"}


def test_within_one_batch_the_first_new_names_fit_and_the_later_ones_are_refused(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    settings.USAGE_MAX_SESSIONS_PER_USER = 3
    records = [line(f"m{i}", session=f"s{i}") for i in range(5)] + [line("m9", session="s0")]

    answer = ingest(api, *records)

    assert answer["accepted"] == 4
    assert rejected(answer) == [(3, "QUOTA_EXCEEDED"), (4, "QUOTA_EXCEEDED")]


def test_a_record_refused_for_one_quota_does_not_use_up_another(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    settings.USAGE_MAX_SESSIONS_PER_USER = 1
    settings.USAGE_MAX_MODELS_PER_USER = 2
    ingest(api, line("m1", session="s1"))

    # A new session (refused) with a new model: the model does not count.
    ingest(api, line("m2", session="s2", model="claude-other"))
    answer = ingest(api, line("m3", session="s1", model="claude-third"))

    assert answer["accepted"] == 1


def test_quotas_are_per_user(api: APIClient, clock: Clock, settings: Settings) -> None:
    settings.USAGE_MAX_PROJECTS_PER_USER = 1
    ingest(api, line("m1", cwd="/a"))

    answer = ingest(fresh_client(), line("m1", cwd="/b"))

    assert (answer["accepted"], answer["rejected"]) == (1, [])


def test_another_process_counts_the_names_the_log_holds(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    """A process that has read no names yet (here: this one, its memory of them dropped)
    reads them from the log, and names appended by another process since its last read too."""
    settings.USAGE_MAX_MODELS_PER_USER = 2
    ingest(api, line("m1", model="claude-a"))
    store._known_names.clear()
    ingest(api, line("m2", model="claude-b"))

    answer = ingest(api, line("m3", model="claude-c"), line("m4", model="claude-a"))

    assert rejected(answer) == [(0, "QUOTA_EXCEEDED")]
    assert answer["accepted"] == 1


def test_names_that_retention_deleted_stop_counting(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    settings.USAGE_MAX_PROJECTS_PER_USER = 1
    ingest(api, line("m1", cwd="/old", at="2025-10-05T17:00:00Z"))

    services.prune_events(now=clock.now + timedelta(hours=2))
    clock.now += timedelta(hours=2)
    answer = ingest(api, line("m2", cwd="/new", at="2025-10-05T23:30:00Z"))

    assert (answer["accepted"], answer["rejected"]) == (1, [])
    assert not LoggedEvent.objects.filter(project_path="/old").exists()


def test_the_default_quotas_are_generous(settings: Settings) -> None:
    assert settings.USAGE_MAX_MODELS_PER_USER == 200
    assert settings.USAGE_MAX_PROJECTS_PER_USER == 2_000
    assert settings.USAGE_MAX_SESSIONS_PER_USER == 50_000
    assert settings.USAGE_MAX_HOSTS_PER_USER == 200


def test_a_batch_of_many_new_sessions_is_cut_at_the_quota(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    settings.USAGE_MAX_SESSIONS_PER_USER = 100
    records = [line(f"m{i}", session=f"s{i}") for i in range(150)]

    answer = ingest(api, *records)

    assert answer["accepted"] == 100
    assert [r["index"] for r in answer["rejected"]] == list(range(100, 150))
