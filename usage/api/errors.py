"""Every failure, everywhere, in the seed's envelope: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging
from typing import Any

from django.db import OperationalError
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from usage import signals
from usage.projection.redis_store import UNAVAILABLE as PROJECTIONS_UNREACHABLE
from usage.selectors import NotFound
from usage.services import LogUnavailable

log = logging.getLogger(__name__)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "PAYLOAD_TOO_LARGE"
    default_detail = "Payload too large"


class BadBody(exceptions.ParseError):
    default_code = "VALIDATION_ERROR"


class Unavailable(exceptions.APIException):
    """The event log's database is down or stays locked: send the same request later."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "LOG_UNAVAILABLE"
    default_detail = "The event log is unavailable; nothing was stored. Retry later."
    wait = 5  # seconds: DRF's handler sends it as Retry-After


class ProjectionsUnavailable(exceptions.APIException):
    """Redis is down or out of reach: nothing can be counted or read until it returns. What
    an ingest had committed to the log by then stays, and the projections catch up from it."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "PROJECTIONS_UNAVAILABLE"
    default_detail = "The projections' Redis is unavailable. Retry later."
    wait = 5  # seconds: DRF's handler sends it as Retry-After


# The envelope's code per exception (the status is the exception's own).
_CODES: dict[type[Exception], str] = {
    exceptions.NotAuthenticated: "AUTHENTICATION_REQUIRED",
    exceptions.AuthenticationFailed: "AUTHENTICATION_REQUIRED",
    exceptions.PermissionDenied: "PERMISSION_DENIED",
    exceptions.NotFound: "NOT_FOUND",
    exceptions.MethodNotAllowed: "METHOD_NOT_ALLOWED",
    exceptions.NotAcceptable: "NOT_ACCEPTABLE",
    exceptions.UnsupportedMediaType: "UNSUPPORTED_MEDIA_TYPE",
    exceptions.Throttled: "RATE_LIMITED",
    PayloadTooLarge: "PAYLOAD_TOO_LARGE",
    Unavailable: "LOG_UNAVAILABLE",
    ProjectionsUnavailable: "PROJECTIONS_UNAVAILABLE",
    exceptions.ValidationError: "VALIDATION_ERROR",
    exceptions.ParseError: "VALIDATION_ERROR",
}


def envelope(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's handler, reshaped; anything unexpected becomes a logged SERVER_ERROR."""
    if isinstance(exc, NotFound):
        exc = exceptions.NotFound(str(exc))
    if isinstance(exc, LogUnavailable | OperationalError):
        # Any view's database down or locked (the token lookup too): a retry may succeed.
        log.warning("database unavailable: %s", exc)
        signals.dependency_unavailable.send(sender=Unavailable, dependency=signals.DATABASE)
        exc = Unavailable()
    if isinstance(exc, PROJECTIONS_UNREACHABLE):
        log.warning("redis unavailable: %s", exc)
        signals.dependency_unavailable.send(sender=ProjectionsUnavailable, dependency=signals.REDIS)
        exc = ProjectionsUnavailable()
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("unhandled error", exc_info=exc)
        return Response(envelope("SERVER_ERROR", "Server error"), status=500)
    code = _code_for(exc)
    response.data = envelope(code, _message(exc, code))
    return response


def _code_for(exc: Exception) -> str:
    for kind, code in _CODES.items():
        if isinstance(exc, kind):
            return code
    return "SERVER_ERROR" if getattr(exc, "status_code", 500) >= 500 else "BAD_REQUEST"


def _message(exc: Exception, code: str) -> str:
    if code == "AUTHENTICATION_REQUIRED":
        detail = str(getattr(exc, "detail", ""))
        return (
            "Authentication required"
            if "not provided" in detail
            else f"Authentication required: {detail}"
        )
    return _flat(getattr(exc, "detail", str(exc)))


def _flat(value: object, field: str = "") -> str:
    """DRF's nested error details as one readable line: ``a.b: problem; c: problem``."""
    if isinstance(value, dict):
        return "; ".join(
            _flat(inner, f"{field}.{name}" if field else str(name)) for name, inner in value.items()
        )
    if isinstance(value, list):
        if any(isinstance(item, dict | list) for item in value):
            return "; ".join(_flat(item, field) for item in value)
        value = " ".join(str(item) for item in value)
    return f"{field}: {value}" if field and field != "non_field_errors" else str(value)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(envelope("NOT_FOUND", f"No such endpoint: {request.path}"), status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(envelope("SERVER_ERROR", "Server error"), status=500)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(envelope("VALIDATION_ERROR", "Bad request"), status=400)
