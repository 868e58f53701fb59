"""The event log: immutable rows, positions in commit order, retention that touches only
what is old enough. Real databases (SQLite and PostgreSQL) and real Redis throughout."""

from __future__ import annotations

import functools
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, OperationalError, connection, transaction
from pytest_django.fixtures import Settings

from tests.usage.projection_dump import dump_projection
from usage import services, store
from usage.events import EventKind, UsageEvent
from usage.models import LoggedEvent
from usage.projection import projector, redis_store

NOW = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)
SONNET = "claude-sonnet-4-5-20250929"
T = TypeVar("T")


def assistant_record(
    message_id: str,
    at: datetime,
    *,
    request_id: str = "req_1",
    input_tokens: int = 100,
    output_tokens: int = 50,
    session: str = "session-1",
    cwd: str = "/home/alice/rest-api",
) -> dict[str, object]:
    """One Claude Code transcript line carrying usage, as the agent sends it."""
    return {
        "type": "assistant",
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "sessionId": session,
        "cwd": cwd,
        "requestId": request_id,
        "message": {
            "id": message_id,
            "model": SONNET,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        },
    }


def ingest(user_id: int, records: Sequence[object], *, now: datetime = NOW) -> None:
    services.ingest_records(user_id=user_id, records=records, host="laptop", now=now)


def logged(user_id: int) -> list[LoggedEvent]:
    return list(LoggedEvent.objects.filter(user_id=user_id).order_by("position"))


def without_checkpoint(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Two users' projections of the same records differ only in their log positions."""
    return {key: value for key, value in snapshot.items() if key != "cp"}


# --- immutability --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_database_refuses_to_update_a_logged_event(user: User) -> None:
    ingest(user.pk, [assistant_record("msg_1", NOW)])

    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
        LoggedEvent.objects.filter(user_id=user.pk).update(input_tokens=1)

    assert logged(user.pk)[0].input_tokens == 100


@pytest.mark.django_db
def test_the_database_refuses_to_save_a_changed_event(user: User) -> None:
    ingest(user.pk, [assistant_record("msg_1", NOW)])
    event = logged(user.pk)[0]
    event.output_tokens = 999_999

    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
        event.save()

    assert logged(user.pk)[0].output_tokens == 50


@pytest.mark.django_db
def test_deleting_a_user_deletes_its_events_and_no_one_elses(
    user: User, django_user_model: type[User]
) -> None:
    # The log has no foreign key constraint in the database (its per-row check cost as much
    # as the rest of an append): the cascade is Django's, and must still happen.
    other = django_user_model.objects.create_user("other")
    ingest(user.pk, [assistant_record("msg_1", NOW)])
    ingest(other.pk, [assistant_record("msg_1", NOW)])

    user.delete()

    assert not LoggedEvent.objects.filter(user_id=user.pk).exists()
    assert len(logged(other.pk)) == 1


# --- positions -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_positions_increase_with_every_append(user: User) -> None:
    for batch in range(3):
        ingest(user.pk, [assistant_record(f"msg_{batch}_{i}", NOW) for i in range(4)])

    positions = [event.position for event in logged(user.pk)]
    messages = [event.message_id for event in logged(user.pk)]

    assert len(positions) == 12
    assert positions == sorted(set(positions))
    assert messages == [f"msg_{batch}_{i}" for batch in range(3) for i in range(4)]


@pytest.mark.django_db
def test_appending_prepared_events_gives_their_positions_in_order(user: User) -> None:
    ingest(user.pk, [assistant_record("msg_0", NOW)])
    template = store.events_after(user.pk, 0)[0]
    fresh = [
        UsageEvent(
            kind=template.kind,
            user_id=user.pk,
            revision=0,
            record=template.record._replace(message_id=f"msg_{i}"),
            cost_nanos=template.cost_nanos,
            priced=True,
            recorded_at=NOW,
        )
        for i in range(1, 4)
    ]

    pending = store.prepare(fresh)
    with store.appending(user.pk):
        positions = store.append_prepared(pending)
    appended = store.positioned(pending, positions)

    assert [event.record.message_id for event in appended] == ["msg_1", "msg_2", "msg_3"]
    assert [event.position for event in appended] == [
        event.position for event in store.events_after(user.pk, template.position or 0)
    ]


@pytest.mark.django_db
def test_events_after_returns_only_later_events_of_that_user_oldest_first(
    user: User, other_user: User
) -> None:
    for i in range(5):
        ingest(user.pk, [assistant_record(f"mine_{i}", NOW)])
        ingest(other_user.pk, [assistant_record(f"theirs_{i}", NOW)])
    mine = logged(user.pk)

    after_second = store.events_after(user.pk, mine[1].position)
    limited = store.events_after(user.pk, 0, limit=2)

    assert [e.record.message_id for e in after_second] == ["mine_2", "mine_3", "mine_4"]
    assert [e.position for e in after_second] == [e.position for e in mine[2:]]
    assert [e.record.message_id for e in limited] == ["mine_0", "mine_1"]
    assert store.events_after(user.pk, mine[-1].position) == []
    assert store.last_position(user.pk) == mine[-1].position


@pytest.mark.django_db
def test_a_read_back_event_carries_everything_that_was_appended(user: User) -> None:
    record = assistant_record("msg_1", NOW - timedelta(minutes=3), input_tokens=7)
    record["isSidechain"] = True
    ingest(user.pk, [record])

    (event,) = store.events_after(user.pk, 0)

    assert event.user_id == user.pk
    assert event.revision == 0
    assert event.record.message_id == "msg_1"
    assert event.record.request_id == "req_1"
    assert event.record.timestamp == NOW - timedelta(minutes=3)
    assert event.record.input_tokens == 7
    assert event.record.is_sidechain is True
    assert event.record.host == "laptop"
    assert event.record.project_path == "/home/alice/rest-api"
    assert event.cost_nanos > 0
    assert event.priced is True


@pytest.mark.django_db
def test_an_event_read_back_equals_the_event_appended_field_for_field(user: User) -> None:
    record = assistant_record("msg_1", NOW - timedelta(minutes=3), input_tokens=7)
    record["isSidechain"] = True
    ingest(user.pk, [record])
    (logged,) = store.events_after(user.pk, 0)
    copy = logged._replace(
        kind=EventKind.REVISED, revision=1, cost_nanos=123, priced=False, recorded_at=NOW
    )

    with store.appending(user.pk):
        pending = store.prepare([copy])
        positions = store.append_prepared(pending)

    (appended,) = store.positioned(pending, positions)
    assert store.events_after(user.pk, logged.position or 0) == [appended]
    assert store.latest_events(user.pk, ["msg_1"]) == [appended]  # the dedupe's own query
    # and each value sits in its own column, as the ORM (and any SQL reader) sees it
    row = LoggedEvent.objects.get(position=positions[0])
    counts = (row.input_tokens, row.output_tokens, row.cache_read_tokens)
    assert (row.kind, row.revision, row.cost_nanos, row.priced) == ("usage_revised", 1, 123, False)
    assert (row.recorded_at, row.occurred_at) == (NOW, NOW - timedelta(minutes=3))
    assert counts == (7, 50, 0)
    assert (row.message_id, row.request_id, row.host) == ("msg_1", "req_1", "laptop")


def test_the_column_table_names_every_column_of_the_log_but_the_position() -> None:
    fields = {field.column for field in LoggedEvent._meta.concrete_fields}

    assert {column.name for column in store.COLUMNS} == fields - {"position"}
    assert len(store.COLUMNS) == len(fields) - 1


@pytest.mark.django_db
def test_the_column_tables_types_are_the_databases_types() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the binary COPY's types are PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, udt_name FROM information_schema.columns WHERE table_name = %s",
            [LoggedEvent._meta.db_table],
        )
        types = dict(cursor.fetchall())

    assert {column.name: column.pg_type for column in store.COLUMNS} == {
        name: udt for name, udt in types.items() if name != "position"
    }


# --- retention -----------------------------------------------------------------------------

CUTOFF = NOW - timedelta(hours=6)
RETENTION_CASES = [
    # (message id, occurred at, kept by a 6-hour retention at NOW)
    ("ten_hours_old", NOW - timedelta(hours=10), False),
    ("a_millisecond_too_old", CUTOFF - timedelta(milliseconds=1), False),
    ("exactly_at_the_horizon", CUTOFF, True),
    ("a_millisecond_young_enough", CUTOFF + timedelta(milliseconds=1), True),
    ("an_hour_old", NOW - timedelta(hours=1), True),
]


@pytest.mark.django_db(transaction=True)
def test_pruning_deletes_only_events_older_than_the_retention_horizon(
    user: User, other_user: User, settings: Settings
) -> None:
    settings.USAGE_RETENTION_HOURS = 0  # ingest the old records as if they had just arrived
    for owner in (user, other_user):
        ingest(owner.pk, [assistant_record(name, at) for name, at, _ in RETENTION_CASES])
    before = redis_store.totals(user.pk)[0]
    settings.USAGE_RETENTION_HOURS = 6

    deleted = services.prune_events(now=NOW)

    kept = [name for name, _, keep in RETENTION_CASES if keep]
    assert deleted == {user.pk: 2, other_user.pk: 2}
    for owner in (user, other_user):
        assert [event.message_id for event in logged(owner.pk)] == kept
    after = redis_store.totals(user.pk)[0]
    assert before.messages == 5
    assert after.messages == 3
    assert after.input_tokens == 3 * 100
    assert after.output_tokens == 3 * 50
    assert after.cost_nanos == before.cost_nanos * 3 // 5


@pytest.mark.django_db(transaction=True)
def test_after_pruning_the_projections_equal_a_rebuild_from_the_log(
    user: User, settings: Settings
) -> None:
    settings.USAGE_RETENTION_HOURS = 0
    records = [
        assistant_record(f"msg_{i}", NOW - timedelta(minutes=37 * i), session=f"s{i % 3}")
        for i in range(16)
    ]
    # a revision whose first copy is pruned while the larger copy stays
    records.append(assistant_record("msg_rev", CUTOFF - timedelta(seconds=5), output_tokens=1))
    records.append(assistant_record("msg_rev", CUTOFF + timedelta(seconds=5), output_tokens=9))
    ingest(user.pk, records)
    settings.USAGE_RETENTION_HOURS = 6

    services.prune_events(now=NOW)
    pruned = dump_projection(user.pk)
    projector.rebuild_user(user.pk)

    assert dump_projection(user.pk) == pruned
    assert redis_store.totals(user.pk)[0].messages == 10 + 1  # msg_0..msg_9 and msg_rev


@pytest.mark.django_db(transaction=True)
def test_a_retention_of_zero_hours_keeps_everything(user: User, settings: Settings) -> None:
    settings.USAGE_RETENTION_HOURS = 0
    ingest(user.pk, [assistant_record(name, at) for name, at, _ in RETENTION_CASES])
    before = dump_projection(user.pk)

    deleted = services.prune_events(now=NOW + timedelta(days=365))

    assert deleted == {}
    assert len(logged(user.pk)) == len(RETENTION_CASES)
    assert dump_projection(user.pk) == before


# --- concurrency ---------------------------------------------------------------------------


def run_concurrently(works: Sequence[Callable[[], T]]) -> list[T]:
    """Start every ``work`` at the same moment on its own thread (and database connection);
    return their results in order, or re-raise the first failure in the test's thread."""
    results: dict[int, T] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(works))

    def run(index: int, work: Callable[[], T]) -> None:
        try:
            start.wait()
            results[index] = work()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(works)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [results[index] for index in range(len(works))]


def waiting_for_locks(work: Callable[[], T]) -> T:
    """Run ``work``, retrying while SQLite's in-memory test database reports a table lock.

    The test database is a shared-cache in-memory one, whose locks fail at once with
    "database table is locked" instead of waiting on ``busy_timeout`` as the file database
    of a real install does. Retrying the whole (rolled back) transaction is that wait."""
    while True:
        try:
            return work()
        except OperationalError as error:
            if connection.vendor != "sqlite" or "locked" not in str(error):
                raise
        time.sleep(0.001)


@pytest.mark.django_db(transaction=True)
def test_a_reader_following_positions_never_misses_a_row_while_writers_race(
    user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit-order proof. Every writer sleeps after drawing its positions and before
    committing, so without serialised appends a writer that drew position 8 regularly commits
    before one that drew 7; the reader, having moved past 8, would never see 7.

    Checked by hand: with the user's advisory lock in ``usage.store.appending`` commented
    out this test fails (the reader misses rows); with it, it passes."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "SQLite allows one writer at a time (IMMEDIATE transactions), so commits cannot "
            "interleave; the race this proves closed exists only on PostgreSQL"
        )
    real_append = store.append_prepared  # what the ingest calls

    def append_then_dawdle(pending: Sequence[store.Pending]) -> list[int]:
        positions = real_append(pending)
        time.sleep(random.uniform(0, 0.02))  # positions drawn, transaction not yet committed
        return positions

    monkeypatch.setattr(store, "append_prepared", append_then_dawdle)
    writers, batches = 4, 12
    seen: list[int] = []
    writing = threading.Event()
    writing.set()

    def follow() -> None:
        last_seen = 0
        try:
            while True:
                done = not writing.is_set()  # read before the query: one more pass after
                for event in store.events_after(user.pk, last_seen):
                    assert event.position is not None
                    seen.append(event.position)
                    last_seen = event.position
                if done:
                    return
        finally:
            connection.close()

    def write(writer: int) -> None:
        for batch in range(batches):
            records = [assistant_record(f"w{writer}_b{batch}_{i}", NOW) for i in range(3)]
            ingest(user.pk, records)

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        run_concurrently([functools.partial(write, writer) for writer in range(writers)])
    finally:
        writing.clear()
        reader.join()

    every_row = [event.position for event in logged(user.pk)]
    assert len(every_row) == writers * batches * 3
    assert seen == every_row


def holding_the_append_lock(user_id: int) -> tuple[threading.Thread, threading.Event]:
    """A thread inside ``appending(user_id)`` with a row drawn and not committed, until the
    returned event is set."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with store.appending(user_id):
                template = store.events_after(user_id, 0)[0]
                fresh = template._replace(record=template.record._replace(message_id="held"))
                store.append_prepared(store.prepare([fresh]))
                holding.set()
                release.wait(60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(60)
    return holder, release


def with_lock_timeout(work: Callable[[], T]) -> T:
    """``work`` in a transaction that gives up on any lock it waits a second for."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '1s'")
        return work()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_one_users_append_does_not_wait_for_another_users(user: User, other_user: User) -> None:
    ingest(user.pk, [assistant_record("first", NOW)])
    holder, release = holding_the_append_lock(user.pk)
    try:
        with_lock_timeout(lambda: ingest(other_user.pk, [assistant_record("other", NOW)]))
    finally:
        release.set()
        holder.join()

    assert [event.message_id for event in logged(other_user.pk)] == ["other"]
    assert [event.message_id for event in logged(user.pk)] == ["first", "held"]


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_users_second_append_waits_for_the_first(user: User) -> None:
    ingest(user.pk, [assistant_record("first", NOW)])
    holder, release = holding_the_append_lock(user.pk)
    try:
        with pytest.raises(services.LogUnavailable):
            with_lock_timeout(lambda: ingest(user.pk, [assistant_record("second", NOW)]))
    finally:
        release.set()
        holder.join()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_log_head_waits_for_every_append_in_flight(user: User, other_user: User) -> None:
    # A global cursor (completed windows) moved to the head must not pass an id that is
    # drawn and not yet committed: it would skip that event for good.
    ingest(user.pk, [assistant_record("first", NOW)])
    holder, release = holding_the_append_lock(user.pk)
    try:
        ingest(other_user.pk, [assistant_record("later", NOW)])  # a higher id, committed
        with pytest.raises(OperationalError):
            with_lock_timeout(store.head_position)
    finally:
        release.set()
        holder.join()

    assert store.head_position() == max(event.position for event in LoggedEvent.objects.all())


def _messy_batch() -> list[dict[str, object]]:
    """Duplicated lines, a partial copy followed by the full one, a sidechain replay and a
    line without a request id: everything deduplication must get right."""
    batch = []
    for i in range(6):
        at = NOW - timedelta(minutes=10 * i)
        batch.append(assistant_record(f"msg_{i}", at, output_tokens=1))  # partial copy
        batch.append(assistant_record(f"msg_{i}", at, output_tokens=40 + i))
        batch.append(assistant_record(f"msg_{i}", at, output_tokens=40 + i))  # duplicate
    sidechain = assistant_record("msg_0", NOW, request_id="req_side")
    sidechain["isSidechain"] = True
    batch.insert(0, sidechain)
    batch.append(assistant_record("msg_no_request", NOW, request_id=""))
    return batch


@pytest.mark.django_db(transaction=True)
def test_the_same_batch_ingested_by_several_threads_at_once_counts_once(
    user: User, other_user: User
) -> None:
    batch = _messy_batch()
    single = services.ingest_records(user_id=other_user.pk, records=batch, host="h", now=NOW)

    def ingest_the_batch() -> services.IngestResult:
        return waiting_for_locks(
            lambda: services.ingest_records(user_id=user.pk, records=batch, host="h", now=NOW)
        )

    results = run_concurrently([ingest_the_batch] * 4)

    accepted = sorted(result.accepted for result in results)
    assert accepted == [0, 0, 0, single.accepted]
    assert len(logged(user.pk)) == len(logged(other_user.pk))
    assert redis_store.totals(user.pk) == redis_store.totals(other_user.pk)
    assert without_checkpoint(dump_projection(user.pk)) == without_checkpoint(
        dump_projection(other_user.pk)
    )
    concurrent = dump_projection(user.pk)
    projector.rebuild_user(user.pk)
    assert dump_projection(user.pk) == concurrent


# --- query plans on PostgreSQL -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_young_log_gets_statistics_so_the_dedupe_probe_uses_the_unique_index(
    user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without statistics PostgreSQL probed each id through ``usage_event_user_position``,
    reading all of the user's rows per id. The first appends past ``YOUNG_LOG_ROWS`` make sure
    the log has statistics; the probe then goes through the unique index."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner and statistics")
    statistics = store._Statistics()
    monkeypatch.setattr(store, "_statistics", statistics)
    with connection.cursor() as cursor:  # forget any statistics an earlier test left behind
        try:
            cursor.execute("DELETE FROM pg_statistic WHERE starelid = 'usage_event'::regclass")
        except DatabaseError as error:  # pg_statistic is a superuser's table
            pytest.skip(f"cannot reset the log's statistics as this database user: {error}")
    start = NOW - timedelta(hours=2)
    records = [
        assistant_record(f"msg_{i:05d}", start + timedelta(seconds=i))
        for i in range(store.YOUNG_LOG_ROWS + 200)
    ]
    for offset in range(0, len(records), 400):
        ingest(user.pk, records[offset : offset + 400])

    assert statistics.known
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_distinct FROM pg_stats WHERE tablename = 'usage_event' "
            "AND attname = 'user_id'"
        )
        assert cursor.fetchall() == [(1.0,)]  # one user: every row is theirs
        ids = [f"msg_{i:05d}" for i in range(0, 1000, 3)]
        cursor.execute("EXPLAIN " + store.dedupe_probe_sql(), [json.dumps(ids), user.pk])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "usage_event_one_revision" in plan, plan


@pytest.mark.django_db(transaction=True)
def test_a_new_users_first_events_refresh_the_statistics_so_their_probe_uses_the_unique_index(
    user: User, other_user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statistics made while the log held one user's rows say any other user has none, and
    the probe of a newcomer's second batch read all of their rows per id (bench/abuse.py:
    10,000 ids against 10,000 rows, 28 s and more inside the append lock, every other
    user's ingest waiting). A user's first events refresh the statistics after the commit."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner and statistics")
    statistics = store._Statistics()
    monkeypatch.setattr(store, "_statistics", statistics)
    start = NOW - timedelta(hours=2)
    for who in (user, other_user):
        records = [
            assistant_record(f"msg_{who.pk}_{i:05d}", start + timedelta(seconds=i))
            for i in range(store.YOUNG_LOG_ROWS + 200)
        ]
        ingest(who.pk, records[:1000])
        ingest(who.pk, records[1000:])

    with connection.cursor() as cursor:
        ids = [f"msg_{other_user.pk}_{i:05d}" for i in range(0, 1000, 3)]
        cursor.execute("EXPLAIN " + store.dedupe_probe_sql(), [json.dumps(ids), other_user.pk])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "usage_event_one_revision" in plan, plan


@pytest.mark.django_db(transaction=True)
def test_an_opentelemetry_copys_probe_by_request_id_uses_its_partial_index(user: User) -> None:
    """An OpenTelemetry copy finds the transcript's copy of its request by request id (the
    message ids differ): one probe per id through (user, request_id) where a request id is
    set, never a walk of the user's rows."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's planner and statistics")
    start = NOW - timedelta(hours=2)
    records = [
        assistant_record(f"msg_{i:05d}", start + timedelta(seconds=i), request_id=f"req_{i:05d}")
        for i in range(store.YOUNG_LOG_ROWS + 200)
    ]
    for offset in range(0, len(records), 400):
        ingest(user.pk, records[offset : offset + 400])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE usage_event")
        ids = [f"req_{i:05d}" for i in range(0, 1000, 3)]
        cursor.execute(
            "EXPLAIN " + store.dedupe_probe_sql("request_id"), [json.dumps(ids), user.pk]
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "usage_event_user_request" in plan, plan
    found = store.latest_events(user.pk, [], ["req_00007", "req_missing"])
    assert [event.record.message_id for event in found] == ["msg_00007"]
