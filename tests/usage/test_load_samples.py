"""``manage.py load_samples``: the README's way to try the server on the sample tree."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from pytest_django.fixtures import Settings

from tests.conftest import SAMPLES
from usage import store
from usage.projection import redis_store

pytestmark = pytest.mark.django_db(transaction=True)

TREE = SAMPLES / "claude-config"


def load(*arguments: str) -> str:
    out = StringIO()
    call_command("load_samples", *arguments, "--user", "alice", stdout=out)
    return out.getvalue()


def ccusage_totals() -> dict[str, int]:
    daily = json.loads((SAMPLES / "ccusage" / "ccusage_daily.json").read_text())
    return dict(daily["totals"])


def test_it_ingests_the_sample_tree_with_the_totals_ccusage_reports(
    user: User, settings: Settings
) -> None:
    settings.USAGE_RETENTION_HOURS = 0

    printed = load(str(TREE))

    assert printed.startswith("16 files: accepted 403, duplicates ")
    totals, _ = redis_store.totals(user.pk)
    assert totals.total_tokens == ccusage_totals()["totalTokens"]
    assert totals.input_tokens == ccusage_totals()["inputTokens"]


def test_shift_to_now_moves_every_record_by_one_offset_into_retention(
    user: User, settings: Settings
) -> None:
    settings.USAGE_RETENTION_HOURS = 6
    before = datetime.now(tz=UTC)

    printed = load(str(TREE), "--shift-to-now")

    assert "expired 0" in printed
    times = sorted(e.record.timestamp for e in store.events_after(user.pk, 0, limit=10_000))
    newest = times[-1]
    assert before - timedelta(minutes=1, seconds=5) <= newest <= datetime.now(tz=UTC)
    # the sample tree spans six hours: moved as a whole, it keeps its shape
    assert times[-1] - times[0] < timedelta(hours=6)
    totals, _ = redis_store.totals(user.pk)
    assert totals.total_tokens == ccusage_totals()["totalTokens"]


def test_a_directory_without_transcripts_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"No \*\.jsonl files"):
        load(str(tmp_path))
