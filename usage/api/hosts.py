"""Which machine a request speaks for: one rule for every endpoint that takes one."""

from __future__ import annotations

from rest_framework.request import Request

from usage.api.errors import BadBody

MAX_HOST_LENGTH = 255
HOST_HEADER = "X-Usage-Host"


def machine_name(request: Request, body_host: str = "") -> str:
    """The ``X-Usage-Host`` header, else the host the body names, else ``unknown``. A name
    longer than ``MAX_HOST_LENGTH`` is refused, never cut: two machines must not merge."""
    host = (request.headers.get(HOST_HEADER, "").strip() or body_host.strip()) or "unknown"
    if len(host) > MAX_HOST_LENGTH:
        raise BadBody(f"Host name longer than {MAX_HOST_LENGTH} characters")
    return host
