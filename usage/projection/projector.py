"""Keeps the Redis projections following the log: ``catch_up`` from the checkpoint, rebuilds.

The log is the truth. After every ingest commit the writer catches the user up; if that
fails (Redis down, process killed), the next catch-up, by the worker, a read, or
``rebuild_projections``, repairs it from the checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from usage import notify, store
from usage.events import EventKind, UsageEvent
from usage.projection import redis_store
from usage.projection.batch import Contribution, contribution

log = logging.getLogger(__name__)

CATCH_UP_BATCH = 5000


def after_commit(user_id: int, events: Sequence[UsageEvent] = (), *, after: int = -1) -> None:
    """Project and announce a just-committed ingest. Never raises: the log already holds
    the data, and anything missed here is caught up later.

    ``events`` are the ingest's own events and ``after`` the user's last position before
    them: when the projection stands exactly there (the usual case) they are applied from
    memory; otherwise the log is read from the checkpoint."""
    try:
        position = _apply_fresh(user_id, events, after) if events else None
        if position is None:
            position = catch_up(user_id)
    except Exception:
        log.exception("projection catch-up failed for user %s; will retry", user_id)
        return
    notify.changed(user_id, position)


def after_limits_changed(user_id: int) -> None:
    """Official limits changed: the log did not move, so the prompt asks for a refresh."""
    try:
        position = redis_store.checkpoint(user_id) or 0
    except Exception:
        log.warning("could not announce new limits for user %s", user_id, exc_info=True)
        return
    notify.changed(user_id, position, refresh=True)


def catch_up(user_id: int) -> int:
    """Apply the user's events after the checkpoint; returns the new checkpoint."""
    position = redis_store.checkpoint(user_id)
    while True:
        if position is None:
            position = _restart(user_id)
            continue
        events = store.events_after(user_id, position, limit=CATCH_UP_BATCH)
        if not events:
            return position
        applied = redis_store.apply(user_id, _contributions(user_id, events), after=position)
        # None: another writer moved the checkpoint meanwhile, or a rebuild removed it;
        # continue from where it is now (a missing one means: restart).
        position = applied if applied is not None else redis_store.checkpoint(user_id)


def _restart(user_id: int) -> int | None:
    """Start the user's projection afresh when its checkpoint is missing. Under the lock
    and only if still missing: a second reader that found it gone at the same moment must
    not drop what the first is already building (keys created between its scan and its
    delete would survive and be counted twice). Returns the checkpoint to continue from."""
    with redis_store.rebuild_lock(user_id):
        if redis_store.checkpoint(user_id) is None:
            # A partial projection would be added to twice. A missing checkpoint is also how
            # a new layout version finds every user: the earlier layout's keys go too.
            redis_store.drop_user(user_id, earlier_layouts=True)
            redis_store.reset_checkpoint(user_id)
    return redis_store.checkpoint(user_id)


def _apply_fresh(user_id: int, events: Sequence[UsageEvent], after: int) -> int | None:
    if after < 0:
        return None
    # The Lua script itself refuses a missing or moved checkpoint (None: catch up instead).
    return redis_store.apply(user_id, _contributions(user_id, events), after=after)


def ensure_current(user_id: int) -> None:
    """Before answering a read: rebuild when Redis has lost the user's projection."""
    if redis_store.checkpoint(user_id) is None:
        catch_up(user_id)


def rebuild_user(user_id: int, *, earlier_layouts: bool = False) -> int:
    with redis_store.rebuild_lock(user_id):  # not while another rebuild is dropping keys
        redis_store.drop_user(user_id, earlier_layouts=earlier_layouts)
        redis_store.reset_checkpoint(user_id)
    return catch_up(user_id)


def rebuild_all() -> dict[int, int]:
    """Rebuild every projection from the log (``manage.py rebuild_projections``).

    User by user, each under its rebuild lock, not one bulk delete: on a live server a read
    that found a checkpoint already deleted would start rebuilding that user while the bulk
    delete, working from its earlier scan, still removed keys the read had just built.
    Users with a projection but no events left get an empty one."""
    user_ids = set(store.user_ids_with_events()) | set(redis_store.projected_user_ids())
    return {user_id: rebuild_user(user_id, earlier_layouts=True) for user_id in sorted(user_ids)}


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
    user_id: int, events: Sequence[UsageEvent]
) -> list[tuple[int, list[Contribution]]]:
    """Each event's effect: a revision or retraction first takes back the copy it replaces
    (looked up in the log; if retention pruned it, the rebuild that followed the prune
    already removed it), then adds its own copy."""
    previous = store.previous_revisions(user_id, events)
    in_batch = {(e.record.message_id, e.record.request_id, e.revision): e for e in events}
    out = []
    for event in events:
        changes = []
        if event.revision:
            key = (event.record.message_id, event.record.request_id, event.revision - 1)
            replaced = in_batch.get(key) or previous.get(key)
            if replaced is not None and replaced.counted:
                changes.append(contribution(replaced, sign=-1))
        if event.kind is not EventKind.RETRACTED:
            changes.append(contribution(event, sign=1))
        assert event.position is not None
        out.append((event.position, changes))
    return out
