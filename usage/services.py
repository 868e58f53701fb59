"""Write entry points. Views, commands and consumers call these and nothing below them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from usage import completed_windows, side_tables, store, wire
from usage.completed_windows import Progress
from usage.dedupe import Decision, decide
from usage.events import EventKind, InvalidRecord, UsageEvent, UsageRecord
from usage.limits import OfficialLimits
from usage.pricing import cost_nanos
from usage.projection import projector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
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


def ingest_records(
    *, user_id: int, records: Sequence[object], host: str, now: datetime
) -> IngestResult:
    """Append the usage in ``records`` to the user's log, counting every message once.

    Parsing and pricing happen before the append lock is taken; inside it only the
    duplicate check and the insert run, so concurrent ingests wait as little as possible.
    """
    parsed, rejected, skipped, expired = _parse(records, host=host, now=now)
    # Priced, and each record's event and row built, here: outside the lock that
    # serialises every ingest of every process. Most records are new messages, whose event
    # is this one: the decision that records ``parsed[i]`` takes ``first_copies[i]``.
    first_copies = store.prepare(_first_copy(user_id, record, now) for record in parsed)
    with store.appending():
        logged = store.latest_entries(user_id, {record.message_id for record in parsed})
        outcome = decide(parsed, logged)
        after = store.head(user_id)
        pending = [
            first_copies[decision.source]
            if decision.kind is EventKind.RECORDED
            else store.prepare([_decided(user_id, decision, now)])[0]
            for decision in outcome.decisions
        ]
        positions = store.append_prepared(pending)
        # Projections and broadcasts follow the commit (and the lock's release); a crash in
        # between is repaired by catching up from the projection's checkpoint.
        transaction.on_commit(
            lambda: projector.after_commit(
                user_id, store.positioned(pending, positions), after=after
            )
        )
    return IngestResult(
        accepted=len(parsed) - outcome.duplicates,
        duplicates=outcome.duplicates,
        skipped=skipped,
        expired=expired,
        rejected=rejected,
        unpriced_models=sorted({p.event.record.model for p in pending if not p.event.priced}),
        last_position=positions[-1] if positions else None,
    )


def prune_events(*, now: datetime) -> dict[int, int]:
    """Retention: delete events older than ``USAGE_RETENTION_HOURS`` and rebuild the
    projections of the users who lost some. Nothing younger than the horizon is touched.
    (The periodic worker records the completed windows first.)"""
    cutoff = retention_cutoff(now)
    if cutoff is None:
        return {}
    deleted = store.delete_older_than(cutoff)
    for user_id in deleted:
        try:
            projector.rebuild_user(user_id)
        except Exception:  # a projection is rebuilt from the log by any later catch-up
            log.exception("rebuild after retention failed for user %s", user_id)
    return deleted


def record_completed_windows(*, now: datetime, since: Progress) -> Progress:
    """Keep the totals of the 5-hour windows that ended or changed since ``since`` (the
    previous call's answer; a fresh ``Progress()`` looks at every user)."""
    return completed_windows.record(now=now, since=since, frozen_before=retention_cutoff(now))


def run_periodic_jobs(*, now: datetime, since: Progress) -> Progress:
    """One tick of the worker: catch every projection up to the log (repairs a crash between
    an ingest's commit and its projection), record completed windows, then apply retention
    (after: a window's events must still be there when it is recorded). A job that fails is
    logged; the others still run."""
    progress = since
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
    records: Sequence[object], *, host: str, now: datetime
) -> tuple[list[UsageRecord], list[Rejection], int, int]:
    cutoff = retention_cutoff(now)
    parsed: list[UsageRecord] = []
    rejected: list[Rejection] = []
    skipped = expired = 0
    for index, raw in enumerate(records):
        try:
            record = wire.parse(raw, host=host, now=now)
        except InvalidRecord as error:
            rejected.append(Rejection(index, error.code, error.message))
            continue
        if record is None:
            skipped += 1
        elif cutoff is not None and record.timestamp < cutoff:
            expired += 1  # retention would delete it at once; storing it would only churn
        else:
            parsed.append(record)
    return parsed, rejected, skipped, expired


def _cost(record: UsageRecord) -> int | None:
    return cost_nanos(record.model, record, record.timestamp)  # a record has the five counts


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
        )
    cost = _cost(record)
    return UsageEvent(
        kind=kind,
        user_id=user_id,
        revision=revision,
        record=record,
        cost_nanos=cost or 0,
        priced=cost is not None,
        recorded_at=now,
    )


def record_official_limits(*, user_id: int, limits: OfficialLimits) -> bool:
    """Keep Claude's latest rate-limit reading and tell the user's dashboards."""
    saved = side_tables.save_official_limits(user_id, limits)
    if saved:
        transaction.on_commit(lambda: projector.after_limits_changed(user_id))
    return saved
