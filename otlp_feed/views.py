"""OTLP/HTTP's endpoints (``/v1/logs``, ``/v1/metrics``, ``/v1/traces``), with the API's
token authentication and ingest throttles.

Answers follow the OTLP/HTTP specification: the request's content type (binary protobuf or
JSON), an ``Export*ServiceResponse`` on success, ``partial_success`` when records were
rejected, a ``google.rpc.Status`` on failure (in JSON with the API's error envelope beside
its fields), 429 and 503 with ``Retry-After`` (the only failures an exporter retries).
What the message has no field for, the counts, goes in ``X-Usage-*`` headers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import UnsupportedMediaType
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.views import APIView

from otlp_feed import bounds, protocol
from otlp_feed.protocol import JSON, MEDIA_TYPES, PROTOBUF
from otlp_feed.records import Item, usage_items
from usage import services
from usage.api.errors import BadBody, PayloadTooLarge
from usage.api.ingest_body import body_within_limit, decompressed
from usage.services import IngestResult

# How many rejections partial_success's message names (index and reason); the count is exact.
SHOWN_REJECTIONS = 5
# gRPC's codes for the Status of each failure (OTLP/HTTP leaves it to clients to ignore).
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 3, 415: 3, 429: 8, 503: 14}
GRPC_UNKNOWN = 2
# Headers of a failure that an exporter acts on (DRF's handler sets them).
KEPT_HEADERS = ("Retry-After", "WWW-Authenticate")
COUNT_HEADERS = ("Accepted", "Duplicates", "Ignored", "Rejected", "Expired")


def _now() -> datetime:
    return datetime.now(tz=UTC)


class AnyAccept(BaseContentNegotiation):
    """OTLP answers in the request's content type whatever ``Accept`` says, so DRF's
    negotiation (which would refuse ``Accept: application/x-protobuf``) is not consulted."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return None

    def select_renderer(self, request: Request, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


# The schema says the encodings; the messages are OTLP's (opentelemetry-proto).
SCHEMA_REQUEST = {PROTOBUF: OpenApiTypes.BINARY, JSON: OpenApiTypes.OBJECT}
SCHEMA_RESPONSES = {
    (200, PROTOBUF): OpenApiResponse(OpenApiTypes.BINARY),
    (200, JSON): OpenApiResponse(OpenApiTypes.OBJECT),
}


class OtlpView(APIView):
    parser_classes: list[Any] = []  # the body is read here, bounded (usage.api.ingest_body)
    content_negotiation_class = AnyAccept

    # DRF's stubs say a Response; any HttpResponse goes (finalize_response takes both).
    def handle_exception(self, exc: Exception) -> HttpResponse:  # type: ignore[override]
        """The API's handler decides status, message and headers (``Retry-After``...); the
        answer is then a ``Status`` in the request's encoding."""
        handled = super().handle_exception(exc)
        error = handled.data["error"]
        media_type = answer_type(self.request)
        body = protocol.status(
            media_type,
            code=GRPC_CODES.get(handled.status_code, GRPC_UNKNOWN),
            message=error["message"],
            extra=handled.data,
        )
        answer = HttpResponse(body, status=handled.status_code, content_type=media_type)
        for header in KEPT_HEADERS:
            if header in handled.headers:
                answer[header] = handled.headers[header]
        return answer


def answer_type(request: Request) -> str:
    """The request's OTLP encoding, or JSON for anything else (a 415's answer)."""
    media_type = _media_type(request)
    return media_type if media_type in MEDIA_TYPES else JSON


def _media_type(request: Request) -> str:
    return str(request.META.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()


def otlp_media_type(request: Request) -> str:
    media_type = _media_type(request)
    if media_type not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            media_type or "none",
            detail=f"Unsupported content type {media_type or '(none)'!r}: send "
            f"{PROTOBUF} or {JSON} (OTLP/HTTP; gRPC is not supported)",
        )
    return media_type


def _user_id(request: Request) -> int:
    user_id = request.user.pk if request.user is not None else None
    assert user_id is not None, "IsAuthenticated guarantees a user"
    return int(user_id)


class LogsView(OtlpView):
    @extend_schema(
        request=SCHEMA_REQUEST,
        responses=SCHEMA_RESPONSES,
        summary="Ingest Claude Code's OpenTelemetry log events (OTLP/HTTP)",
        description="Counts claude_code.api_request events; every other event is ignored.",
    )
    def post(self, request: Request) -> HttpResponse:
        media_type = otlp_media_type(request)
        body = decompressed(request, body_within_limit(request))
        _check_count(body, media_type)
        try:
            message = protocol.decode_logs(body, media_type)
        except protocol.Undecodable as error:
            raise BadBody(str(error)) from None
        now = _now()  # read once: every record of the request is judged at one time
        items = usage_items(protocol.log_events(message), now=now)
        result = _ingested(_user_id(request), items, now)
        return _logs_answer(result, media_type, len(items))


def _check_count(body: bytes, media_type: str) -> None:
    limit = settings.USAGE_MAX_RECORDS
    count = bounds.count_protobuf if media_type == PROTOBUF else bounds.count_json
    try:
        count(body, limit)
    except bounds.TooMany as error:
        raise PayloadTooLarge(str(error)) from None
    except bounds.Unfollowable as error:
        raise BadBody(f"Body is not an ExportLogsServiceRequest: {error}") from None


def _ingested(user_id: int, items: list[Item], now: datetime) -> IngestResult:
    """``ingest_usage``'s result; without a usage record in the request (a batch of prompts
    and tool results), the same result without taking the log's append lock."""
    if all(item is None for item in items):
        return IngestResult(accepted=0, duplicates=0, skipped=len(items), expired=0)
    return services.ingest_usage(user_id=user_id, records=items, now=now)


def _logs_answer(result: IngestResult, media_type: str, total: int) -> HttpResponse:
    body = protocol.logs_answer(
        media_type, rejected=len(result.rejected), message=_partial_message(result, total)
    )
    answer = otlp_response(body, media_type)
    counts = (result.accepted, result.duplicates, result.skipped, len(result.rejected))
    for name, count in zip(COUNT_HEADERS, (*counts, result.expired), strict=True):
        answer[f"X-Usage-{name}"] = str(count)
    if result.last_position is not None:
        answer["X-Usage-Position"] = str(result.last_position)
    return answer


def _partial_message(result: IngestResult, total: int) -> str:
    """What ``partial_success.error_message`` says: the first rejections (index among the
    request's log records, code, reason), and records kept at the server's time."""
    parts = []
    if result.rejected:
        shown = "; ".join(
            f"log record {rejection.index}: {rejection.code}: {rejection.message}"
            for rejection in result.rejected[:SHOWN_REJECTIONS]
        )
        more = len(result.rejected) - SHOWN_REJECTIONS
        tail = f"; and {more} more" if more > 0 else ""
        parts.append(f"{len(result.rejected)} of {total} log records rejected: {shown}{tail}")
    if result.clamped:
        shown = "; ".join(
            f"log record {clamp.index}: {clamp.message}"
            for clamp in result.clamped[:SHOWN_REJECTIONS]
        )
        parts.append(f"{len(result.clamped)} counted at the server's time: {shown}")
    return " | ".join(parts)


def otlp_response(body: bytes, media_type: str) -> HttpResponse:
    return HttpResponse(body, status=200, content_type=media_type)


class DroppedSignalView(OtlpView):
    """Metrics and traces: accepted and dropped, so that an exporter configured for every
    signal sees no errors. The body is still read within the ingest's bound."""

    signal: ClassVar[str] = ""

    @extend_schema(
        request=SCHEMA_REQUEST,
        responses=SCHEMA_RESPONSES,
        summary="Accept an OTLP/HTTP export and drop it (metrics, traces)",
        description="Claude Code's metrics and traces are not counted; the answer is success.",
    )
    def post(self, request: Request) -> HttpResponse:
        media_type = otlp_media_type(request)
        body_within_limit(request)
        return otlp_response(protocol.empty_answer(self.signal, media_type), media_type)


class MetricsView(DroppedSignalView):
    signal = "metrics"


class TracesView(DroppedSignalView):
    signal = "traces"
