"""The totals of every finished 5-hour window, kept 30 days, so that the "custom" plan can
learn a limit from history after retention has pruned the events themselves.

The periodic worker records them once per tick, looking only at what can have changed since
its previous tick: users with new events (from the earliest of those events on), and users
whose latest window may have ended meanwhile. A user's windows are recomputed from a window
start before the change (a window start is where the chain of windows restarts): the start
of the window still open at the previous tick when the change is after it, else the start
of their latest recorded window. While that open window has not ended, changes after its
start can neither finish nor move a window, and nothing is read at all (the usual tick); a
tick reads a window's events once, when it ends, not the whole history every minute.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from usage import side_tables, store
from usage.events import UsageEvent, newest_revisions
from usage.measures import sum_totals
from usage.windows import WINDOW_LENGTH, WindowAlign, split_into_windows

log = logging.getLogger(__name__)

HISTORY = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the previous tick looked: the log position and the time it saw, and the
    users it failed for (the next tick recomputes all of theirs). The start value (nothing
    seen) makes the first tick look at every user."""

    position: int = 0
    checked_at: datetime | None = None
    retry: frozenset[int] = frozenset()
    # The start of each (user, alignment)'s window that was still open at ``checked_at``:
    # where its chain restarts for changes at or after it (no window table row holds it).
    open_windows: Mapping[tuple[int, str], datetime] = field(default_factory=dict)


def record(*, now: datetime, since: Progress, frozen_before: datetime | None) -> Progress:
    """Record the windows that ended, or changed, since ``since``; returns the progress to
    pass to the next tick. ``frozen_before`` is the retention cutoff: a recorded window that
    starts before it may have lost events to retention, and is never recomputed. One user's
    failure is logged and does not stop the others."""
    head = store.head_position()  # first: an event appended meanwhile is seen again, not lost
    changed = store.earliest_times_after(since.position)
    users = set(changed) | set(_users_whose_window_may_have_ended(since, now)) | since.retry
    failed = set()
    open_windows = {  # kept while they can still be open; a user's are replaced below
        key: start for key, start in since.open_windows.items() if start > now - WINDOW_LENGTH
    }
    for user_id in sorted(users):
        retried = user_id in since.retry
        for align in WindowAlign:
            open_windows.pop((user_id, align.value), None)
        try:
            opened = _record_user(
                user_id,
                now - HISTORY if retried else changed.get(user_id, now),
                now,
                Progress() if retried else since,
                frozen_before,
            )
        except Exception:
            log.exception("completed windows of user %s failed; will retry next tick", user_id)
            failed.add(user_id)
        else:
            open_windows.update(((user_id, align), start) for align, start in opened.items())
    side_tables.delete_completed_windows_before(now - HISTORY)
    return Progress(
        position=head, checked_at=now, retry=frozenset(failed), open_windows=open_windows
    )


def _users_whose_window_may_have_ended(since: Progress, now: datetime) -> list[int]:
    """A window that ended after the previous tick and by now started five hours before
    that, and its first message came within the hour after its start (the first tick looks
    at everyone with events)."""
    if since.checked_at is None:
        return store.user_ids_with_events()
    first_at_most = now - WINDOW_LENGTH + timedelta(hours=1)
    return store.user_ids_with_events_between(since.checked_at - WINDOW_LENGTH, first_at_most)


def _record_user(
    user_id: int,
    changed_from: datetime,
    now: datetime,
    since: Progress,
    frozen_before: datetime | None,
) -> dict[str, datetime]:
    """Recompute the user's windows from where each alignment's chain of windows restarts
    before ``changed_from``, and record the finished ones that are new or changed. Returns
    the start of each alignment's window still open."""
    starts: dict[WindowAlign, datetime] = {}
    opened = {}
    for align in WindowAlign:
        open_start = since.open_windows.get((user_id, align.value))
        if open_start is None or open_start > changed_from:
            # Unknown, or something changed before it: the recorded windows' chain.
            starts[align] = _restart_point(user_id, align, changed_from, now, frozen_before)
        elif now < open_start + WINDOW_LENGTH:
            # Still open, and every change is inside it (after its start, at or before now):
            # no window finished or moved. Nothing to read, even if retention cut into it.
            opened[align.value] = open_start
        elif frozen_before is None or open_start >= frozen_before:
            starts[align] = open_start  # it ended: its chain restarts at its start
        else:  # it ended, and retention cut into it: the recorded windows' chain
            starts[align] = _restart_point(user_id, align, changed_from, now, frozen_before)
    if not starts:
        return opened
    events = newest_revisions(store.events_between(user_id, min(starts.values()), now))
    counted = sorted((e for e in events if e.counted), key=lambda e: e.record.timestamp)
    for align, start in starts.items():
        after_start = [e for e in counted if e.record.timestamp >= start]
        unchanged_before = min(since.checked_at, changed_from) if since.checked_at else None
        open_start = _record_windows(user_id, align, after_start, start, now, unchanged_before)
        if open_start is not None:
            opened[align.value] = open_start
    return opened


def _restart_point(
    user_id: int,
    align: WindowAlign,
    changed_from: datetime,
    now: datetime,
    frozen_before: datetime | None,
) -> datetime:
    """The earliest moment whose windows are recomputed: the start of the latest recorded
    window at or before ``changed_from`` (the chain restarts at a window start), or, when
    that window is frozen, just after its end (the next message more than five hours after
    a window's start opens the next window)."""
    anchor = side_tables.latest_window_start(user_id, align.value, at_or_before=changed_from)
    if anchor is None:
        return now - HISTORY
    if frozen_before is not None and anchor < frozen_before:
        return anchor + WINDOW_LENGTH + timedelta(microseconds=1)
    return anchor


def _record_windows(
    user_id: int,
    align: WindowAlign,
    events: list[UsageEvent],
    start: datetime,
    now: datetime,
    unchanged_before: datetime | None,
) -> datetime | None:
    """Save the finished windows of ``events`` (in time order, from a restart point on) and
    delete the recorded windows from ``start`` on that no longer exist (later data moved
    them). A window that ended before ``unchanged_before`` was saved by an earlier tick and
    holds nothing new. Returns the start of the window still open, if one is."""
    windows = split_into_windows([e.record.timestamp for e in events], align)
    finished = [window for window in windows if window.end <= now]
    stamps = [event.record.timestamp for event in events]
    taken = 0
    for window in finished:  # the windows partition the events, in order
        inside = events[taken : bisect_right(stamps, window.end, lo=taken)]
        taken += len(inside)
        if unchanged_before is not None and window.end < unchanged_before:
            continue
        side_tables.save_completed_window(
            user_id=user_id,
            align=align.value,
            start=window.start,
            end=window.end,
            totals=_window_totals(inside),
        )
    side_tables.delete_windows_from(user_id, align.value, start, keep={w.start for w in finished})
    return windows[-1].start if windows and windows[-1].end > now else None


def _window_totals(events: list[UsageEvent]) -> dict[str, int]:
    return {
        "input_output_tokens": sum(e.record.input_tokens + e.record.output_tokens for e in events),
        "total_tokens": sum(e.record.total_tokens for e in events),
        "cost_nanos": sum_totals(events).cost_nanos,  # priced with the price data in force
        "messages": len(events),
    }
