"""Readiness: can this process serve? The database and Redis must answer; the projection
lag is reported, not judged.

Each probe is a few round trips whatever the data holds: ``SELECT 1`` (none while the
process knows the database is down, ``usage.outage``), a Redis ``PING`` and
one ``GET`` of the lag the worker recorded on its last tick (measuring it here would read
every user's checkpoint, on every poll of a load balancer). Lag does not make a process
unready: every process shares the one log and Redis, so taking one out of rotation for it
would take them all, and reads repair a missing projection themselves; alert on it from
the metrics instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import DatabaseError, OperationalError, connection

from usage import outage
from usage.projection import redis_store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    database: bool
    redis: bool
    lag: redis_store.Lag | None  # None: never recorded, or Redis out of reach

    @property
    def ready(self) -> bool:
        return self.database and self.redis


def readiness() -> Readiness:
    redis_answers, lag = _redis()
    return Readiness(database=_database(), redis=redis_answers, lag=lag)


def _database() -> bool:
    """``SELECT 1``, unless this process knows the database is down (``usage.outage``) and
    another request tries it, or tried it less than ``PROBE_SECONDS`` ago: then at once,
    not after the pool's timeout. A probe whose turn it is tries it for everyone."""
    if outage.skip():
        return False
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except OperationalError as error:
        outage.failed(error)
        log.warning("readiness: database unavailable: %s", error)
        return False
    except DatabaseError as error:
        outage.released()
        log.warning("readiness: database unavailable: %s", error)
        return False
    outage.succeeded()
    return True


def _redis() -> tuple[bool, redis_store.Lag | None]:
    try:
        redis_store.ping()
        return True, redis_store.recorded_lag()
    except redis_store.UNAVAILABLE as error:
        log.warning("readiness: redis unavailable: %s", error)
        return False, None
