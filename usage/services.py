"""Write entry points. Views, commands and consumers call these and nothing below them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import DataError, OperationalError, transaction

from usage import completed_windows, outage, retention, side_tables, signals, store, wire
from usage.completed_windows import Progress
from usage.dedupe import Decision, Outcome, decide
from usage.events import (
    MAX_WINDOW_SKEW,
    EventKind,
    Feed,
    InvalidRecord,
    UsageEvent,
    UsageRecord,
    check_storable,
    otlp_message_id,
)
from usage.limits import OfficialLimits
from usage.pricing import Cost, price
from usage.projection import projector

log = logging.getLogger(__name__)

QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
CLOCK_AHEAD = "CLOCK_AHEAD"


class LogUnavailable(Exception):
    """The event log's database cannot be reached or stays locked: nothing was stored, the
    whole request may be sent again later (the API answers 503)."""


@dataclass(frozen=True)
class Rejection:
    index: int
    code: str
    message: str


@dataclass(frozen=True)
class Adjustment:
    """A record kept, but not as it was sent (``CLOCK_AHEAD``: counted at the server's time)."""

    index: int
    code: str
    message: str


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    skipped: int
    expired: int
    rejected: list[Rejection] = field(default_factory=list)
    unpriced_models: list[str] = field(default_factory=list)
    last_position: int | None = None
    clamped: list[Adjustment] = field(default_factory=list)


@dataclass
class _Parsed:
    """A batch's usage records, each beside its index in the request (and its prepared first
    copy, built outside the append lock); and what became of the other lines."""

    records: list[UsageRecord] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    first_copies: list[store.Pending] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    clamped: list[Adjustment] = field(default_factory=list)
    skipped: int = 0
    expired: int = 0

    def without(self, positions: set[int], code: str, messages: dict[int, str]) -> None:
        """Drop the records at ``positions`` (of ``records``) as rejections with ``code``."""
        for at in sorted(positions):
            self.rejected.append(Rejection(self.indexes[at], code, messages[at]))
        kept = [at for at in range(len(self.records)) if at not in positions]
        self.records = [self.records[at] for at in kept]
        self.indexes = [self.indexes[at] for at in kept]
        self.first_copies = [self.first_copies[at] for at in kept]


class _Appended(NamedTuple):
    outcome: Outcome
    pending: list[store.Pending]
    positions: list[int]


def ingest_records(
    *, user_id: int, records: Sequence[object], host: str, now: datetime
) -> IngestResult:
    """Append the usage in ``records`` to the user's log, counting every message once.

    Parsing and pricing happen before the append lock is taken; inside it only the quota
    and duplicate checks and the insert run, so concurrent ingests wait as little as
    possible. Every problem of one record is that record's rejection, by its index.
    """
    return _ingest(
        user_id, _parse(records, lambda raw: wire.parse(raw, host=host, now=now), now), now
    )


def ingest_usage(
    *, user_id: int, records: Sequence[UsageRecord | InvalidRecord | None], now: datetime
) -> IngestResult:
    """``ingest_records`` for a feed that parses its own records (OpenTelemetry's): each
    item is a record, the reason it was refused, or None (not usage: skipped)."""
    return _ingest(user_id, _parse(records, _given, now), now)


def _given(item: object) -> UsageRecord | None:
    if isinstance(item, InvalidRecord):
        raise item
    if not isinstance(item, UsageRecord):
        return None
    check_storable(item)
    return item


def _ingest(user_id: int, batch: _Parsed, now: datetime) -> IngestResult:
    # Priced, and each record's event and row built, here: outside the lock that
    # serialises every ingest of every process. Most records are new messages, whose event
    # is this one: the decision that records ``records[i]`` takes ``first_copies[i]``.
    batch.first_copies = store.prepare(
        _first_copy(user_id, record, now) for record in batch.records
    )
    if outage.skip():  # down, and another request is finding out whether it is back
        raise LogUnavailable("the database is down")
    try:
        with store.appending(user_id):
            after = store.head(user_id)
            names = store.names_in_use(user_id, after.position)
            _within_quotas(batch, names)
            appended = _append_storable(user_id, batch, now, feeds=names.feeds)
            events = store.positioned(appended.pending, appended.positions)
            if appended.positions:
                store.remember_names(user_id, events, appended.positions[-1])
                if not after.position:
                    store.first_events_appended()
            # Projections and broadcasts follow the commit (and the lock's release); a crash
            # in between is repaired by catching up from the projection's checkpoint.
            transaction.on_commit(lambda: projector.after_commit(user_id, events, after=after))
    except OperationalError as error:
        log.warning("the event log is unavailable: %s", error)
        outage.failed(error)
        raise LogUnavailable(str(error)) from error
    except BaseException:
        outage.released()
        raise
    outage.succeeded()
    pending, positions = appended.pending, appended.positions
    result = IngestResult(
        accepted=len(batch.records) - appended.outcome.duplicates,
        duplicates=appended.outcome.duplicates,
        skipped=batch.skipped,
        expired=batch.expired,
        rejected=sorted(batch.rejected, key=lambda rejection: rejection.index),
        unpriced_models=sorted({p.event.record.model for p in pending if not p.event.priced}),
        last_position=positions[-1] if positions else None,
        clamped=batch.clamped,
    )
    signals.records_ingested.send(sender=IngestResult, result=result)  # committed by now
    return result


def _append_storable(user_id: int, batch: _Parsed, now: datetime, *, feeds: set[str]) -> _Appended:
    """Decide and append ``batch`` (inside ``appending()``). Should the database refuse a
    value that the parse-time check let through, the refused records are found by halving,
    each in a savepoint rolled back at once, then left out as rejections; the rest are
    decided again without them (a refused first copy must not leave its revision behind)
    and appended."""
    logged = store.latest_entries(user_id, *_dedupe_keys(batch.records, feeds))
    while True:
        outcome = decide(batch.records, logged)
        pending = [
            batch.first_copies[decision.source]
            if decision.kind is EventKind.RECORDED
            and decision.record is batch.records[decision.source]
            else store.prepare([_decided(user_id, decision, now)])[0]
            for decision in outcome.decisions
        ]
        try:
            with transaction.atomic():  # a savepoint: a refusal keeps the lock and transaction
                return _Appended(outcome, pending, store.append_prepared(pending))
        except DataError as error:
            refused = _refused(pending, error)
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else "refused"
        sources = {outcome.decisions[at].source for at in refused}
        message = f"the event log cannot store this record ({reason})"
        batch.without(sources, InvalidRecord.code, dict.fromkeys(sources, message))


def _dedupe_keys(records: Sequence[UsageRecord], feeds: set[str]) -> tuple[set[str], set[str]]:
    """The message ids and request ids whose logged copies decide ``records``. A request's
    OpenTelemetry copy has the message id ``otel:<request id>``, so a transcript record finds
    it by message id; an OpenTelemetry copy finds the transcript's by request id. Only a
    user who has used both feeds (``feeds``: the user's, from the log) pays for either."""
    message_ids = {record.message_id for record in records}
    request_ids: set[str] = set()
    mixed = Feed.OTLP in feeds or any(record.feed for record in records)  # "" is the transcript
    if mixed:
        for record in records:
            if not record.request_id:
                continue
            if record.feed == Feed.OTLP:
                request_ids.add(record.request_id)
            else:
                message_ids.add(otlp_message_id(record.request_id))
    return message_ids, request_ids


class _Probe(Exception):
    """Rolls a probing append back."""


def _refused(pending: list[store.Pending], error: DataError) -> list[int]:
    """The indexes of ``pending`` whose rows the database refuses: halves are appended in
    savepoints that are rolled back (a half that goes in has no refused row; a refused one
    is halved again), O(refused * log n) probes. ``error`` is raised again if no single row
    is refused: the problem is not one of the records."""

    def probe(start: int, stop: int) -> list[int]:
        try:
            with transaction.atomic():
                store.append_prepared(pending[start:stop])
                raise _Probe
        except _Probe:
            return []
        except DataError:
            if stop - start == 1:
                return [start]
            middle = (start + stop) // 2
            return probe(start, middle) + probe(middle, stop)

    middle = len(pending) // 2
    found = probe(0, middle) + probe(middle, len(pending)) if len(pending) > 1 else [0]
    if not found:
        raise error
    return found


_QUOTAS = (
    ("models", "model", "USAGE_MAX_MODELS_PER_USER", "models"),
    ("projects", "project_path", "USAGE_MAX_PROJECTS_PER_USER", "projects (cwd)"),
    ("sessions", "session_id", "USAGE_MAX_SESSIONS_PER_USER", "sessions"),
    ("hosts", "host", "USAGE_MAX_HOSTS_PER_USER", "hosts"),
)


def _within_quotas(batch: _Parsed, names: store.Names) -> None:
    """Reject each record that would bring a new model, project, session or host to a user
    who already has the most allowed; records of the names in use still go in. The batch's
    own new names count in order: the first ones fit, the rest are refused."""
    limits = [getattr(settings, setting) for _, _, setting, _ in _QUOTAS]
    in_use = [getattr(names, kind) for kind, _, _, _ in _QUOTAS]
    fields = [attribute for _, attribute, _, _ in _QUOTAS]
    if all(
        len(used) + len({getattr(record, name) for record in batch.records}) <= limit
        for used, name, limit in zip(in_use, fields, limits, strict=True)
    ):
        return  # the usual case: even were every name of the batch new, all would fit
    added: list[set[str]] = [set() for _ in _QUOTAS]
    refused: dict[int, str] = {}
    for at, record in enumerate(batch.records):
        values = [getattr(record, name) for name in fields]
        new = [
            value not in used and value not in extra
            for value, used, extra in zip(values, in_use, added, strict=True)
        ]
        over = [
            kind
            for kind, is_new, used, extra, limit in zip(
                _QUOTAS, new, in_use, added, limits, strict=True
            )
            if is_new and len(used) + len(extra) >= limit
        ]
        if over:
            refused[at] = _quota_message(over[0], values[_QUOTAS.index(over[0])], limits)
            continue
        for value, is_new, extra in zip(values, new, added, strict=True):
            if is_new:
                extra.add(value)
    if refused:
        batch.without(set(refused), QUOTA_EXCEEDED, refused)


def _quota_message(quota: tuple[str, str, str, str], value: str, limits: list[int]) -> str:
    _, _, setting, label = quota
    limit = limits[_QUOTAS.index(quota)]
    return (
        f"a new one of {label} ({value[:80]!r}) past this user's limit of {limit} "
        f"({setting}); records of the ones already in use are still accepted"
    )


def prune_events(*, now: datetime) -> dict[int, int]:
    """Retention: delete events older than ``USAGE_RETENTION_HOURS``, taking them out of
    the projections as they go (``usage.retention``). Nothing younger than the horizon is
    touched. (The periodic worker records the completed windows first.)"""
    cutoff = retention_cutoff(now)
    if cutoff is None:
        return {}
    return retention.prune(cutoff)


def record_completed_windows(*, now: datetime, since: Progress) -> Progress:
    """Keep the totals of the 5-hour windows that ended or changed since ``since`` (the
    previous call's answer; a fresh ``Progress()`` looks at every user)."""
    return completed_windows.record(now=now, since=since, frozen_before=retention_cutoff(now))


def run_periodic_jobs(*, now: datetime, since: Progress) -> Progress:
    """One tick of the worker: record how far the projections are behind the log
    (``projector.record_lag``), catch every projection up to it (repairs a crash between
    an ingest's commit and its projection), record completed windows, then apply retention
    (after: a window's events must still be there when it is recorded). A job that fails is
    logged; the others still run."""
    progress = since
    try:
        projector.record_lag(now=now.timestamp())
    except Exception:
        log.exception("measuring the projection lag failed; retrying next tick")
    try:
        projector.catch_up_all()
    except Exception:
        log.exception("projection catch-up failed; retrying next tick")
    try:
        progress = record_completed_windows(now=now, since=since)
    except Exception:
        log.exception("recording completed windows failed; retrying next tick")
    try:
        pruned = prune_events(now=now)
    except Exception:
        log.exception("retention failed; retrying next tick")
    else:
        if pruned:
            log.info("retention pruned %s events", sum(pruned.values()))
    return progress


def retention_cutoff(now: datetime) -> datetime | None:
    hours = float(settings.USAGE_RETENTION_HOURS)
    return None if hours <= 0 else now - timedelta(hours=hours)


def _parse(
    records: Sequence[object], parse: Callable[[object], UsageRecord | None], now: datetime
) -> _Parsed:
    cutoff = retention_cutoff(now)
    latest = now + MAX_WINDOW_SKEW
    batch = _Parsed()
    for index, raw in enumerate(records):
        try:
            record = parse(raw)
        except InvalidRecord as error:
            batch.rejected.append(Rejection(index, error.code, error.message))
            continue
        if record is None:
            batch.skipped += 1
        elif cutoff is not None and record.timestamp < cutoff:
            batch.expired += 1  # retention would delete it at once; storing it would only churn
        else:
            if record.timestamp > latest:
                batch.clamped.append(_clock_ahead(index, record.timestamp, now))
                record = record._replace(timestamp=now)
            batch.records.append(record)
            batch.indexes.append(index)
    return batch


def _clock_ahead(index: int, timestamp: datetime, now: datetime) -> Adjustment:
    """A record dated ahead of the server's clock by more than ``MAX_WINDOW_SKEW`` (and at
    most a day: later ones are rejected) counts at the server's time: a machine with a fast
    clock must not open the 5-hour window hours early and hold it past the real one."""
    ahead = int((timestamp - now).total_seconds())
    return Adjustment(
        index,
        CLOCK_AHEAD,
        f"timestamp {timestamp.isoformat()} is {ahead} s ahead of the server's clock (more "
        f"than {int(MAX_WINDOW_SKEW.total_seconds())} s allowed); counted at the server's "
        f"time, {now.isoformat()}",
    )


def _cost(record: UsageRecord) -> Cost | None:
    return price(record.model, record, record.timestamp)  # a record is a priced request


def _first_copy(user_id: int, record: UsageRecord, now: datetime) -> UsageEvent:
    """The event of a record that is the first copy of its message: the usual case."""
    return _event(user_id, EventKind.RECORDED, record, 0, now)


def _decided(user_id: int, decision: Decision, now: datetime) -> UsageEvent:
    return _event(user_id, decision.kind, decision.record, decision.revision, now)


def _event(
    user_id: int, kind: EventKind, record: UsageRecord, revision: int, now: datetime
) -> UsageEvent:
    if kind is EventKind.RETRACTED:
        # The withdrawn copy's identity, none of its usage.
        record = record._replace(
            input_tokens=0,
            output_tokens=0,
            cache_creation_5m_tokens=0,
            cache_creation_1h_tokens=0,
            cache_read_tokens=0,
            web_search_requests=0,
            reported_cost_nanos=None,
        )
    cost = _cost(record)
    return UsageEvent(
        kind=kind,
        user_id=user_id,
        revision=revision,
        record=record,
        cost_nanos=cost.total_nanos if cost is not None else 0,
        priced=cost is not None,
        recorded_at=now,
        web_search_cost_nanos=cost.web_search_nanos if cost is not None else 0,
    )


def record_official_limits(*, user_id: int, limits: OfficialLimits) -> bool:
    """Keep Claude's latest rate-limit reading and tell the user's dashboards."""
    saved = side_tables.save_official_limits(user_id, limits)
    if saved:
        transaction.on_commit(lambda: projector.after_limits_changed(user_id))
    return saved
