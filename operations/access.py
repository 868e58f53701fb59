"""Who may read ``/metrics``. Not the API's users: the figures are the whole server's.

With ``USAGE_METRICS_TOKEN`` set, a scraper sends ``Authorization: Bearer <it>``, from
anywhere. Without it, only a client on this machine (loopback) that came straight in: a
request carrying proxy headers is refused, since a reverse proxy on the same machine would
otherwise make every internet client look local. So ``curl http://127.0.0.1:8000/metrics``
works on a fresh install and nothing else does until a token is set.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from usage.api.errors import envelope

PROXY_HEADERS = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


def refusal(request: HttpRequest) -> HttpResponse | None:
    """None when ``request`` may read the metrics; else the answer to send."""
    expected: str = settings.USAGE_METRICS_TOKEN
    if expected:
        if _holds(_bearer(request), expected):
            return None
        answer = JsonResponse(
            envelope("AUTHENTICATION_REQUIRED", "Send Authorization: Bearer <USAGE_METRICS_TOKEN>"),
            status=401,
        )
        answer["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return answer
    if _local(request):
        return None
    return JsonResponse(
        envelope(
            "PERMISSION_DENIED",
            "Metrics are served only to this machine's own clients while USAGE_METRICS_TOKEN "
            "is not set",
        ),
        status=403,
    )


def _bearer(request: HttpRequest) -> str:
    """The credential of an ``Authorization: Bearer`` header; "" without one."""
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    return credential if scheme.lower() == "bearer" else ""


def _holds(given: str, expected: str) -> bool:
    # Bytes: compare_digest refuses text that is not ASCII (a header may hold any byte).
    return hmac.compare_digest(_bytes(given), _bytes(expected))


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _local(request: HttpRequest) -> bool:
    if any(header in request.headers for header in PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False
