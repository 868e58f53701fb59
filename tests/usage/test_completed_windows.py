"""Completed 5-hour windows: recorded once per worker tick, only where something changed."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings

from usage import services, side_tables, store
from usage.completed_windows import Progress
from usage.models import CompletedWindow

pytestmark = pytest.mark.django_db(transaction=True)

SONNET = "claude-sonnet-4-5-20250929"
DAY = datetime(2025, 10, 5, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


def record(message_id: str, moment: datetime, tokens: int = 100) -> dict[str, object]:
    return {
        "timestamp": moment.isoformat(),
        "sessionId": "s",
        "cwd": "/p",
        "requestId": f"req_{message_id}",
        "message": {
            "id": message_id,
            "model": SONNET,
            "usage": {"input_tokens": tokens, "output_tokens": tokens},
        },
    }


def ingest(user: User, *records: dict[str, object], now: datetime) -> None:
    services.ingest_records(user_id=user.pk, records=records, host="laptop", now=now)


def windows(user: User, align: str = "exact") -> list[tuple[str, int]]:
    """(start HH:MM, input + output tokens) of the user's recorded windows."""
    rows = CompletedWindow.objects.filter(user=user, align=align).order_by("start")
    return [(f"{row.start:%H:%M}", row.input_output_tokens) for row in rows]


@dataclass
class Calls:
    """What one tick asked of the log and the window table (the real functions run)."""

    reads: list[tuple[datetime, datetime]] = field(default_factory=list)
    saves: list[datetime] = field(default_factory=list)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    seen = Calls()
    read, save = store.events_between, side_tables.save_completed_window

    def reading(user_id: int, start: datetime, end: datetime) -> Any:
        seen.reads.append((start, end))
        return read(user_id, start, end)

    def saving(**arguments: Any) -> None:
        seen.saves.append(arguments["start"])
        save(**arguments)

    monkeypatch.setattr(store, "events_between", reading)
    monkeypatch.setattr(side_tables, "save_completed_window", saving)
    return seen


@pytest.fixture(autouse=True)
def _keep_everything(settings: Settings) -> None:
    settings.USAGE_RETENTION_HOURS = 0


def test_a_finished_window_is_recorded_with_its_totals_and_the_active_one_is_not(
    user: User,
) -> None:
    ingest(user, record("a", at(10)), record("b", at(12), tokens=50), now=at(10))
    ingest(user, record("c", at(16)), now=at(16))

    services.record_completed_windows(now=at(16, 30), since=Progress())

    assert windows(user) == [("10:00", 300)]
    assert windows(user, "hour") == [("10:00", 300)]


def test_one_tick_saves_each_finished_window_once(user: User, calls: Calls) -> None:
    ingest(user, record("a", at(1)), record("b", at(7)), record("c", at(13)), now=at(13))

    services.run_periodic_jobs(now=at(13, 30), since=Progress())

    assert sorted(calls.saves) == sorted([at(1), at(7), at(1), at(7)])  # exact and hour


def test_a_tick_after_a_quiet_minute_reads_and_saves_nothing(user: User, calls: Calls) -> None:
    ingest(user, record("a", at(1)), record("b", at(7)), now=at(7))
    progress = services.record_completed_windows(now=at(7, 30), since=Progress())
    calls.reads.clear()
    calls.saves.clear()

    services.record_completed_windows(now=at(7, 31), since=progress)

    assert calls.reads == []
    assert calls.saves == []


def test_a_window_that_ends_between_ticks_is_recorded_from_its_own_start_on(
    user: User, calls: Calls
) -> None:
    ingest(user, record("a", at(1)), record("b", at(7)), now=at(7))
    progress = services.record_completed_windows(now=at(7, 30), since=Progress())
    calls.reads.clear()

    services.record_completed_windows(now=at(12, 1), since=progress)

    assert windows(user) == [("01:00", 200), ("07:00", 200)]
    assert calls.saves[-2:] == [at(7), at(7)]
    # it read from the window open at the previous tick (07:00), not from the one recorded
    # before it (01:00), nor thirty days back
    assert [start for start, _ in calls.reads] == [at(7)]


def test_without_the_previous_ticks_progress_it_reads_from_the_latest_recorded_window(
    user: User, calls: Calls
) -> None:
    """A restarted worker knows no open window: the recorded ones still bound the read."""
    ingest(user, record("a", at(1)), record("b", at(7)), now=at(7))
    progress = services.record_completed_windows(now=at(7, 30), since=Progress())
    calls.reads.clear()

    services.record_completed_windows(now=at(12, 1), since=replace(progress, open_windows={}))

    assert windows(user) == [("01:00", 200), ("07:00", 200)]
    assert [start for start, _ in calls.reads] == [at(1)]


def test_a_busy_users_ticks_read_nothing_until_their_open_window_ends(
    user: User, calls: Calls
) -> None:
    """A user without a finished window yet (their first five hours) was read from thirty
    days back on every tick, and a user with one from the start of the window before the
    open one: each tick's read grew with the log. Messages inside the open window change no
    finished window: a window's events are read once, at the first tick after it ends."""
    ingest(user, record("a", at(1)), now=at(1))
    progress = services.record_completed_windows(now=at(1, 1), since=Progress())
    for minute in range(2, 6):
        ingest(user, record(f"m{minute}", at(1, minute)), now=at(1, minute))
        calls.reads.clear()
        progress = services.record_completed_windows(now=at(1, minute), since=progress)
        assert calls.reads == [], minute
    ingest(user, record("late", at(6, 30)), now=at(6, 30))  # after the 01:00 window's end

    calls.reads.clear()
    progress = services.record_completed_windows(now=at(6, 31), since=progress)
    assert [start for start, _ in calls.reads] == [at(1)]  # the ended window, once
    assert windows(user) == [("01:00", 1000)]
    calls.reads.clear()
    ingest(user, record("later", at(6, 40)), now=at(6, 40))
    services.record_completed_windows(now=at(6, 41), since=progress)

    assert calls.reads == []  # inside the windows opened at 06:30 (exact) and 06:00 (hour)


def test_an_open_window_that_retention_cut_into_is_not_read_while_it_is_open(
    user: User, calls: Calls, settings: Settings
) -> None:
    """With retention shorter than a window, its start's events are gone before it ends; it
    cannot be recomputed from there, but while it is open there is nothing to recompute."""
    settings.USAGE_RETENTION_HOURS = 2
    ingest(user, record("a", at(1)), now=at(1))
    progress = services.record_completed_windows(now=at(1, 1), since=Progress())
    ingest(user, record("b", at(4)), now=at(4))  # the 01:00 window is open, its start 3 h old
    calls.reads.clear()

    services.record_completed_windows(now=at(4, 1), since=progress)

    assert calls.reads == []


def test_a_late_message_that_moves_a_windows_start_replaces_the_window(user: User) -> None:
    ingest(user, record("a", at(10, 30)), now=at(10, 30))
    progress = services.record_completed_windows(now=at(16), since=Progress())
    assert windows(user) == [("10:30", 200)]

    ingest(user, record("early", at(10, 10)), now=at(16))  # an agent that was offline
    services.record_completed_windows(now=at(16, 1), since=progress)

    assert windows(user) == [("10:10", 400)]


def test_a_recorded_window_that_retention_cut_into_is_never_recomputed(
    user: User, settings: Settings
) -> None:
    settings.USAGE_RETENTION_HOURS = 6
    ingest(user, record("a", at(1)), record("b", at(4)), now=at(4))
    progress = services.run_periodic_jobs(now=at(6, 1), since=Progress())
    assert windows(user) == [("01:00", 400)]

    progress = services.run_periodic_jobs(now=at(8), since=progress)  # prunes "a"
    ingest(user, record("c", at(8)), now=at(8))
    services.run_periodic_jobs(now=at(13, 1), since=progress)

    assert windows(user) == [("01:00", 400), ("08:00", 200)]
    assert list(store.events_after(user.pk, 0)) != []  # "b" and "c" are still logged


def test_a_user_whose_windows_failed_to_save_is_recomputed_in_full_next_tick(
    user: User, other_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(user, record("a", at(1)), now=at(1))
    ingest(other_user, record("b", at(1)), now=at(1))
    save = side_tables.save_completed_window

    def failing_for_alice(**arguments: Any) -> None:
        if arguments["user_id"] == user.pk:
            raise RuntimeError("the database went away for a moment")
        save(**arguments)

    monkeypatch.setattr(side_tables, "save_completed_window", failing_for_alice)
    progress = services.record_completed_windows(now=at(6, 30), since=Progress())
    assert (windows(user), windows(other_user)) == ([], [("01:00", 200)])  # bob still done

    monkeypatch.setattr(side_tables, "save_completed_window", save)
    services.record_completed_windows(now=at(6, 31), since=progress)

    assert windows(user) == [("01:00", 200)]


@pytest.mark.parametrize("seed", range(4))
def test_ticks_as_events_come_record_what_one_tick_over_everything_records(
    user: User, seed: int
) -> None:
    """Messages over a day, some late (an agent that was offline), a tick every 20 minutes:
    the windows recorded tick by tick equal those of one tick over the whole log."""
    chance = random.Random(seed)
    progress = Progress()
    sent = 0
    for step in range(1, 72):
        now = at(0) + timedelta(minutes=20 * step)
        if chance.random() < 0.6:
            late = chance.random() < 0.2
            moment = now - timedelta(minutes=chance.randrange(1, 400 if late else 20))
            sent += 1
            ingest(user, record(f"m{sent}", max(moment, at(0)), tokens=sent), now=now)
        progress = services.record_completed_windows(now=now, since=progress)
    tick_by_tick = {align: windows(user, align) for align in ("exact", "hour")}

    CompletedWindow.objects.filter(user=user).delete()
    services.record_completed_windows(now=at(0) + timedelta(minutes=20 * 71), since=Progress())

    assert {align: windows(user, align) for align in ("exact", "hour")} == tick_by_tick
    assert tick_by_tick["exact"]  # the day had finished windows
