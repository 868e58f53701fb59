"""Plain Django views, not DRF's: no token authentication and no throttles apply, so a
load balancer's polls cost no rate limit, no database lookup of a token and nothing of any
user's. Errors keep the API's envelope."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from operations import access, health, metrics
from usage.api.errors import envelope
from usage.projection.redis_store import Lag

RETRY_AFTER_SECONDS = 5  # as the API's own 503s say


@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and answers: nothing else is looked at."""
    return JsonResponse({"status": "ok"})


@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    """200 when the database and Redis answer; 503 otherwise, with the API's error code of
    the first one missing. Either way, each check's result and the projection lag."""
    now = time.time()  # read once: the lag's age
    found = health.readiness()
    body: dict[str, object] = {
        "status": "ready" if found.ready else "unavailable",
        "checks": {
            "database": "ok" if found.database else "unavailable",
            "redis": "ok" if found.redis else "unavailable",
        },
        "projection_lag": _lag(found.lag, now),
    }
    if found.ready:
        return JsonResponse(body)
    if not found.database:
        body |= envelope("LOG_UNAVAILABLE", "The event log's database does not answer.")
    else:
        body |= envelope("PROJECTIONS_UNAVAILABLE", "The projections' Redis does not answer.")
    answer = JsonResponse(body, status=503)
    answer["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return answer


def _lag(lag: Lag | None, now: float) -> dict[str, object] | None:
    if lag is None:
        return None
    return {
        "positions": lag.positions,
        "users_behind": lag.users_behind,
        "measured_at": datetime.fromtimestamp(lag.measured_at, tz=UTC).isoformat(),
        "age_seconds": round(max(0.0, now - lag.measured_at), 3),
    }


@require_safe
def metrics_text(request: HttpRequest) -> HttpResponse:
    """Prometheus's text format, to the clients ``operations.access`` allows."""
    refused = access.refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
