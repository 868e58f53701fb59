"""No credential in any log line.

Browsers cannot set headers on a WebSocket, so dashboards authenticate with ``?token=KEY``,
and some clients do the same over REST. daphne's access log writes every request target in
full (``daphne.access.AccessLogGenerator.write_entry``, straight to its stream, not through
``logging``), so the key would sit in every log file and every log shipper. Two guards:

- ``install()`` wraps daphne's ``write_entry`` (every HTTP, WebSocket and page line goes
  through it) so that the target's sensitive query parameters are written as
  ``[redacted]``. ``backend/asgi.py`` calls it in each daphne process; it reads one
  method of daphne, pinned in requirements.txt, and tests/backend/test_access_log.py
  fails against a real daphne if an upgrade moves it.
- ``RedactingFormatter``, the formatter of ``settings.LOGGING``: the same for every message
  written through ``logging`` (Django's, daphne's, ours), plus ``Authorization``-like values
  and ``Token KEY`` / ``Bearer KEY`` pairs.

A parameter's name is compared as the application reads it: percent-decoded and in any
case (``?%74oken=`` and ``?TOKEN=`` are both redacted).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
SENSITIVE_PARAMETERS = frozenset(
    {
        "token",
        "access_token",
        "auth_token",
        "api_key",
        "apikey",
        "key",
        "authorization",
        "password",
        "secret",
        "sessionid",
        "csrftoken",
    }
)
# A request target with a query: up to whitespace or a quote.
_TARGET_WITH_QUERY = re.compile(r"""[^\s"'<>]*\?[^\s"'<>]*""")
# "Authorization: Token KEY", "'authorization': 'Bearer KEY'", "Cookie: sessionid=..."
_HEADER_VALUE = re.compile(
    r"""(?i)\b(authorization|proxy-authorization|cookie|x-api-key)(["']?\s*[:=]\s*["']?)"""
    r"""([^"'\r\n]+)"""
)
# "Token 0123abcd..." outside a header: a scheme followed by something key-like.
_SCHEME_AND_KEY = re.compile(r"(?i)\b(token|bearer|basic)(\s+)([A-Za-z0-9._~+/=-]{16,})")

_installed = False


def redact_target(target: str) -> str:
    """``path?query`` with the value of every sensitive parameter replaced."""
    path, separator, query = target.partition("?")
    if not separator:
        return target
    fragment_separator = "#" if "#" in query else ""
    query, _, fragment = query.partition("#")
    parameters = [_redact_parameter(part) for part in query.split("&")]
    return f"{path}?{'&'.join(parameters)}{fragment_separator}{fragment}"


def _redact_parameter(parameter: str) -> str:
    name, equals, _value = parameter.partition("=")
    if equals and unquote_plus(name).strip().lower() in SENSITIVE_PARAMETERS:
        return f"{name}={REDACTED}"
    return parameter


def redact(text: str) -> str:
    """Any log text: every request target in it, header-like values and scheme+key pairs."""
    text = _TARGET_WITH_QUERY.sub(lambda match: redact_target(match.group(0)), text)
    text = _HEADER_VALUE.sub(lambda match: f"{match.group(1)}{match.group(2)}{REDACTED}", text)
    return _SCHEME_AND_KEY.sub(lambda match: f"{match.group(1)}{match.group(2)}{REDACTED}", text)


class RedactingFormatter(logging.Formatter):
    """``logging.Formatter`` whose output (message, arguments and traceback) is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def install() -> None:
    """Redact daphne's access log in this process (idempotent). daphne builds its access
    logger after it imports the application, and the wrapper is on the class: any
    instance, earlier or later, writes through it."""
    global _installed
    if _installed:
        return
    from daphne.access import AccessLogGenerator

    write_entry = AccessLogGenerator.write_entry

    def redacting_write_entry(
        self: Any, host: Any, date: Any, request: str, *args: Any, **kwargs: Any
    ) -> None:
        write_entry(self, host, date, redact(request), *args, **kwargs)

    AccessLogGenerator.write_entry = redacting_write_entry
    _installed = True
