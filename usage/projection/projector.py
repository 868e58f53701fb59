"""Keeps the Redis projections following the log: ``catch_up`` from the checkpoint, rebuilds.

The log is the truth. After every ingest commit the writer catches the user up; if that
fails (Redis down, process killed), the next catch-up, by the worker, a read, or
``rebuild_projections``, repairs it from the checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from usage import notify, pricing, store
from usage.events import EventKind, UsageEvent, fingerprint
from usage.projection import redis_store
from usage.projection.batch import Contribution, Owner, contribution
from usage.projection.redis_store import Checkpoint, Lag
from usage.store import Head

log = logging.getLogger(__name__)

CATCH_UP_BATCH = 5000
# Events and owners (projects, sessions, hosts) per Lua script. A script's time grows with
# the buckets and owners its events touch: 10,000 records of as many new sessions took
# 565 ms in one script, and 500 of them 63 ms, Redis stalled for every user meanwhile; 200
# owners still took 23-72 ms, and another user's read (9 round trips) waited behind one
# script after another (bench/abuse.py's 30k-sessions: p99 170-210 ms); 50 take 6-14 ms.
# An agent's batch of 1,000 records of a few sessions stays one script.
APPLY_PART = 1000
APPLY_PART_OWNERS = 50
# Between the scripts of one batch, a pause as long as the last part took: a batch of many
# parts leaves Redis, and its process's CPU, to the other users at least half the time.
# Back to back, the 200 scripts of 10,000 new sessions kept another user's reads at a p99
# of 90-210 ms on two cores; paced, 24-37 ms (3 runs). A batch of one part never waits.
LONGEST_PAUSE_SECONDS = 0.05
clock: Callable[[], float] = time.monotonic  # the clock and the pause, replaceable in tests
pause: Callable[[float], None] = time.sleep


def after_commit(
    user_id: int, events: Sequence[UsageEvent] = (), *, after: Head | None = None
) -> None:
    """Project and announce a just-committed ingest. Never raises: the log already holds
    the data, and anything missed here is caught up later.

    ``events`` are the ingest's own events and ``after`` the user's last event before them:
    when the projection stands exactly there (the usual case) they are applied from memory;
    otherwise the log is read from the checkpoint."""
    try:
        applied = _apply_fresh(user_id, events, after) if events and after else None
        position = applied.position if applied is not None else catch_up(user_id)
    except Exception:
        log.exception("projection catch-up failed for user %s; will retry", user_id)
        return
    notify.changed(user_id, position)


def after_limits_changed(user_id: int) -> None:
    """Official limits changed: the log did not move, so the prompt asks for a refresh."""
    _ask_for_refresh(user_id, "new limits")


def after_expiry(user_id: int) -> None:
    """Retention took events out: the checkpoint did not move, so the prompt asks for a
    refresh (an open dashboard's totals drop as the horizon passes)."""
    _ask_for_refresh(user_id, "expired events")


def _ask_for_refresh(user_id: int, what: str) -> None:
    try:
        stored = redis_store.checkpoint(user_id)
    except Exception:
        log.warning("could not announce %s for user %s", what, user_id, exc_info=True)
        return
    notify.changed(user_id, stored.position if stored else 0, refresh=True)


def catch_up(user_id: int) -> int:
    """Apply the user's events after the checkpoint; returns the new checkpoint's position.
    A checkpoint this log cannot vouch for (``trusted``) means: rebuild."""
    current = trusted(user_id)
    while True:
        if current is None:
            current = _restart(user_id)
            continue
        events = store.events_after(user_id, current.position, limit=CATCH_UP_BATCH)
        if not events:
            return current.position
        applied = _apply(user_id, events, after=current)
        # None: another writer moved the checkpoint meanwhile, or a rebuild removed it;
        # continue from where it is now, if this log vouches for it.
        current = applied if applied is not None else trusted(user_id)


def binding() -> str:
    """What a projection is of, as its checkpoint names it: this log (``log_identity``),
    priced with this price data (its fingerprint). A projection of another log, or built
    with other price data (before a genai-prices upgrade or an overlay edit), is rebuilt."""
    return f"{store.log_identity()}{PRICES}{pricing.price_data().fingerprint}"


PRICES = "@"  # between the log identity and the price data's fingerprint in a binding


def trusted(user_id: int) -> Checkpoint | None:
    """The user's checkpoint, if it is one of this log and price data (``binding``), and a
    position that holds, in this log, the event it names (a projection ahead of the log,
    or of a log whose positions now hold other events, is not). None: rebuild."""
    stored = redis_store.checkpoint(user_id)
    if stored is None or stored.log != binding():
        return None
    position, event = stored.witness()
    if position and store.fingerprint_at(user_id, position) != event:
        return None
    return stored


def _restart(user_id: int) -> Checkpoint | None:
    """Start the user's projection afresh when no trusted checkpoint is left. Under the lock
    and only if still untrusted: a second reader that found it gone at the same moment must
    not drop what the first is already building (keys created between its scan and its
    delete would survive and be counted twice). Returns the checkpoint to continue from."""
    with redis_store.rebuild_lock(user_id):
        if trusted(user_id) is None:
            # A partial or foreign projection would be added to. Dropping also removes
            # what earlier layout versions left: a new layout finds every user this way.
            redis_store.drop_user(user_id, earlier_layouts=True)
            redis_store.reset_checkpoint(user_id, binding())
    return trusted(user_id)


def _apply_fresh(user_id: int, events: Sequence[UsageEvent], after: Head) -> Checkpoint | None:
    # The Lua script itself refuses a checkpoint other than ``after`` (None: catch up).
    checkpoint = Checkpoint(binding(), after.position, after.event)
    return _apply(user_id, events, after=checkpoint, priced_now=True)


def _apply(
    user_id: int, events: Sequence[UsageEvent], *, after: Checkpoint, priced_now: bool = False
) -> Checkpoint | None:
    """Apply ``events`` (all of the user's after ``after``) in parts of ``APPLY_PART``, each
    one script with its checkpoint: the projection does not depend on where a batch is
    split. None when a part is refused (the caller re-reads the checkpoint)."""
    contributions = _contributions(user_id, events, priced_now=priced_now)
    parts = _parts(contributions)
    current: Checkpoint | None = after
    for number, (start, end) in enumerate(parts):
        assert current is not None
        last = events[end - 1]
        began = clock()
        current = redis_store.apply(
            user_id,
            contributions[start:end],
            after=current,
            last_event=fingerprint(last.record.message_id, last.record.request_id, last.revision),
        )
        if current is None:
            return None
        if number + 1 < len(parts):
            pause(min(clock() - began, LONGEST_PAUSE_SECONDS))
    return current


def _parts(contributions: Sequence[tuple[int, Sequence[Contribution]]]) -> list[tuple[int, int]]:
    """[start, end) of each part: at most ``APPLY_PART`` events touching at most
    ``APPLY_PART_OWNERS`` owners."""
    parts: list[tuple[int, int]] = []
    start, owners = 0, set[Owner]()
    for index, (_, changes) in enumerate(contributions):
        touched = {change.owner for change in changes}
        if index > start and (
            index - start == APPLY_PART or len(owners | touched) > APPLY_PART_OWNERS
        ):
            parts.append((start, index))
            start, owners = index, set()
        owners |= touched
    parts.append((start, len(contributions)))
    return parts


# --- retention: taking expired events back out ---------------------------------------------


class Expiry(NamedTuple):
    """A part of a user's expired events and what taking them out of the projection
    standing at ``after`` (of build ``epoch``) takes back."""

    events: list[UsageEvent]
    changes: list[tuple[int, list[Contribution]]]
    after: Checkpoint
    epoch: str


def expiry(user_id: int, after: Checkpoint, epoch: str, expired: Sequence[UsageEvent]) -> Expiry:
    """The first part (as ``_apply`` cuts parts) of ``expired``: old events at or below the
    checkpoint ``after``, so applied. Each takes back its copy when that copy is the one the
    projection counts: the newest revision at or below ``after`` of its message, and not a
    retraction. (A revision below the checkpoint already took back the copy it replaced;
    one above it, not yet applied, will find its predecessor gone from the log and take
    nothing back.)"""
    counted = store.newest_revisions_through(
        user_id, [event.record.message_id for event in expired], after.position
    )
    changes = []
    for event in expired:
        key = (event.record.message_id, event.record.request_id)
        newest = event.counted and counted.get(key) == event.revision
        assert event.position is not None
        changes.append((event.position, [contribution(event, sign=-1)] if newest else []))
    _, end = _parts(changes)[0]
    return Expiry(list(expired[:end]), changes[:end], after, epoch)


def expiring_from(user_id: int) -> tuple[Checkpoint, str] | None:
    """The user's trusted checkpoint and its build, for retention (under ``expiry_lock``);
    None when there is no projection to take anything back from."""
    epoch = redis_store.epoch(user_id)
    current = trusted(user_id)
    return None if current is None else (current, epoch)


def take_back(user_id: int, part: Expiry, newest_left: Head) -> None:
    """Take ``part`` (just deleted from the log) out of the projection. A projection reset
    since the part was read (Redis lost the user's keys, and a rebuild ran) may or may not
    hold it: it is forgotten, and rebuilt from the pruned log by the next catch-up."""
    to = part.after.vouched_by(newest_left)
    if not redis_store.take_back(user_id, part.changes, after=part.after, to=to, epoch=part.epoch):
        log.warning("the projection of user %s was reset during retention: rebuilding", user_id)
        redis_store.forget(user_id)


expiry_lock = redis_store.rebuild_lock  # no reset of the projection while a part leaves


def ensure_current(user_id: int) -> None:
    """Before answering a read: rebuild when Redis has no projection of this log for the
    user (lost, another log's, or ahead of this one)."""
    if trusted(user_id) is None:
        catch_up(user_id)


def rebuild_user(user_id: int, *, earlier_layouts: bool = False) -> int:
    with redis_store.rebuild_lock(user_id):  # not while another rebuild is dropping keys
        redis_store.drop_user(user_id, earlier_layouts=earlier_layouts)
        redis_store.reset_checkpoint(user_id, binding())
    return catch_up(user_id)


def rebuild_all() -> dict[int, int]:
    """Rebuild every projection from the log (``manage.py rebuild_projections``).

    User by user, each under its rebuild lock, not one bulk delete: on a live server a read
    that found a checkpoint already deleted would start rebuilding that user while the bulk
    delete, working from its earlier scan, still removed keys the read had just built.
    Users with a projection but no events left get an empty one. One user's failure is
    logged and does not stop the others."""
    user_ids = set(store.user_ids_with_events()) | set(redis_store.projected_user_ids())
    rebuilt = {}
    for user_id in sorted(user_ids):
        try:
            rebuilt[user_id] = rebuild_user(user_id, earlier_layouts=True)
        except Exception:
            log.exception("rebuilding the projection of user %s failed", user_id)
    return rebuilt


def built_with_other_prices() -> list[int]:
    """Users whose projection is of this log but was built with other price data."""
    log_id, current = store.log_identity(), binding()
    stored = redis_store.checkpoints(redis_store.projected_user_ids())
    return sorted(
        user_id
        for user_id, checkpoint in stored.items()
        if checkpoint.log.partition(PRICES)[0] == log_id and checkpoint.log != current
    )


def reprice_at_start() -> list[int]:
    """Say which price data this process runs with; rebuild (re-price) the projections
    built with other price data. The worker runs it as it starts; a read or an ingest
    rebuilds any it has not reached yet (``trusted``). Returns the users rebuilt."""
    log.info("price data: %s", pricing.price_data().describe())
    stale = built_with_other_prices()
    if not stale:
        return []
    log.warning(
        "the projections of %s user(s) were built with other price data: re-pricing them",
        len(stale),
    )
    rebuilt = []
    for user_id in stale:
        try:
            position = rebuild_user(user_id)
        except Exception:
            log.exception("re-pricing the projection of user %s failed", user_id)
            continue
        rebuilt.append(user_id)
        # Same position, other costs: open dashboards are asked for a new snapshot.
        notify.changed(user_id, position, refresh=True)
    return rebuilt


def measure_lag(*, now: float) -> Lag:
    """How far every user's projection stands behind their last event now (``Lag``): one
    query of the log's heads and one round trip for every checkpoint. A checkpoint of
    another log or price data counts as none: that projection is rebuilt from the start."""
    heads = store.heads()
    stored = redis_store.checkpoints(list(heads))
    current = binding()
    behind = []
    for user_id, head in heads.items():
        checkpoint = stored.get(user_id)
        done = 0
        # (Retention may have deleted the user's events up to and past a checkpoint's.)
        if checkpoint is not None and checkpoint.log == current:
            done = checkpoint.position
        if head > done:
            behind.append(head - done)
    return Lag(max(behind, default=0), len(behind), now)


def record_lag(*, now: float) -> Lag:
    """Measure the lag and keep it in Redis for the readiness probe and the metrics, which
    must not measure it themselves (it reads every user's checkpoint). The worker does it at
    the start of every tick, before catching up: it records what the catch-up repairs."""
    lag = measure_lag(now=now)
    redis_store.record_lag(lag)
    return lag


def catch_up_all() -> dict[int, int]:
    """Catch every user up; one user's failure is logged and does not stop the others."""
    caught_up = {}
    for user_id in store.user_ids_with_events():
        try:
            caught_up[user_id] = catch_up(user_id)
        except Exception:
            log.exception("catch-up failed for user %s; will retry next tick", user_id)
    return caught_up


def _contributions(
    user_id: int, events: Sequence[UsageEvent], *, priced_now: bool = False
) -> list[tuple[int, list[Contribution]]]:
    """Each event's effect: a revision or retraction first takes back the copy it replaces
    (looked up in the log; if retention pruned it, the rebuild that followed the prune
    already removed it), then adds its own copy. ``priced_now``: ``events`` are an ingest's
    own, priced with the price data in force (a copy read from the log is priced again)."""
    previous = store.previous_revisions(user_id, events)
    in_batch = {(e.record.message_id, e.record.request_id, e.revision): e for e in events}
    out = []
    for event in events:
        changes = []
        if event.revision:
            key = (event.record.message_id, event.record.request_id, event.revision - 1)
            ours = key in in_batch  # else from the log: priced again
            replaced = in_batch[key] if ours else previous.get(key)
            if replaced is not None and replaced.counted:
                changes.append(contribution(replaced, sign=-1, priced_now=priced_now and ours))
        if event.kind is not EventKind.RETRACTED:
            changes.append(contribution(event, sign=1, priced_now=priced_now))
        assert event.position is not None
        out.append((event.position, changes))
    return out
