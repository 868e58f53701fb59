"""Retention: old events leave the log and the projections together, without a rebuild.

Every test ends where the headline test of the design does: the projection retention left
equals one rebuilt from the pruned log. Real databases and real Redis throughout; the only
clock is the ``now`` each prune is given."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from pytest_django.fixtures import Settings

from tests.usage.projection_dump import Dump, dump_projection
from tests.usage.test_store import CUTOFF, NOW, assistant_record, ingest, logged
from usage import services, store
from usage.projection import projector, redis_store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def keep_everything_while_ingesting(settings: Settings) -> None:
    """Old records are ingested as if they had just arrived; each test then prunes with a
    six-hour horizon at ``NOW`` (``CUTOFF``)."""
    settings.USAGE_RETENTION_HOURS = 0


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The users whose projection anything dropped from the first ``prune`` on (a user's
    first ingest builds an empty projection: not retention's doing). The real drop runs."""
    dropped: list[int] = []
    real = redis_store.drop_user

    def drop_user(user_id: int, *, earlier_layouts: bool = False) -> None:
        if _pruning.is_set():
            dropped.append(user_id)
        real(user_id, earlier_layouts=earlier_layouts)

    monkeypatch.setattr(redis_store, "drop_user", drop_user)
    _pruning.clear()
    return dropped


_pruning = threading.Event()


def prune(settings: Settings, *, now: datetime = NOW) -> dict[int, int]:
    _pruning.set()
    settings.USAGE_RETENTION_HOURS = 6
    return services.prune_events(now=now)


def figures(user_id: int) -> Dump:
    """The projection but its checkpoint: retention keeps the position it stood at (named by
    an event still in the log), a rebuild the user's last event's."""
    assert projector.trusted(user_id) is not None
    return {key: value for key, value in dump_projection(user_id).items() if key != "cp"}


def as_rebuilt(user_id: int) -> Dump:
    projector.rebuild_user(user_id)
    return figures(user_id)


def old_and_young(count: int, *, sessions: int = 3) -> list[dict[str, object]]:
    """``count`` records an hour apart ending at NOW, over ``sessions`` sessions, two
    projects and two models' worth of sizes."""
    return [
        assistant_record(
            f"msg_{i}",
            NOW - timedelta(minutes=61 * i),
            session=f"s{i % sessions}",
            cwd=f"/home/alice/{'api' if i % 2 else 'web'}",
            input_tokens=100 + i,
            output_tokens=10 * i,
        )
        for i in range(count)
    ]


def test_pruning_takes_old_events_out_of_the_projection_without_rebuilding_it(
    user: User, settings: Settings, rebuilds: list[int]
) -> None:
    ingest(user.pk, old_and_young(12))
    before = redis_store.totals(user.pk)[0]

    deleted = prune(settings)

    assert deleted == {user.pk: 6}  # msg_6 .. msg_11 are older than six hours
    assert rebuilds == []
    after = redis_store.totals(user.pk)[0]
    assert after.messages == 6
    assert after.input_tokens == before.input_tokens - sum(100 + i for i in range(6, 12))
    assert figures(user.pk) == as_rebuilt(user.pk)


def test_a_session_whose_messages_all_expired_leaves_no_trace(
    user: User, settings: Settings
) -> None:
    records = old_and_young(4, sessions=1)
    records.append(assistant_record("gone", NOW - timedelta(hours=9), session="old-session"))
    ingest(user.pk, records)

    prune(settings)

    pruned = figures(user.pk)
    projects = redis_store.projects(user.pk)
    assert sorted(project.path for project in projects) == ["/home/alice/api", "/home/alice/web"]
    assert pruned == as_rebuilt(user.pk)


def test_a_user_whose_every_event_expired_has_an_empty_projection_that_still_grows(
    user: User, settings: Settings, rebuilds: list[int]
) -> None:
    ingest(user.pk, [assistant_record("old", CUTOFF - timedelta(hours=1))])

    prune(settings)

    assert logged(user.pk) == []
    assert rebuilds == []
    assert figures(user.pk) == {}
    ingest(user.pk, [assistant_record("new", NOW)])
    assert redis_store.totals(user.pk)[0].messages == 1
    assert figures(user.pk) == as_rebuilt(user.pk)


def test_a_pruned_first_copy_whose_revision_stays_is_taken_back_once(
    user: User, settings: Settings
) -> None:
    ingest(user.pk, [assistant_record("rev", CUTOFF - timedelta(seconds=5), output_tokens=1)])
    ingest(user.pk, [assistant_record("rev", CUTOFF + timedelta(seconds=5), output_tokens=9)])
    ingest(user.pk, [assistant_record("old", CUTOFF - timedelta(minutes=3))])

    prune(settings)

    totals = redis_store.totals(user.pk)[0]
    assert (totals.messages, totals.output_tokens) == (1, 9)
    assert figures(user.pk) == as_rebuilt(user.pk)


def test_a_revision_the_projection_has_not_applied_yet_still_counts_once(
    user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first copy is old and projected; the process that logged its revision died before
    # projecting it, so the projection still counts the first copy when retention runs.
    ingest(user.pk, [assistant_record("rev", CUTOFF - timedelta(seconds=5), output_tokens=1)])
    with monkeypatch.context() as crashed:
        crashed.setattr(projector, "after_commit", lambda *args, **kwargs: None)
        ingest(user.pk, [assistant_record("rev", CUTOFF + timedelta(seconds=5), output_tokens=9)])

    prune(settings)
    projector.catch_up(user.pk)

    totals = redis_store.totals(user.pk)[0]
    assert (totals.messages, totals.output_tokens) == (1, 9)
    assert figures(user.pk) == as_rebuilt(user.pk)


def test_an_old_event_the_projection_has_not_applied_is_kept_until_it_is(
    user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(user.pk, [assistant_record("projected", CUTOFF - timedelta(minutes=2))])
    with monkeypatch.context() as crashed:
        crashed.setattr(projector, "after_commit", lambda *args, **kwargs: None)
        ingest(user.pk, [assistant_record("not_yet", CUTOFF - timedelta(minutes=1))])

    assert prune(settings) == {user.pk: 1}
    assert [event.message_id for event in logged(user.pk)] == ["not_yet"]

    projector.catch_up(user.pk)
    assert prune(settings) == {user.pk: 1}
    assert logged(user.pk) == []
    assert redis_store.totals(user.pk)[0].messages == 0
    assert figures(user.pk) == as_rebuilt(user.pk)


def test_readers_during_a_long_prune_never_see_less_than_what_stays(
    user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 600 sessions: the prune takes several parts (projector.APPLY_PART_OWNERS).
    records = [
        assistant_record(f"old_{i}", CUTOFF - timedelta(seconds=i + 1), session=f"s{i}")
        for i in range(600)
    ]
    records += [assistant_record(f"young_{i}", NOW - timedelta(minutes=i)) for i in range(5)]
    ingest(user.pk, records)
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(redis_store.totals(user.pk)[0].messages)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        prune(settings)
    finally:
        done.set()
        reader.join()

    assert seen
    assert min(seen) >= 5
    assert redis_store.totals(user.pk)[0].messages == 5
    assert figures(user.pk) == as_rebuilt(user.pk)


def test_a_projection_reset_while_a_part_is_pruned_is_rebuilt_from_the_pruned_log(
    user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Just after the part left the log, Redis lost the user's keys (the lock too); a reader
    # rebuilt the projection from the pruned log and an ingest moved it past where it
    # stood. Taking the part back from that projection would count it out twice.
    ingest(user.pk, old_and_young(10))
    real_delete = store.delete_events

    def delete_then_lose_redis(*args: object, **kwargs: object) -> object:
        deleted = real_delete(*args, **kwargs)  # type: ignore[arg-type]
        redis_store.drop_user(user.pk)
        redis_store.reset_checkpoint(user.pk, projector.binding())
        projector.catch_up(user.pk)
        ingest(user.pk, [assistant_record("meanwhile", NOW)])
        return deleted

    monkeypatch.setattr(store, "delete_events", delete_then_lose_redis)

    prune(settings)

    projector.ensure_current(user.pk)
    assert redis_store.totals(user.pk)[0].messages == 6 + 1
    assert figures(user.pk) == as_rebuilt(user.pk)


def test_retention_racing_ingest_deletes_nothing_young_and_leaves_the_projection_exact(
    user: User, other_user: User, settings: Settings
) -> None:
    # Agents keep sending records around the horizon while the worker prunes, the horizon
    # moving a minute per prune; every record younger than the last horizon stays.
    batches = 12
    sent: dict[int, list[tuple[str, object]]] = {user.pk: [], other_user.pk: []}
    errors: list[BaseException] = []

    def agent(owner: User) -> None:
        try:
            for batch in range(batches):
                records = []
                for i in range(20):
                    at = CUTOFF + timedelta(minutes=batch + i - 10, seconds=owner.pk)
                    name = f"m{batch}_{i}"
                    records.append(assistant_record(name, at, session=f"s{i % 4}"))
                    sent[owner.pk].append((name, at))
                ingest(owner.pk, records)
        except BaseException as error:  # noqa: BLE001 - reported in the test's thread
            errors.append(error)
        finally:
            connection.close()

    settings.USAGE_RETENTION_HOURS = 6
    agents = [threading.Thread(target=agent, args=(owner,)) for owner in (user, other_user)]
    for thread in agents:
        thread.start()
    minute = 0
    while any(thread.is_alive() for thread in agents):
        services.prune_events(now=NOW + timedelta(minutes=minute))
        minute += 1
    for thread in agents:
        thread.join()
    last = NOW + timedelta(minutes=minute)
    services.prune_events(now=last)

    assert errors == []
    horizon = CUTOFF + timedelta(minutes=minute)
    for owner in (user, other_user):
        kept = {event.message_id for event in logged(owner.pk)}
        young = {name for name, at in sent[owner.pk] if at >= horizon}  # type: ignore[operator]
        assert young <= kept
        projector.catch_up(owner.pk)
        assert figures(owner.pk) == as_rebuilt(owner.pk)


def test_a_backlog_of_expired_events_is_read_once_then_pruned_part_by_part(
    user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retention turned on over a log with a backlog: three parts of 1,000, and the expired
    # positions read once for all of them (then once more, to find none are left).
    old = [assistant_record(f"old_{i}", CUTOFF - timedelta(seconds=i + 1)) for i in range(2500)]
    ingest(user.pk, [*old, assistant_record("young", NOW)])
    reads: list[int] = []
    real = store.expired_positions

    def counted(*args: Any, **kwargs: Any) -> list[int]:
        found = real(*args, **kwargs)
        reads.append(len(found))
        return found

    monkeypatch.setattr(store, "expired_positions", counted)

    assert prune(settings) == {user.pk: 2500}
    assert reads == [2500, 0]
    assert [event.message_id for event in logged(user.pk)] == ["young"]
    assert figures(user.pk) == as_rebuilt(user.pk)
