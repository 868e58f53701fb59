"""Re-pricing is a rebuild: projections carry the price data they were built with, and new
price data (an overlay edit, a genai-prices upgrade) re-prices every retained event, moving
exactly the costs it changes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings
from pytest_django.fixtures import Settings

from tests.usage.projection_dump import Dump, dump_projection
from usage import pricing, services, store
from usage.measures import repriced
from usage.projection import projector, redis_store

pytestmark = [pytest.mark.django_db(transaction=True)]

NOW = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
SONNET_45 = "claude-sonnet-4-5-20250929"
OPUS_41 = "claude-opus-4-1-20250805"


def line(message_id: str, model: str, minutes_ago: int, project: str) -> dict[str, object]:
    return {
        "type": "assistant",
        "timestamp": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "sessionId": f"session-{project}",
        "cwd": f"/home/alice/{project}",
        "requestId": f"req_{message_id}",
        "message": {
            "id": message_id,
            "model": model,
            "usage": {"input_tokens": 1_000, "output_tokens": 100},
        },
    }


@pytest.fixture
def overlay(settings: Settings, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "operator.toml"
    path.write_text('version = "0"\n')
    settings.USAGE_PRICE_OVERLAY = str(path)
    yield path
    pricing.configure("")


# An operator's new Opus 4.1 rate from 2026-01-01: $12 input instead of genai-prices' $15.
OPUS_AT_12 = """
version = "1"

[[price]]
models = ["claude-opus-4-1"]
from = 2026-01-01
source = "a negotiated rate"
standard = { input = 12, output = 75 }
"""


def ingest_two_projects(user: User) -> None:
    records = [
        line("s1", SONNET_45, 50, "api"),
        line("o1", OPUS_41, 40, "api"),
        line("s2", SONNET_45, 30, "web"),
        line("o2", OPUS_41, 3, "web"),
    ]
    with override_settings(USAGE_RETENTION_HOURS=0):
        services.ingest_records(user_id=user.pk, records=records, host="laptop", now=NOW)
    projector.ensure_current(user.pk)


def changed_fields(before: Dump, after: Dump) -> dict[str, dict[str, tuple[str, str]]]:
    """Per hash, the fields whose values differ (the checkpoint aside)."""
    changes: dict[str, dict[str, tuple[str, str]]] = {}
    assert set(before) == set(after)
    for key, old in before.items():
        new = after[key]
        if key == "cp":
            continue
        if not isinstance(old, dict):
            assert new == old, key
            continue
        assert isinstance(new, dict)
        assert set(new) == set(old), key
        differing = {f: (old[f], new[f]) for f in old if old[f] != new[f]}
        if differing:
            changes[key] = differing
    return changes


def test_a_rebuild_after_an_overlay_change_moves_exactly_the_affected_costs(
    user: User, overlay: Path
) -> None:
    ingest_two_projects(user)
    before = dump_projection(user.pk)

    overlay.write_text(OPUS_AT_12)
    pricing.configure(str(overlay))
    rebuilt = projector.reprice_at_start()
    after = dump_projection(user.pk)

    assert rebuilt == [user.pk]
    # Each Opus 4.1 message: 1,000 input tokens x 15,000 -> 12,000 nanodollars a token,
    # 15,000,000 + 100 x 75,000 = 22,500,000 -> 12,000,000 + 7,500,000 = 19,500,000.
    opus_old, opus_new = 22_500_000, 19_500_000
    sonnet = 1_000 * 3_000 + 100 * 15_000  # 4,500,000, unchanged
    changes = changed_fields(before, after)
    hour = int(NOW.timestamp()) // 3600 * 3600
    prior = hour - 3600  # 11:10 and 11:20 are in the hour before NOW's
    projects = {row.path: f"p:{row.project_id}" for row in redis_store.projects(user.pk)}
    one, two = (str(opus_old), str(opus_new)), (str(2 * opus_old), str(2 * opus_new))
    with_sonnet = (str(sonnet + opus_old), str(sonnet + opus_new))
    both = (str(2 * sonnet + 2 * opus_old), str(2 * sonnet + 2 * opus_new))
    sessions = _session_keys(user.pk)
    expected = {
        "tot": {"c": both, f"c|{OPUS_41}": two},
        f"h:{prior}": {"c": both, f"c|{OPUS_41}": two},  # all four are 11:10 to 11:57
        f"m:{minute(40)}": {"c": one, f"c|{OPUS_41}": one},
        f"m:{minute(3)}": {"c": one, f"c|{OPUS_41}": one},
        projects["/home/alice/api"]: {"c": with_sonnet},
        projects["/home/alice/web"]: {"c": with_sonnet},
        sessions["session-api"]: {"c": with_sonnet},
        sessions["session-web"]: {"c": with_sonnet},
        "host:laptop": {"c": both},
    }
    assert changes == expected


def minute(ago: int) -> int:
    """The minute bucket's start (epoch seconds) of a message ``ago`` minutes before NOW."""
    return int((NOW - timedelta(minutes=ago)).timestamp()) // 60 * 60


def _session_keys(user_id: int) -> dict[str, str]:
    """Session id -> its hash's name in the dump (``s:`` and the hashed id)."""
    client = redis_store.client()
    prefix = redis_store.user_prefix(user_id)
    found = {}
    for project in redis_store.projects(user_id):
        for sid in client.smembers(f"{prefix}p:{project.project_id}:sessions"):
            found[client.hget(f"{prefix}s:{sid}", "session")] = f"s:{sid}"
    return found


def test_the_worker_says_which_price_data_it_runs_and_re_prices_other_projections(
    user: User, other_user: User, overlay: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest_two_projects(user)
    services.ingest_records(
        user_id=other_user.pk, records=[line("x", SONNET_45, 5, "api")], host="h", now=NOW
    )
    projector.ensure_current(other_user.pk)
    assert projector.built_with_other_prices() == []

    overlay.write_text(OPUS_AT_12)
    pricing.configure(str(overlay))
    with caplog.at_level(logging.INFO, logger="usage.projection.projector"):
        assert projector.built_with_other_prices() == sorted([user.pk, other_user.pk])
        projector.reprice_at_start()

    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == f"price data: {pricing.price_data().describe()}"
    assert "operator overlay 1" in messages[0]
    assert messages[1] == (
        "the projections of 2 user(s) were built with other price data: re-pricing them"
    )
    assert projector.built_with_other_prices() == []
    assert redis_store.checkpoint(user.pk).log == projector.binding()  # type: ignore[union-attr]


def test_a_read_re_prices_a_projection_built_with_other_price_data(
    user: User, overlay: Path
) -> None:
    ingest_two_projects(user)
    totals_before, _ = redis_store.totals(user.pk)

    overlay.write_text(OPUS_AT_12)
    pricing.configure(str(overlay))
    projector.ensure_current(user.pk)  # what every read does first
    totals_after, _ = redis_store.totals(user.pk)

    assert totals_before.cost_nanos - totals_after.cost_nanos == 2 * (22_500_000 - 19_500_000)
    assert totals_after._replace(cost_nanos=0) == totals_before._replace(cost_nanos=0)


def test_an_event_of_schema_1_reads_back_as_a_standard_request_and_prices_as_before(
    user: User,
) -> None:
    # A row as the previous release appended it: none of the new columns named.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO usage_event (user_id, kind, schema_version, revision, message_id, "
            "request_id, occurred_at, recorded_at, model, input_tokens, output_tokens, "
            "cache_creation_5m_tokens, cache_creation_1h_tokens, cache_read_tokens, "
            "cost_nanos, priced, session_id, project_path, is_sidechain, host) VALUES "
            "(%s, 'usage_recorded', 1, 0, 'old', 'req_old', %s, %s, %s, 1000, 100, 0, 0, 0, "
            "4500000, %s, 's', '/p', %s, 'h')",
            [user.pk, NOW, NOW, SONNET_45, True, False],
        )

    [event] = store.events_after(user.pk, 0)

    assert event.schema_version == 1
    record = event.record
    assert (record.speed, record.service_tier, record.web_search_requests) == ("", "", 0)
    assert event.web_search_cost_nanos == 0
    # 1,000 x 3,000 + 100 x 15,000 = 4,500,000 nanodollars, as it was priced then.
    assert repriced(event) is event
