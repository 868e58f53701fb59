"""Retention: events older than the horizon leave the log and the projections together.

Nothing is rebuilt. A user's expired events go a part at a time (``projector.expiry``: at
most ``projector.APPLY_PART`` events of ``APPLY_PART_OWNERS`` owners): the part is deleted
from the log, then its contributions are taken back from the projection through the same
checkpointed script that applies new events (``projector.take_back``). So retention costs
what it removes, and a reader sees the projection before a part or after it, never a
projection being rebuilt.

Only events at or below the projection's checkpoint go: those are the ones it applied, and
an ingest or catch-up running meanwhile only ever applies events above it. An old event
the projection has not reached yet stays until it has (the next tick, normally). Each part
runs under the user's rebuild lock, so the projection cannot be reset between reading the
checkpoint and taking the part back; should Redis lose the user's keys (lock included)
anyway, the script sees another build (``epoch``) and the projection is rebuilt from the
pruned log instead.
"""

from __future__ import annotations

import logging
from datetime import datetime

from usage import store
from usage.projection import projector

log = logging.getLogger(__name__)


def prune(cutoff: datetime) -> dict[int, int]:
    """Delete every event that happened before ``cutoff``, taking each out of its user's
    projection, and prompt the user's open dashboards for a new snapshot. Returns the
    deleted counts by user. One user's failure is logged and does
    not stop the others (their events are tried again next time)."""
    deleted = {}
    for user_id in store.user_ids_with_events_before(cutoff):
        try:
            count = prune_user(user_id, cutoff)
        except Exception:
            log.exception("retention failed for user %s; retrying next tick", user_id)
            continue
        if count:
            deleted[user_id] = count
            projector.after_expiry(user_id)
    return deleted


def prune_user(user_id: int, cutoff: datetime) -> int:
    """Delete the user's events older than ``cutoff`` that the projection has applied (all
    of them when there is no projection to take them from), a part at a time. Their
    positions are read once and walked part by part (a backlog of N expired events is
    not read N/1,000 times), and read again when they run out."""
    deleted = 0
    pending: list[int] = []
    while True:
        with projector.expiry_lock(user_id):
            count, pending = _prune_part(user_id, cutoff, pending)
        if not count:
            return deleted
        deleted += count


def _prune_part(user_id: int, cutoff: datetime, pending: list[int]) -> tuple[int, list[int]]:
    """Prune the first part of ``pending`` (expired positions read earlier); returns how
    many events went and the positions still pending."""
    standing = projector.expiring_from(user_id)
    if standing is None:
        # No projection of this log: whichever process builds one reads the pruned log.
        return store.delete_before(user_id, cutoff), []
    after, epoch = standing
    if not pending or pending[-1] > after.position:
        # (A checkpoint below what was read: the projection was reset meanwhile.)
        pending = store.expired_positions(user_id, cutoff, through=after.position)
    expired = store.events_at(user_id, pending[: projector.APPLY_PART])
    if not expired:
        return 0, []
    part = projector.expiry(user_id, after, epoch, expired)
    positions = [event.position for event in part.events if event.position is not None]
    newest_left = store.delete_events(user_id, positions, through=after.position)
    projector.take_back(user_id, part, newest_left)
    return len(positions), [position for position in pending if position > positions[-1]]
