"""Request latency for the metrics, by URL pattern (never the path a client sent)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from operations import metrics


class RequestMetrics:
    """Django middleware, first in ``MIDDLEWARE``: it times everything Django does."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = self.get_response(request)  # Django turns any exception into a response
        match = request.resolver_match
        route = match.route if match is not None else None
        method = request.method or ""
        metrics.observe_request(route, method, response.status_code, time.perf_counter() - started)
        return response
