"""Rate limits per token and per address, in fixed one-minute windows.

DRF's ``SimpleRateThrottle`` keeps a list of every request's time per client and rewrites
it on each request: O(rate) work and bytes per request, 12,000 entries for a backfill.
Here a window is one Redis counter (``backend.cache.CountingRedisCache.count``: INCR and
EXPIRE in one round trip), shared by every daphne process. A fixed window lets a client
send up to twice its limit across a window boundary; for limits this far above normal use
that is the price of O(1).

- authenticated: per user (an authtoken user has exactly one token, so per token), writes
  (POST, PUT, PATCH, DELETE) and reads (the rest) counted apart;
- anonymous: per address, as daphne saw it (``backend/proxies.py`` decides whether a
  proxy's ``X-Forwarded-For`` counts; ``NUM_PROXIES = 0`` keeps DRF from reading it again).

DRF checks throttles after authentication and permissions: a request without valid
credentials is answered 401 before it is counted, so the anonymous limit covers what
anonymous clients can reach (the schema).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from usage.projection.redis_store import UNAVAILABLE as PROJECTIONS_UNREACHABLE

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class WindowCounter(Protocol):
    def count(self, key: str, *, expires_in: int) -> int: ...


class RequestRateThrottle(BaseThrottle):
    # The clock, replaceable in tests (as DRF's own throttles do it).
    timer: Callable[[], float] = time.time

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        scope, who, limit = self.scope_of(request)
        if limit <= 0:
            return True  # 0: this limit is off
        now = self.timer()  # read once: the window and the wait agree
        window = int(now // WINDOW_SECONDS)
        counter = cast(WindowCounter, caches["default"])
        count = counter.count(f"throttle:{scope}:{who}:{window}", expires_in=2 * WINDOW_SECONDS)
        self.retry_after = (window + 1) * WINDOW_SECONDS - now
        return count <= limit

    def scope_of(self, request: Request) -> tuple[str, str, int]:
        """(scope, who is counted, its limit per minute)."""
        user = request.user
        if user is None or not user.is_authenticated:
            limit = settings.USAGE_THROTTLE_ANONYMOUS_PER_MINUTE
            return "anonymous", str(self.get_ident(request)), limit
        if request.method in WRITE_METHODS:
            return "write", f"user{user.pk}", settings.USAGE_THROTTLE_WRITE_PER_MINUTE
        return "read", f"user{user.pk}", settings.USAGE_THROTTLE_READ_PER_MINUTE

    def wait(self) -> float | None:
        return self.retry_after


class InFlightThrottle(BaseThrottle):
    """At most ``USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN`` reads and
    ``USAGE_MAX_WRITES_IN_FLIGHT_PER_TOKEN`` writes of one user run at once, across every
    process. A per-minute limit still lets one token fill every worker with heavy reads for a
    while (bench/abuse.py's request flood: 8 clients held both CPUs, another user's p99 over
    300 ms, and still 130-200 ms with 4 or 2 reads at once on two cores); a bound on what one
    token runs at once leaves the other users the rest. Writes have a higher bound: the agent
    sends two batches at once, and one user may have several machines backfilling.

    A request over the bound waits for a slot, up to ``USAGE_IN_FLIGHT_WAIT_SECONDS``, so a
    dashboard that asks for five things at once gets them one after the other rather than
    429s. At most ``MAX_WAITING`` of a token wait, and one more is refused at once: a waiting
    request holds a thread (it gives its database connection back first, so waiting users
    cannot empty a process's pool). A refusal carries ``Retry-After: 1``.

    The slots are one Redis sorted set per user and kind: a request takes one before it runs
    and gives it back when it ends (``ReleaseInFlight``, a middleware, so it ends whatever
    the view did). Each slot is leased for ``SLOT_LEASE_SECONDS``: a process stopped or
    killed mid-request leaves its slot held that long at most, however often the user asks
    meanwhile (a refused try writes nothing). A waiting request holds no slot; it tries
    again after a pause, and holds a place among the ``MAX_WAITING`` while it waits, leased
    the same way (for the longest wait and a margin)."""

    # The clock and the pause between tries, replaceable in tests.
    timer: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __init__(self) -> None:
        self.refused = False

    def allow_request(self, request: Request, view: Any) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            return True
        kind = "write" if request.method in WRITE_METHODS else "read"
        limit = getattr(settings, f"USAGE_MAX_{kind.upper()}S_IN_FLIGHT_PER_TOKEN")
        if limit <= 0:
            return True
        key = in_flight_key(kind, user.pk)
        slot = self._take_a_slot(key, limit)
        self.refused = slot is None
        if slot is not None:
            # given back after the response (ReleaseInFlight)
            request._request.usage_in_flight = (key, slot)  # type: ignore[attr-defined]
        return not self.refused

    def _take_a_slot(self, key: str, limit: int) -> str | None:
        counter = cast(InFlightCounter, caches["default"])
        slot = counter.take_slot(key, limit=limit, lease_seconds=SLOT_LEASE_SECONDS)
        if slot is not None:
            return slot
        # Waiting requests hold no slot, so they hold a place to wait in, while they wait.
        waiting = f"{key}:waiting"
        place = counter.take_slot(waiting, limit=MAX_WAITING, lease_seconds=WAIT_LEASE_SECONDS)
        if place is None:
            return None
        try:
            deadline = self.timer() + settings.USAGE_IN_FLIGHT_WAIT_SECONDS
            pause = FIRST_PAUSE_SECONDS
            while self.timer() + pause <= deadline:
                if not connection.in_atomic_block:
                    connection.close()  # back to the pool (PostgreSQL); the view reopens it
                self.sleep(pause)
                slot = counter.take_slot(key, limit=limit, lease_seconds=SLOT_LEASE_SECONDS)
                if slot is not None:
                    return slot
                pause = min(2 * pause, LAST_PAUSE_SECONDS)
            return None
        finally:
            counter.give_back(waiting, place)

    def wait(self) -> float | None:
        return 1.0 if self.refused else None


# Requests of one token waiting for a slot at once (each holds a thread).
MAX_WAITING = 8
# How long a slot stays taken if its request never gives it back (its process died): far
# longer than any request runs (an ingest of the largest batch takes a few seconds).
SLOT_LEASE_SECONDS = 60
# A place to wait in: the longest wait (USAGE_IN_FLIGHT_WAIT_SECONDS, at most 30 s) and more.
WAIT_LEASE_SECONDS = 60
# A waiting request tries again after 10 ms, then 20, 40, 50, 50 ... ms.
FIRST_PAUSE_SECONDS = 0.01
LAST_PAUSE_SECONDS = 0.05


class InFlightCounter(WindowCounter, Protocol):
    def take_slot(self, key: str, *, limit: int, lease_seconds: float) -> str | None: ...

    def give_back(self, key: str, slot: str) -> None: ...


def in_flight_key(kind: str, user_id: int) -> str:
    """The slots of a user's reads or writes (``kind``)."""
    return f"in-flight:{kind}:user{user_id}"


class ReleaseInFlight:
    """Django middleware: the request counted by ``InFlightThrottle`` is over."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            return self.get_response(request)
        finally:
            taken = getattr(request, "usage_in_flight", None)
            if taken is not None:
                _release(*taken)


def _release(key: str, slot: str) -> None:
    """Give the slot back. With Redis gone, the answer (a 503 by then) stands: the slot's
    lease ends by itself."""
    try:
        cast(InFlightCounter, caches["default"]).give_back(key, slot)
    except PROJECTIONS_UNREACHABLE as error:
        log.warning("in-flight count not released, redis unavailable: %s", error)
