"""The one page. Everything it shows comes from the API, read by the browser with the
token the user gives it; the page itself needs no credentials and holds no data."""

from __future__ import annotations

from django.contrib.staticfiles.storage import staticfiles_storage
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

NOT_COLLECTED = (
    "The dashboard's static files have not been collected: run "
    "`python manage.py collectstatic --noinput` (python -m backend.serve does it at start).\n"
)


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    if not _collected():
        return HttpResponse(NOT_COLLECTED, status=503, content_type="text/plain")
    response = render(request, "web_dashboard/index.html")
    # The page's WebSocket goes to this host. CSP 'self' covers same-origin ws:/wss: in
    # current browsers (CSP level 3); older ones need the scheme spelled out.
    host = request.get_host()  # validated against ALLOWED_HOSTS
    response._csp_update = {"connect-src": [f"ws://{host}", f"wss://{host}"]}  # type: ignore[attr-defined]
    # A bookmark may carry ?token=: no other site is told the address this page came from.
    response["Referrer-Policy"] = "no-referrer"
    # The page names hashed files: a fresh copy on each visit picks up a new release.
    response["Cache-Control"] = "no-cache"
    return response


def _collected() -> bool:
    """Whether collectstatic has written the manifest of hashed names the page refers to."""
    try:
        staticfiles_storage.url("web_dashboard/app.js")
    except ValueError:
        return False
    return True
