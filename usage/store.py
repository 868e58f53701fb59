"""The event log: append, read after a position, retention delete. Nothing else writes it.

A user's appends are serialised. An auto-increment id alone is not a safe cursor: a
transaction that took id 7 can commit after one that took id 8, and a reader that saw 8
would skip 7 forever. Every reader follows one user's positions (a projection catching up,
a dashboard's prompt), so it is enough that one user's ids follow their commits: on
PostgreSQL a transaction-level advisory lock per user, taken before any id is drawn and held
until commit, does that, and different users' batches (and retention's deletes) run side by
side. The one reader of every user's positions at once (``head_position``) waits for the
appends in flight instead. On SQLite the IMMEDIATE transaction's database write lock
serialises every append. Database triggers refuse UPDATE; the only DELETE is retention's.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from django.db import DataError, connection, transaction
from django.db.models import Min

from usage.dedupe import Entry
from usage.events import EventKind, UsageEvent, UsageRecord, fingerprint, newest_revisions
from usage.models import LoggedEvent, LogIdentity

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)


class Column(NamedTuple):
    name: str  # in the usage_event table
    pg_type: str  # for the binary COPY, as the migrations create it
    source: str  # the UsageEvent attribute it holds (dotted for the record's)


# Every column but the position, once. The record's columns follow UsageRecord's fields in
# order, so that a row read back gives the record as one slice. A column type that
# disagrees with the migrations fails every PostgreSQL ingest test at once.
COLUMNS = (
    Column("kind", "varchar", "kind"),
    Column("user_id", "int4", "user_id"),
    Column("revision", "int4", "revision"),
    Column("message_id", "varchar", "record.message_id"),
    Column("request_id", "varchar", "record.request_id"),
    Column("occurred_at", "timestamptz", "record.timestamp"),
    Column("model", "varchar", "record.model"),
    Column("input_tokens", "int8", "record.input_tokens"),
    Column("output_tokens", "int8", "record.output_tokens"),
    Column("cache_creation_5m_tokens", "int8", "record.cache_creation_5m_tokens"),
    Column("cache_creation_1h_tokens", "int8", "record.cache_creation_1h_tokens"),
    Column("cache_read_tokens", "int8", "record.cache_read_tokens"),
    Column("session_id", "varchar", "record.session_id"),
    Column("project_path", "varchar", "record.project_path"),
    Column("is_sidechain", "bool", "record.is_sidechain"),
    Column("host", "varchar", "record.host"),
    Column("speed", "varchar", "record.speed"),
    Column("service_tier", "varchar", "record.service_tier"),
    Column("web_search_requests", "int8", "record.web_search_requests"),
    Column("feed", "varchar", "record.feed"),
    Column("reported_cost_nanos", "int8", "record.reported_cost_nanos"),
    Column("cost_nanos", "int8", "cost_nanos"),
    Column("priced", "bool", "priced"),
    Column("recorded_at", "timestamptz", "recorded_at"),
    Column("schema_version", "int2", "schema_version"),
    Column("web_search_cost_nanos", "int8", "web_search_cost_nanos"),
)
_INSERT_COLUMNS = tuple(column.name for column in COLUMNS)
_READ_FIELDS = (*_INSERT_COLUMNS, "position")
# A row read back is the columns, then the position.
_RECORD = slice(
    [column.source for column in COLUMNS].index("record." + UsageRecord._fields[0]),
    [column.source for column in COLUMNS].index("record." + UsageRecord._fields[-1]) + 1,
)
_KIND = UsageEvent._fields.index("kind")
_POSITION = UsageEvent._fields.index("position")
_row_values = attrgetter(*(column.source for column in COLUMNS))
_TIMES = tuple(index for index, column in enumerate(COLUMNS) if column.pg_type == "timestamptz")


def _check_columns() -> None:
    """The table above must follow UsageEvent's and UsageRecord's fields in order."""
    sources = [column.source for column in COLUMNS]
    fields = [*sources[: _RECORD.start], "record", *sources[_RECORD.stop :]]
    fields.insert(_POSITION, "position")
    if fields != list(UsageEvent._fields) or sources[_RECORD] != [
        f"record.{name}" for name in UsageRecord._fields
    ]:
        raise ImportError("usage.store.COLUMNS must follow UsageEvent's and UsageRecord's fields")


_check_columns()


# PostgreSQL advisory locks (two int4 keys): (USER_APPENDS, user id) serialises one user's
# appends; (ANY_APPENDS, 0) is held shared by every append and exclusively by
# ``head_position``. Always taken in that order: the shared one first.
USER_APPENDS = 0x7573_6167  # "usag"
ANY_APPENDS = USER_APPENDS + 1


@contextmanager
def appending(user_id: int) -> Iterator[None]:
    """A transaction holding the user's append lock until it commits."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock_shared(%s, 0), pg_advisory_xact_lock(%s, %s)",
                    [ANY_APPENDS, USER_APPENDS, user_id],
                )
        yield


def latest_entries(
    user_id: int, message_ids: Iterable[str], request_ids: Iterable[str] = ()
) -> list[Entry]:
    """What the dedupe needs of ``latest_events``."""
    return [_entry(event) for event in latest_events(user_id, message_ids, request_ids)]


def latest_events(
    user_id: int, message_ids: Iterable[str], request_ids: Iterable[str] = ()
) -> list[UsageEvent]:
    """The newest revision of every logged (message id, request id) whose message id is
    among ``message_ids`` or whose request id is among ``request_ids`` (a request's copy
    from another feed has another message id: issue 16)."""
    found = _logged_with(user_id, "message_id", sorted(set(message_ids)))
    wanted = sorted({request_id for request_id in request_ids if request_id})
    if wanted:
        found += _logged_with(user_id, "request_id", wanted)
    return newest_revisions(found)


def _logged_with(user_id: int, column: str, ids: list[str]) -> list[UsageEvent]:
    if connection.vendor == "postgresql":
        return _logged_with_postgresql(user_id, column, ids)
    # A plain IN list, in chunks under SQLite's parameter limit.
    found: list[UsageEvent] = []
    for start in range(0, len(ids), 500):
        rows = LoggedEvent.objects.filter(
            user_id=user_id, **{f"{column}__in": ids[start : start + 500]}
        )
        found += _events(rows.values_list(*_READ_FIELDS))
    return found


def _logged_with_postgresql(user_id: int, column: str, ids: list[str]) -> list[UsageEvent]:
    """One index probe per id, forced.

    Before autovacuum first analyses the table (a minute or more after it fills), the
    planner guesses a user has a few dozen rows and answers ``message_id IN (...)``, or a
    plain join of the ids, with a scan of all the user's rows, which grows with the log.
    The LATERAL subquery with ``OFFSET 0`` cannot be flattened into such a join, so each
    id is one index lookup, present or not. Which index it probes is still the statistics'
    choice; on a table of a few thousand rows without any it took the wrong one (see
    ``_Statistics``)."""
    if not ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(dedupe_probe_sql(column), [orjson.dumps(ids).decode(), user_id])
        return _events(cursor.fetchall())


@lru_cache(maxsize=2)
def dedupe_probe_sql(column: str = "message_id") -> str:
    """Parameters: the ids as a JSON array (one string parameter: quoting a list of 1,000
    ids as an SQL array literal took psycopg a regex search per id), the user id. By
    ``request_id`` the condition names the partial index's (no empty request ids)."""
    if column not in ("message_id", "request_id"):
        raise ValueError(column)
    columns = ", ".join(f"e.{name}" for name in _READ_FIELDS)
    partial = " AND request_id <> ''" if column == "request_id" else ""
    return (
        f"SELECT {columns} FROM jsonb_array_elements_text(%s::jsonb) AS wanted(id) "
        f"CROSS JOIN LATERAL (SELECT * FROM {_TABLE} WHERE user_id = %s "
        f"AND {column} = wanted.id{partial} OFFSET 0) AS e"
    )


class Pending(NamedTuple):
    """An event ready to append: the event and its row, built before the append lock."""

    event: UsageEvent
    row: Sequence[object]


def prepare(events: Iterable[UsageEvent]) -> list[Pending]:
    """The rows of ``events``. Needs no lock: building them outside it keeps the section
    that serialises every ingest short."""
    db_time = connection.ops.adapt_datetimefield_value  # once: ``connection`` is a proxy
    return [Pending(event, _values(event, db_time)) for event in events]


def append_prepared(pending: Sequence[Pending]) -> list[int]:
    """Append the prepared events, all of one user (inside that user's ``appending()``);
    returns their positions, in order.

    Not the ORM's bulk_create, which spent most of an ingest preparing values one field at
    a time: PostgreSQL takes a binary COPY, SQLite an executemany. Under the user's append
    lock the user's new rows are exactly those after the previous maximum position, in
    insertion order."""
    if not pending:
        return []
    rows = [item.row for item in pending]
    try:
        if connection.vendor == "postgresql":
            with connection.wrap_database_errors:  # psycopg's own cursor: Django's errors
                positions = _append_postgresql(pending[0].event.user_id, rows)
        else:
            positions = _append_sqlite(rows)
    except (UnicodeEncodeError, OverflowError) as error:
        # Refused by the driver before the database saw it (text that is not UTF-8, an
        # integer past 64 bits): a value the log cannot store, like PostgreSQL's DataError.
        raise DataError(str(error)) from error
    if len(positions) != len(rows):
        raise RuntimeError(f"appended {len(rows)} events, found {len(positions)} new positions")
    return positions


def _append_sqlite(rows: list[Sequence[object]]) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COALESCE(MAX(position), 0) FROM {_TABLE}")
        before = cursor.fetchone()[0]
        cursor.executemany(_insert_sql(), rows)  # type: ignore[arg-type]
        cursor.execute(
            f"SELECT position FROM {_TABLE} WHERE position > %s ORDER BY position", [before]
        )
        return [row[0] for row in cursor.fetchall()]


def positioned(pending: Sequence[Pending], positions: Sequence[int]) -> list[UsageEvent]:
    """The events as the log stored them, with their positions."""
    pairs = zip(pending, positions, strict=True)
    return [item.event.at_position(position) for item, position in pairs]


_TABLE = LoggedEvent._meta.db_table


def _append_postgresql(user_id: int, rows: list[Sequence[object]]) -> list[int]:
    """Binary COPY on Django's connection (same transaction): the fastest way into
    PostgreSQL; the binary format spares psycopg the text formatting of every value. Under
    the user's append lock the user's new positions are exactly those above the previous
    maximum (sequence values only grow; other users' rows may interleave)."""
    import psycopg

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(f"SELECT COALESCE(MAX(position), 0) FROM {_TABLE}")
        before = cursor.fetchone()[0]  # type: ignore[index]
        columns = ", ".join(_INSERT_COLUMNS)
        with cursor.copy(f"COPY {_TABLE} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([column.pg_type for column in COLUMNS])
            for row in rows:
                copy.write_row(row)
        # The LIMIT keeps the planner on an index from ``before``; without it, on a table
        # without statistics, it chose a sequential scan of the whole log.
        cursor.execute(
            f"SELECT position FROM {_TABLE} WHERE user_id = %s AND position > %s "
            "ORDER BY position LIMIT %s",
            [user_id, before, len(rows)],
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
    row of the user for each id: a backfill's batches slow down quadratically. One ANALYZE
    (it samples a bounded number of rows) settles it for good; autovacuum keeps the
    statistics current afterwards. Checked once per process
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

    def newcomer(self) -> None:
        """A user's first events are in (inside ``appending()``). Statistics made before
        hold the users of then: with a few of them, every row is theirs, and the planner
        takes a newcomer for a user without rows and probes their next batch through
        ``usage_event_user_position`` (10,000 ids against 10,000 rows took 28 s, inside the
        append lock). Analysed again after the commit: once per user, and the sample is
        bounded. With many users a newcomer's estimate is the average user's, right anyway."""
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


def first_events_appended() -> None:
    """Called inside ``appending()`` when a user with no events appended some."""
    if connection.vendor == "postgresql":
        _statistics.newcomer()


@lru_cache(maxsize=1)
def _insert_sql() -> str:
    placeholders = ", ".join(["%s"] * len(_INSERT_COLUMNS))
    return f"INSERT INTO {_TABLE} ({', '.join(_INSERT_COLUMNS)}) VALUES ({placeholders})"


def _values(event: UsageEvent, db_time: Callable[[datetime], object]) -> Sequence[object]:
    values = list(_row_values(event))
    for index in _TIMES:
        values[index] = db_time(values[index])
    return values


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


class Head(NamedTuple):
    """A user's last event in the log: its position and its fingerprint ("" for none)."""

    position: int
    event: str


def last_position(user_id: int) -> int:
    return head(user_id).position


def head(user_id: int) -> Head:
    # Plain SQL: once per ingest, and the ORM took longer to build it than the database to
    # answer it (a backward walk of ``usage_event_user_position``).
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT position, message_id, request_id, revision FROM {_TABLE} "
            "WHERE user_id = %s ORDER BY position DESC LIMIT 1",
            [user_id],
        )
        row = cursor.fetchone()
    return Head(int(row[0]), fingerprint(*row[1:])) if row else Head(0, "")


def fingerprint_at(user_id: int, position: int) -> str | None:
    """The fingerprint of the user's event at ``position``; None when the log has none."""
    row = (
        LoggedEvent.objects.filter(user_id=user_id, position=position)
        .values_list("message_id", "request_id", "revision")
        .first()
    )
    return None if row is None else fingerprint(*row)


def log_identity() -> str:
    """This log's identity (made by migration 0005; made again if the table was emptied,
    which is a new log as far as any projection is concerned)."""
    identity, _ = LogIdentity.objects.get_or_create(id=1, defaults={"value": uuid.uuid4().hex})
    return identity.value


def user_ids_with_events() -> list[int]:
    return list(LoggedEvent.objects.values_list("user_id", flat=True).distinct().order_by())


def heads() -> dict[int, int]:
    """Each user's last position in the log (the worker's lag measure, once per tick: one
    walk of ``usage_event_user_position``, as ``user_ids_with_events`` is)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT user_id, MAX(position) FROM {_TABLE} GROUP BY user_id")
        return {int(user_id): int(position) for user_id, position in cursor.fetchall()}


def head_position() -> int:
    """The log's last position (0 while it is empty), with every position below it
    committed: a reader of every user's events may move its cursor there. Appends are
    serialised per user only, so an id below the maximum may still be in flight; on
    PostgreSQL the exclusive ``ANY_APPENDS`` lock waits for the appends (and deletes) in
    flight and holds new ones back for the one query (a worker tick takes it once). Not a
    table lock: that would also cancel autovacuum at every tick."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s, 0)", [ANY_APPENDS])
        cursor.execute(f"SELECT COALESCE(MAX(position), 0) FROM {_TABLE}")
        return int(cursor.fetchone()[0])


def earliest_times_after(position: int) -> dict[int, datetime]:
    """Per user with events after ``position``: the earliest time those events happened."""
    rows = LoggedEvent.objects.filter(position__gt=position).values("user_id")
    return dict(rows.annotate(earliest=Min("occurred_at")).values_list("user_id", "earliest"))


def user_ids_with_events_between(after: datetime, until: datetime) -> list[int]:
    """Users with an event that happened in (after, until]."""
    rows = LoggedEvent.objects.filter(occurred_at__gt=after, occurred_at__lte=until)
    return list(rows.values_list("user_id", flat=True).distinct().order_by())


# --- retention (usage.retention drives it, a part of one user at a time) -------------------


def user_ids_with_events_before(cutoff: datetime) -> list[int]:
    """Users with an event that happened before ``cutoff`` (retention's work list)."""
    rows = LoggedEvent.objects.filter(occurred_at__lt=cutoff)
    return list(rows.values_list("user_id", flat=True).distinct().order_by())


def expired_positions(user_id: int, cutoff: datetime, *, through: int) -> list[int]:
    """The positions of the user's events that happened before ``cutoff``, up to
    ``through``, in order. From the (user, occurred_at, position) index alone, so the cost
    is what expires, not the user's history: asked for them in position order with a
    limit, PostgreSQL walked the user's whole history by position looking for old ones.
    (In position order, a message's earlier revisions leave before or with its later ones:
    ``projector.expiry`` relies on it.)"""
    expired = LoggedEvent.objects.filter(
        user_id=user_id, occurred_at__lt=cutoff, position__lte=through
    )
    return sorted(expired.values_list("position", flat=True))


def events_at(user_id: int, positions: Sequence[int]) -> list[UsageEvent]:
    """The user's events at ``positions`` that the log still holds, in position order."""
    found: list[UsageEvent] = []
    for start in range(0, len(positions), 500):  # under SQLite's parameter limit
        rows = LoggedEvent.objects.filter(
            user_id=user_id, position__in=positions[start : start + 500]
        )
        found += _events(rows.order_by("position").values_list(*_READ_FIELDS))
    return found


def newest_revisions_through(
    user_id: int, message_ids: Iterable[str], through: int
) -> dict[tuple[str, str], int]:
    """The highest revision at a position up to ``through`` of every logged (message id,
    request id) among ``message_ids``: the copy a projection standing at ``through``
    counts. (Revisions are appended in order, so a higher one has a higher position.)"""
    newest: dict[tuple[str, str], int] = {}
    for event in _logged_with(user_id, "message_id", sorted(set(message_ids))):
        if event.position is not None and event.position <= through:
            key = (event.record.message_id, event.record.request_id)
            newest[key] = max(newest.get(key, -1), event.revision)
    return newest


def delete_events(user_id: int, positions: Sequence[int], *, through: int) -> Head:
    """Delete the user's events at ``positions`` (all at or below ``through``). Returns the
    user's newest event left at or below ``through`` (``Head(0, "")`` for none): a
    checkpoint at ``through`` whose event is gone can name it instead, since nothing of the
    user's lies between them any more."""
    with appending(user_id):
        for start in range(0, len(positions), 500):  # under SQLite's parameter limit
            chunk = positions[start : start + 500]
            LoggedEvent.objects.filter(user_id=user_id, position__in=chunk).delete()
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT position, message_id, request_id, revision FROM {_TABLE} "
                "WHERE user_id = %s AND position <= %s ORDER BY position DESC LIMIT 1",
                [user_id, through],
            )
            row = cursor.fetchone()
    _known_names.pop(user_id, None)  # this process's; the others read theirs again in time
    return Head(int(row[0]), fingerprint(*row[1:])) if row else Head(0, "")


def delete_before(user_id: int, cutoff: datetime) -> int:
    """Delete every event of the user that happened before ``cutoff`` (a user without a
    projection to take them back from); returns how many."""
    with appending(user_id):
        deleted, _ = LoggedEvent.objects.filter(user_id=user_id, occurred_at__lt=cutoff).delete()
    _known_names.pop(user_id, None)
    return deleted


def events_between(user_id: int, start: datetime, end: datetime) -> list[UsageEvent]:
    rows = LoggedEvent.objects.filter(
        user_id=user_id, occurred_at__gte=start, occurred_at__lte=end
    ).order_by("position")
    return _events(rows.values_list(*_READ_FIELDS))


def _events(rows: Iterable[Sequence[Any]]) -> list[UsageEvent]:
    return [_event(row) for row in rows]


def _event(row: Sequence[Any]) -> UsageEvent:
    fields = [*row[: _RECORD.start], UsageRecord._make(row[_RECORD]), *row[_RECORD.stop : -1]]
    fields.insert(_POSITION, row[-1])
    fields[_KIND] = EventKind(fields[_KIND])
    return UsageEvent._make(fields)


def _entry(event: UsageEvent) -> Entry:
    return Entry(record=event.record, revision=event.revision, counted=event.counted)


# --- the names a user's records use (for the per-user quotas) ------------------------------

NAME_COLUMNS = ("model", "project_path", "session_id", "host", "feed")
# Users whose names a process keeps, and how long it trusts them before reading them again
# from the log (retention deletes events; until then a pruned name still counts).
NAMES_CACHED_USERS = 64
NAMES_REREAD_SECONDS = 600.0


class Names(NamedTuple):
    """The distinct values of each of ``NAME_COLUMNS`` in a user's log, as sets."""

    models: set[str]
    projects: set[str]
    sessions: set[str]
    hosts: set[str]
    feeds: set[str]  # not a quota: whether a copy from another feed can be in the log


@dataclass
class _KnownNames:
    log: str
    position: int  # complete up to this position of the user's events
    read_at: float  # time.monotonic() of the full read
    names: Names


_known_names: OrderedDict[int, _KnownNames] = OrderedDict()


def names_in_use(user_id: int, user_head: int) -> Names:
    """The user's names, inside ``appending()`` (the lock makes them exact: no other append
    runs until this transaction ends). Kept per process and brought up to the log's head
    by reading only the user's events after the position they are complete up to, through
    the (user, position) index; read in full once per ``NAMES_REREAD_SECONDS``, for a
    new log, or when the user's head went back (a restored backup). ``user_head``
    is the user's ``head()``, read by the caller under the same lock. Do not modify."""
    log_id = log_identity()
    known = _known_names.get(user_id)
    stale = (
        known is None
        or known.log != log_id
        or known.position > user_head
        or time.monotonic() - known.read_at > NAMES_REREAD_SECONDS
    )
    if known is None or stale:
        known = _KnownNames(log_id, 0, time.monotonic(), Names(set(), set(), set(), set(), set()))
    if known.position < user_head:
        _add_names(known.names, _names_after(user_id, known.position))
        known.position = user_head
    _known_names[user_id] = known
    _known_names.move_to_end(user_id)
    while len(_known_names) > NAMES_CACHED_USERS:
        _known_names.popitem(last=False)
    return known.names


def remember_names(user_id: int, events: Sequence[UsageEvent], position: int) -> None:
    """Add the names of ``events``, just appended up to ``position`` (inside the same
    ``appending()`` as ``names_in_use``), so the next ingest need not read them back."""
    known = _known_names.get(user_id)
    if known is None or known.position >= position:
        return
    rows = [
        (r.model, r.project_path, r.session_id, r.host, r.feed)
        for r in (event.record for event in events)
    ]
    _add_names(known.names, rows)
    known.position = position


def _names_after(user_id: int, position: int) -> list[tuple[str, str, str, str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT {', '.join(NAME_COLUMNS)} FROM {_TABLE} "
            "WHERE user_id = %s AND position > %s",
            [user_id, position],
        )
        return [
            (model, project, session, host, feed) for model, project, session, host, feed in cursor
        ]


def _add_names(names: Names, rows: Iterable[tuple[str, str, str, str, str]]) -> None:
    for model, project, session, host, feed in rows:
        names.models.add(model)
        names.projects.add(project)
        names.sessions.add(session)
        names.hosts.add(host)
        names.feeds.add(feed)
