"""Per-process bookkeeping for dashboard connections. ``realtime.routing`` builds the
process's one hub and hands it to every consumer it starts.

- Snapshots are computed once per (user, settings) and change, and shared by every
  connection that wants them, instead of once per connection. At most
  MAX_SNAPSHOTS_PER_USER are kept per user, the least recently used dropped first: each
  ``configure`` may name new settings, and a cache keyed by whatever clients send must not
  grow with what they send.
- A resync loop reads the checkpoints of the connected users every few seconds and wakes the
  connections that are behind: channel-layer prompts are at most once, so a lost prompt
  costs at most one resync period, never an update. The same loop checks the connections'
  credentials again: a deleted or replaced token, or a deactivated user, is revoked
  (closed 4401) within one period, not whenever the client goes away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_SNAPSHOTS_PER_USER = 8


@dataclass(frozen=True, slots=True)
class Snapshot:
    position: int
    text: str  # the serialised frame, shared by every connection that sends it
    computed_at: float  # time.monotonic()
    next_reset_at: float | None  # epoch seconds of the active window's end, if any


# (user id, token key): the credentials a connection was opened with; no key for a session.
Credential = tuple[int, str | None]


class Listener(Protocol):
    user_id: int
    credential: Credential

    def wake(self, position: int) -> None: ...

    def revoke(self) -> None: ...


SnapshotKey = tuple[int, tuple[object, ...]]
Compute = Callable[[], Coroutine[Any, Any, Snapshot]]


class Hub:
    def __init__(self) -> None:
        self._listeners: dict[int, set[Listener]] = {}
        # Per user, least recently used first.
        self._latest: dict[int, OrderedDict[SnapshotKey, Snapshot]] = {}
        self._computing: dict[SnapshotKey, asyncio.Future[Snapshot]] = {}
        self._resync_task: asyncio.Task[None] | None = None

    def join(self, listener: Listener) -> None:
        self._listeners.setdefault(listener.user_id, set()).add(listener)

    def leave(self, listener: Listener) -> None:
        listeners = self._listeners.get(listener.user_id)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[listener.user_id]
            self._forget_user(listener.user_id)

    async def snapshot(
        self, key: SnapshotKey, *, min_position: int, max_age: float, compute: Compute
    ) -> Snapshot:
        """A snapshot at ``min_position`` or later and at most ``max_age`` seconds old:
        the cached one, the one being computed, or a new one."""
        cached = self._cached(key)
        if cached and cached.position >= min_position and _age(cached) <= max_age:
            return cached
        running = self._computing.get(key)
        if running is not None:
            result = await asyncio.shield(running)
            if result.position >= min_position:
                return result
        return await self._compute(key, compute)

    async def _compute(self, key: SnapshotKey, compute: Compute) -> Snapshot:
        # A task of its own, awaited through a shield: every connection with this key waits
        # for it, and one waiter going away (a closed socket cancels its sender) must only
        # stop waiting, not cancel the work and hand the others a CancelledError.
        task: asyncio.Task[Snapshot] = asyncio.get_running_loop().create_task(compute())
        self._computing[key] = task
        task.add_done_callback(partial(self._computed, key))
        return await asyncio.shield(task)

    def _computed(self, key: SnapshotKey, task: asyncio.Task[Snapshot]) -> None:
        if self._computing.get(key) is task:
            del self._computing[key]
        if task.cancelled() or task.exception() is not None:
            return  # every waiter gets the exception from its own await
        result = task.result()
        # Only for users still connected: _forget_user ran when the last one left.
        if key[0] not in self._listeners:
            return
        cache = self._latest.setdefault(key[0], OrderedDict())
        latest = cache.get(key)
        if latest is None or latest.position <= result.position:
            cache[key] = result
            cache.move_to_end(key)
            while len(cache) > MAX_SNAPSHOTS_PER_USER:
                cache.popitem(last=False)

    def _cached(self, key: SnapshotKey) -> Snapshot | None:
        cache = self._latest.get(key[0])
        if cache is None or key not in cache:
            return None
        cache.move_to_end(key)
        return cache[key]

    def cached_snapshots(self, user_id: int) -> list[SnapshotKey]:
        """The keys cached for ``user_id``, least recently used first."""
        return list(self._latest.get(user_id, ()))

    def ensure_resync(
        self,
        interval: float,
        read_checkpoints: ReadCheckpoints,
        revoked: ReadRevoked | None = None,
    ) -> None:
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = asyncio.get_running_loop().create_task(
                self._resync(interval, read_checkpoints, revoked)
            )

    async def _resync(
        self, interval: float, read_checkpoints: ReadCheckpoints, revoked: ReadRevoked | None
    ) -> None:
        while self._listeners:
            await asyncio.sleep(interval)
            if revoked is not None:
                await self._revoke(revoked)
            try:
                positions = await read_checkpoints(list(self._listeners))
            except Exception:
                log.warning("resync could not read checkpoints", exc_info=True)
                continue
            for user_id, position in positions.items():
                for listener in list(self._listeners.get(user_id, ())):
                    listener.wake(position)
        self._resync_task = None

    async def _revoke(self, revoked: ReadRevoked) -> None:
        listeners = [listener for group in self._listeners.values() for listener in group]
        try:
            gone = await revoked(sorted({listener.credential for listener in listeners}, key=str))
        except Exception:
            log.warning("resync could not check credentials", exc_info=True)
            return
        for listener in listeners:
            if listener.credential in gone:
                listener.revoke()

    def _forget_user(self, user_id: int) -> None:
        self._latest.pop(user_id, None)


ReadCheckpoints = Callable[[list[int]], Awaitable[dict[int, int]]]
# The credentials among those given that no longer hold.
ReadRevoked = Callable[[list[Credential]], Awaitable[set[Credential]]]


def _age(snapshot: Snapshot) -> float:
    return time.monotonic() - snapshot.computed_at
