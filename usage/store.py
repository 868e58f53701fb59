"""The event log: append, read after a position, prune. No update; no other delete.

Appends are serialised. An auto-increment id alone is not a safe cursor: a transaction that
took id 7 can commit after one that took id 8, and a reader that saw 8 would skip 7 forever.
Holding an exclusive lock on the table from before the ids are drawn until commit makes id
order equal commit order. On SQLite the IMMEDIATE transaction's database write lock does the
same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from django.db import connection, transaction

from usage.dedupe import Entry
from usage.events import EventKind, UsageEvent, UsageRecord
from usage.limits import LimitReading, OfficialLimits
from usage.models import CompletedWindow, LoggedEvent, OfficialLimit

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

# Each column the ingest writes, with its PostgreSQL type for the binary COPY (as the
# migrations create them; a mismatch fails every PostgreSQL ingest test at once).
_INSERT_TYPES = (
    ("user_id", "int4"),
    ("kind", "varchar"),
    ("schema_version", "int2"),
    ("revision", "int4"),
    ("message_id", "varchar"),
    ("request_id", "varchar"),
    ("occurred_at", "timestamptz"),
    ("recorded_at", "timestamptz"),
    ("model", "varchar"),
    ("input_tokens", "int8"),
    ("output_tokens", "int8"),
    ("cache_creation_5m_tokens", "int8"),
    ("cache_creation_1h_tokens", "int8"),
    ("cache_read_tokens", "int8"),
    ("cost_nanos", "int8"),
    ("priced", "bool"),
    ("session_id", "varchar"),
    ("project_path", "varchar"),
    ("is_sidechain", "bool"),
    ("host", "varchar"),
)
_INSERT_COLUMNS = tuple(column for column, _ in _INSERT_TYPES)
_READ_FIELDS = ("position", *_INSERT_COLUMNS)


@contextmanager
def appending() -> Iterator[None]:
    """A transaction holding the log's append lock until it commits."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # EXCLUSIVE blocks other writers but not plain SELECTs.
                cursor.execute(f"LOCK TABLE {LoggedEvent._meta.db_table} IN EXCLUSIVE MODE")
        yield


def latest_entries(user_id: int, message_ids: Iterable[str]) -> list[Entry]:
    """The newest revision of every logged (message id, request id) among ``message_ids``."""
    latest: dict[tuple[str, str], UsageEvent] = {}
    ids = sorted(set(message_ids))
    for event in _logged_with_message_ids(user_id, ids):
        key = (event.record.message_id, event.record.request_id)
        if key not in latest or latest[key].revision < event.revision:
            latest[key] = event
    return [_entry(event) for event in latest.values()]


def _logged_with_message_ids(user_id: int, ids: list[str]) -> list[UsageEvent]:
    if connection.vendor == "postgresql":
        return _logged_with_message_ids_postgresql(user_id, ids)
    # A plain IN list, in chunks under SQLite's parameter limit.
    found: list[UsageEvent] = []
    for start in range(0, len(ids), 500):
        rows = LoggedEvent.objects.filter(user_id=user_id, message_id__in=ids[start : start + 500])
        found += _events(rows.values_list(*_READ_FIELDS))
    return found


def _logged_with_message_ids_postgresql(user_id: int, ids: list[str]) -> list[UsageEvent]:
    """One index probe per id, forced.

    Before autovacuum first analyses the table (a minute or more after it fills), the
    planner guesses a user has a few dozen rows and answers ``message_id IN (...)``, or a
    plain join of the ids, with a scan of all the user's rows: 13-56 ms per 1,000 ids at
    100,000 rows, growing with the log. The LATERAL subquery with ``OFFSET 0`` cannot be
    flattened into such a join, so each id is one index lookup: 3 ms for 1,000 ids on the
    same table, present or not. Which index it probes is still the statistics' choice; on
    a table of a few thousand rows without any it took the wrong one (see ``_Statistics``)."""
    if not ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(dedupe_probe_sql(), [orjson.dumps(ids).decode(), user_id])
        return _events(cursor.fetchall())


@lru_cache(maxsize=1)
def dedupe_probe_sql() -> str:
    """Parameters: the message ids as a JSON array (one string parameter: quoting a list of
    1,000 ids as an SQL array literal took psycopg a regex search per id), the user id."""
    columns = ", ".join(f"e.{column}" for column in _READ_FIELDS)
    return (
        f"SELECT {columns} FROM jsonb_array_elements_text(%s::jsonb) AS wanted(message_id) "
        f"CROSS JOIN LATERAL (SELECT * FROM {_TABLE} WHERE user_id = %s "
        "AND message_id = wanted.message_id OFFSET 0) AS e"
    )


class Pending(NamedTuple):
    """An event ready to append: the event and its row, built before the append lock."""

    event: UsageEvent
    row: tuple[object, ...]


def prepare(events: Iterable[UsageEvent]) -> list[Pending]:
    """The rows of ``events``. Needs no lock: building them outside it keeps the section
    that serialises every ingest short."""
    db_time = connection.ops.adapt_datetimefield_value  # once: ``connection`` is a proxy
    return [Pending(event, _values(event, db_time)) for event in events]


def append_prepared(pending: Sequence[Pending]) -> list[int]:
    """Append the prepared events (inside ``appending()``); returns their positions, in order.

    Not the ORM's bulk_create, which spent most of an ingest preparing values one field at
    a time: PostgreSQL takes a binary COPY, SQLite an executemany. Under the append lock the
    new rows are exactly those after the previous maximum position, in insertion order."""
    if not pending:
        return []
    rows = [item.row for item in pending]
    if connection.vendor == "postgresql":
        positions = _append_postgresql(rows)
    else:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COALESCE(MAX(position), 0) FROM {_TABLE}")
            before = cursor.fetchone()[0]
            cursor.executemany(_insert_sql(), rows)  # type: ignore[arg-type]
            cursor.execute(
                f"SELECT position FROM {_TABLE} WHERE position > %s ORDER BY position", [before]
            )
            positions = [row[0] for row in cursor.fetchall()]
    if len(positions) != len(rows):
        raise RuntimeError(f"appended {len(rows)} events, found {len(positions)} new positions")
    return positions


def positioned(pending: Sequence[Pending], positions: Sequence[int]) -> list[UsageEvent]:
    """The events as the log stored them, with their positions."""
    pairs = zip(pending, positions, strict=True)
    return [item.event.at_position(position) for item, position in pairs]


_TABLE = LoggedEvent._meta.db_table


def _append_postgresql(rows: list[tuple[object, ...]]) -> list[int]:
    """Binary COPY on Django's connection (same transaction): the fastest way into
    PostgreSQL. The binary format spares psycopg the text formatting of every value: 12.6
    against 7.5 ms of worker CPU per 1,000-record insert (BENCHMARKS.md, section 1). Under
    the append lock the new positions are exactly those above the previous maximum
    (sequence values only grow)."""
    import psycopg

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(f"SELECT COALESCE(MAX(position), 0) FROM {_TABLE}")
        before = cursor.fetchone()[0]  # type: ignore[index]
        columns = ", ".join(_INSERT_COLUMNS)
        with cursor.copy(f"COPY {_TABLE} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([pg_type for _, pg_type in _INSERT_TYPES])
            for row in rows:
                copy.write_row(row)
        # The LIMIT makes the planner walk the primary key from ``before``; without it, on
        # a table without statistics, it chose a sequential scan of the whole log.
        cursor.execute(
            f"SELECT position FROM {_TABLE} WHERE position > %s ORDER BY position LIMIT %s",
            [before, len(rows)],
        )
        positions = [row[0] for row in cursor.fetchall()]
        if not _statistics.known and positions and positions[-1] >= YOUNG_LOG_ROWS:
            _statistics.check(cursor)
        return positions


# A new log is analysed once it holds this many rows (positions, to be exact).
YOUNG_LOG_ROWS = 1000


class _Statistics:
    """Makes sure PostgreSQL has statistics for the log once it has a few rows.

    A new install's first backfill is a burst into an empty table, and autovacuum analyses
    it a minute or more later. Until then the planner guesses that a user has a few dozen
    rows and probes the dedupe query through ``usage_event_user_position``, reading every
    row of the user for each id: 68 ms per 1,000-record batch at 2,000 rows, 200 ms at
    4,000, quadratic. One ANALYZE (a few ms: it samples at most 30,000 rows) settles it for
    good; autovacuum keeps the statistics current afterwards. Checked once per process
    until the statistics exist; the ANALYZE runs after the commit, outside the append lock.
    """

    def __init__(self) -> None:
        self.known = False

    def check(self, cursor: psycopg.Cursor[Any]) -> None:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = current_schema() "
            "AND tablename = %s AND attname = 'user_id')",
            [_TABLE],
        )
        row = cursor.fetchone()
        if row is not None and row[0]:
            self.known = True
        else:
            transaction.on_commit(self._analyze)

    def _analyze(self) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {_TABLE}")
        except Exception:  # an optimisation only: never fail an ingest for it
            log.warning("ANALYZE %s failed", _TABLE, exc_info=True)
            return
        self.known = True


_statistics = _Statistics()


@lru_cache(maxsize=1)
def _insert_sql() -> str:
    placeholders = ", ".join(["%s"] * len(_INSERT_COLUMNS))
    return f"INSERT INTO {_TABLE} ({', '.join(_INSERT_COLUMNS)}) VALUES ({placeholders})"


def _values(event: UsageEvent, db_time: Callable[[datetime], object]) -> tuple[object, ...]:
    record = event.record
    return (
        event.user_id,
        event.kind.value,
        event.schema_version,
        event.revision,
        record.message_id,
        record.request_id,
        db_time(record.timestamp),
        db_time(event.recorded_at),
        record.model,
        record.input_tokens,
        record.output_tokens,
        record.cache_creation_5m_tokens,
        record.cache_creation_1h_tokens,
        record.cache_read_tokens,
        event.cost_nanos,
        event.priced,
        record.session_id,
        record.project_path,
        record.is_sidechain,
        record.host,
    )


def events_after(user_id: int, position: int, *, limit: int = 5000) -> list[UsageEvent]:
    """The user's events after ``position``, oldest first."""
    rows = LoggedEvent.objects.filter(user_id=user_id, position__gt=position).order_by("position")
    return _events(rows[:limit].values_list(*_READ_FIELDS))


def previous_revisions(
    user_id: int, events: Sequence[UsageEvent]
) -> dict[tuple[str, str, int], UsageEvent]:
    """The revision before each revision/retraction in ``events``, keyed by
    (message id, request id, revision). Missing keys were pruned by retention."""
    wanted = {
        (e.record.message_id, e.record.request_id, e.revision - 1) for e in events if e.revision
    }
    if not wanted:
        return {}
    message_ids = {message_id for message_id, _, _ in wanted}
    rows = LoggedEvent.objects.filter(user_id=user_id, message_id__in=message_ids)
    found = {}
    for event in _events(rows.values_list(*_READ_FIELDS)):
        key = (event.record.message_id, event.record.request_id, event.revision)
        if key in wanted:
            found[key] = event
    return found


def last_position(user_id: int) -> int:
    # Plain SQL: once per ingest, and the ORM took longer to build it than the database to
    # answer it (a backward walk of ``usage_event_user_position``).
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT position FROM {_TABLE} WHERE user_id = %s ORDER BY position DESC LIMIT 1",
            [user_id],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def user_ids_with_events() -> list[int]:
    return list(LoggedEvent.objects.values_list("user_id", flat=True).distinct().order_by())


def delete_older_than(cutoff: datetime) -> dict[int, int]:
    """Retention: delete events that happened before ``cutoff``. Returns deleted counts by
    user. Takes the append lock so that no reader sees a half-pruned log."""
    with appending():
        doomed = LoggedEvent.objects.filter(occurred_at__lt=cutoff)
        counts: dict[int, int] = {}
        for user_id in doomed.values_list("user_id", flat=True).distinct().order_by():
            counts[user_id] = doomed.filter(user_id=user_id).count()
        if counts:
            doomed.delete()
    return counts


def events_between(user_id: int, start: datetime, end: datetime) -> list[UsageEvent]:
    rows = LoggedEvent.objects.filter(
        user_id=user_id, occurred_at__gte=start, occurred_at__lte=end
    ).order_by("position")
    return _events(rows.values_list(*_READ_FIELDS))


def save_completed_window(
    *, user_id: int, align: str, start: datetime, end: datetime, totals: dict[str, int]
) -> None:
    CompletedWindow.objects.update_or_create(
        user_id=user_id, align=align, start=start, defaults={"end": end, **totals}
    )


def completed_window_totals(user_id: int, align: str, since: datetime) -> list[int]:
    rows = CompletedWindow.objects.filter(user_id=user_id, align=align, start__gte=since)
    return list(rows.values_list("input_output_tokens", flat=True))


def delete_completed_windows_before(cutoff: datetime) -> int:
    deleted, _ = CompletedWindow.objects.filter(start__lt=cutoff).delete()
    return deleted


def _events(rows: Iterable[tuple[object, ...]]) -> list[UsageEvent]:
    return [_event(row) for row in rows]


def _event(row: tuple) -> UsageEvent:  # type: ignore[type-arg]
    (position, user_id, kind, schema_version, revision, message_id, request_id, occurred_at,
     recorded_at, model, input_tokens, output_tokens, cache_5m, cache_1h, cache_read,
     cost_nanos, priced, session_id, project_path, is_sidechain, host) = row  # fmt: skip
    record = UsageRecord(
        message_id=message_id,
        request_id=request_id,
        timestamp=occurred_at,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_creation_5m_tokens=cache_5m,
        cache_creation_1h_tokens=cache_1h,
        cache_read_tokens=cache_read,
        session_id=session_id,
        project_path=project_path,
        is_sidechain=is_sidechain,
        host=host,
    )
    return UsageEvent(
        kind=EventKind(kind),
        user_id=user_id,
        revision=revision,
        record=record,
        cost_nanos=cost_nanos,
        priced=priced,
        recorded_at=recorded_at,
        position=position,
        schema_version=schema_version,
    )


def _entry(event: UsageEvent) -> Entry:
    return Entry(record=event.record, revision=event.revision, counted=event.counted)


def save_official_limits(user_id: int, limits: OfficialLimits) -> bool:
    """Keep the newest reading; an older one arriving late is ignored. True when saved."""
    with transaction.atomic():
        current = OfficialLimit.objects.select_for_update().filter(user_id=user_id).first()
        if current is not None and current.observed_at > limits.observed_at:
            return False
        five, seven = limits.five_hour, limits.seven_day
        OfficialLimit.objects.update_or_create(
            user_id=user_id,
            defaults={
                "five_hour_used_percentage": five.used_percentage if five else None,
                "five_hour_resets_at": five.resets_at if five else None,
                "seven_day_used_percentage": seven.used_percentage if seven else None,
                "seven_day_resets_at": seven.resets_at if seven else None,
                "observed_at": limits.observed_at,
                "host": limits.host,
            },
        )
    return True


def official_limits(user_id: int) -> OfficialLimits | None:
    row = OfficialLimit.objects.filter(user_id=user_id).first()
    if row is None:
        return None
    return OfficialLimits(
        five_hour=_reading(row.five_hour_used_percentage, row.five_hour_resets_at),
        seven_day=_reading(row.seven_day_used_percentage, row.seven_day_resets_at),
        observed_at=row.observed_at,
        host=row.host,
    )


def _reading(used: float | None, resets_at: datetime | None) -> LimitReading | None:
    if used is None or resets_at is None:
        return None
    return LimitReading(used_percentage=used, resets_at=resets_at)
