"""Prometheus metrics: what they count, and the text ``/metrics`` serves.

Every daphne worker of ``python -m backend.serve`` counts in its own process. The launcher
names a fresh directory in ``PROMETHEUS_MULTIPROC_DIR`` before it starts them
(``operations/multiprocess.py``); prometheus-client then keeps each process's values in
files there, and whichever worker answers a scrape sums them all. The variable must be set
before ``prometheus_client`` is imported (it picks its value store then), which the
inherited environment guarantees. A daphne started on its own has no such directory and
serves its own process's registry.

Labels are bounded by construction: a route is its URL pattern, never the path a client
sent; a method outside the usual few is ``other``; a rejection reason is the code the
server gave, from a fixed set; no label ever holds a token, a user or a name a client chose.
The projection lag is not a per-process figure: the worker records it in Redis
(``usage.projection.projector.record_lag``) and a scrape reads it once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from operations.multiprocess import MULTIPROCESS_DIRECTORY
from usage import signals as usage_signals
from usage.projection import redis_store

if TYPE_CHECKING:
    from usage.services import IngestResult

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
OUTCOMES = ("accepted", "duplicate", "skipped", "expired", "rejected")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"

INGESTED = Counter(
    "claude_usage_ingested_records",
    "Records sent to events/, by what became of each (rejected ones also by reason).",
    ["outcome"],
)
REJECTED = Counter(
    "claude_usage_rejected_records",
    "Records sent to events/ and rejected, by the rejection's code.",
    ["reason"],
)
DEPENDENCY_ERRORS = Counter(
    "claude_usage_dependency_errors",
    "Requests answered 503 because the database (LOG_UNAVAILABLE) or Redis "
    "(PROJECTIONS_UNAVAILABLE) was out of reach.",
    ["dependency"],
)
WEBSOCKETS = Gauge(
    "claude_usage_websocket_connections",
    "Open dashboard WebSockets (authenticated), over every live process.",
    multiprocess_mode="livesum",
)
REQUEST_SECONDS = Histogram(
    "claude_usage_http_request_duration_seconds",
    "Time from Django receiving an HTTP request to its response, by URL pattern, method "
    "and status class (a refusal's pause before it is sent is not included).",
    ["route", "method", "status"],
)

# Zero from the start: a rate over a series that appears only at its first event misses it.
for _outcome in OUTCOMES:
    INGESTED.labels(_outcome)
for _dependency in (usage_signals.DATABASE, usage_signals.REDIS):
    DEPENDENCY_ERRORS.labels(_dependency)


# --- receivers of the domain's signals ------------------------------------------------------


def count_ingest(*, result: IngestResult, **kwargs: Any) -> None:
    INGESTED.labels("accepted").inc(result.accepted)
    INGESTED.labels("duplicate").inc(result.duplicates)
    INGESTED.labels("skipped").inc(result.skipped)
    INGESTED.labels("expired").inc(result.expired)
    INGESTED.labels("rejected").inc(len(result.rejected))
    for rejection in result.rejected:
        REJECTED.labels(rejection.code).inc()


def count_dependency_error(*, dependency: str, **kwargs: Any) -> None:
    DEPENDENCY_ERRORS.labels(dependency).inc()


def websocket_opened(**kwargs: Any) -> None:
    WEBSOCKETS.inc()


def websocket_closed(**kwargs: Any) -> None:
    WEBSOCKETS.dec()


def observe_request(route: str | None, method: str, status: int, seconds: float) -> None:
    """One HTTP request: ``route`` is the matched URL pattern (None: none matched)."""
    REQUEST_SECONDS.labels(
        route if route is not None else UNMATCHED_ROUTE,
        method if method in METHODS else "other",
        f"{status // 100}xx",
    ).observe(seconds)


# --- exposition -----------------------------------------------------------------------------


class ProjectionLag(Collector):
    """The lag the worker last recorded, read from Redis once per scrape; nothing while
    none was recorded or Redis does not answer (a scrape never fails for it)."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only: registering must not read Redis.
        return iter(self._families(None))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            lag = redis_store.recorded_lag()
        except Exception:  # Redis down, or a value it cannot read: no figure this scrape
            log.warning("projection lag unreadable for /metrics", exc_info=True)
            return iter(())
        return iter(self._families(lag) if lag is not None else ())

    @staticmethod
    def _families(lag: redis_store.Lag | None) -> list[GaugeMetricFamily]:
        def family(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, value=value if lag is not None else None)

        positions, users, at = lag if lag is not None else (0, 0, 0.0)
        return [
            family(
                "claude_usage_projection_lag_positions",
                "Largest distance, in log positions, from a user's last event back to their "
                "projection's checkpoint, when the worker last measured it.",
                positions,
            ),
            family(
                "claude_usage_projection_lag_users",
                "Users whose projection was behind the log when the worker last measured it.",
                users,
            ),
            family(
                "claude_usage_projection_lag_measured_timestamp_seconds",
                "When the worker last measured the projection lag (Unix time).",
                at,
            ),
        ]


def exposition() -> bytes:
    """Every metric in Prometheus's text format."""
    return generate_latest(_registry())


@cache
def _registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROCESS_DIRECTORY):
        # Every process's files; this process's own metrics are among them.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY  # this process alone, with its process and runtime figures
    registry.register(ProjectionLag())
    return registry
