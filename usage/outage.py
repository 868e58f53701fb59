"""The event log's database down: writes refused at once, reads answered from Redis.

Every read answers from the projections in Redis; the database only refines the answer:
checking that the projection is of this log (``projector.ensure_current``), Claude's
official limit readings, the history of completed windows, and the token's owner. While the
database is down those steps are skipped (the token answered from what this process last
verified, ``usage.api.authentication``) and the read answers from what Redis holds: the log
cannot change while nobody can write to it. A write is refused ``503 LOG_UNAVAILABLE`` at
once: nothing is stored, and the agent sends it again.

Once the database failed, this process takes it to be down until a use of it succeeds, and
only one request at a time tries it, at most every ``PROBE_SECONDS``: the others do not wait
for the connection pool's timeout (30 s) each. Only PostgreSQL goes down this way: an error
of SQLite, or one that PostgreSQL answered (a lock timeout), fails its own request only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")
PROBE_SECONDS = 5.0


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down = False
        self.probing = False  # a request is trying the database
        self.next_probe = 0.0  # monotonic: when the next request may try it
        self.clock: Callable[[], float] = time.monotonic  # replaceable in tests


_state = _State()


def skip() -> bool:
    """True: don't use the database now (it is down, and another request tries it, or tried
    it less than PROBE_SECONDS ago). False: use it, then report ``succeeded``/``failed``,
    or ``released`` when the request ended otherwise."""
    with _state.lock:
        if not _state.down:
            return False
        if _state.probing or _state.clock() < _state.next_probe:
            return True
        _state.probing = True
        return False


def succeeded() -> None:
    with _state.lock:
        if _state.down:
            log.warning("the database is back")
        _state.down = _state.probing = False


def failed(error: Exception) -> None:
    if not _connection_lost(error):
        return
    with _state.lock:
        if not _state.down:
            log.warning("the database is unavailable; reads answer from Redis: %s", error)
        _state.down, _state.probing = True, False
        _state.next_probe = _state.clock() + PROBE_SECONDS


def _connection_lost(error: Exception) -> bool:
    """PostgreSQL out of reach: no connection (no SQLSTATE: refused, reset, the pool's
    timeout), a connection exception (class 08) or the server shutting down (57P0x). Not an
    error the server answered with (a lock timeout, a deadlock): those are one request's.
    Nor the pool's timeout when the pool made its connections without an error since it was
    last asked: they work, and are all busy (a burst of requests); refusing every write for
    it would turn a burst into an outage."""
    if connection.vendor != "postgresql":
        return False
    cause = error.__cause__
    if isinstance(cause, PoolTimeout) and _connecting_fine(_pool()):
        return False
    state = getattr(cause, "sqlstate", None)
    return state is None or state.startswith(("08", "57P0"))


def _pool() -> ConnectionPool | None:
    """This process's pool of connections to the log's database (None without one)."""
    return getattr(connection, "pool", None)


def _connecting_fine(pool: ConnectionPool | None) -> bool:
    """No failed attempt to connect since the last call (which takes the pool's counters:
    nothing else reads them). A pool that cannot reach the database keeps trying, and
    failing, in the background while requests wait."""
    return pool is not None and not pool.pop_stats().get("connections_errors")


def released() -> None:
    with _state.lock:
        _state.probing = False


def optional(step: Callable[[], T], otherwise: T) -> T:
    """``step()``, or ``otherwise`` while the database is down."""
    if skip():
        return otherwise
    try:
        result = step()
    except OperationalError as error:
        failed(error)
        return otherwise
    except BaseException:
        released()
        raise
    succeeded()
    return result
