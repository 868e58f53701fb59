"""Thin views: validate input, read the clock once, call one entry point, answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from usage import selectors, services
from usage.api import documentation as docs
from usage.api.hosts import machine_name
from usage.api.ingest_body import read_records
from usage.api.serializers import (
    DashboardParams,
    LimitParams,
    OfficialLimitsParams,
    PricingParams,
    TimeseriesParams,
)


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _user_id(request: Request) -> int:
    user_id = request.user.pk if request.user is not None else None
    assert user_id is not None, "IsAuthenticated guarantees a user"
    return int(user_id)


class IngestView(APIView):
    parser_classes: list[Any] = []  # the body is read by read_records (NDJSON, JSON, gzip)

    @extend_schema(
        request={"application/x-ndjson": docs.NDJSON_BODY, "application/json": docs.JSON_BODY},
        responses={200: docs.IngestAnswerSerializer},
        parameters=[docs.HOST_HEADER],
        summary="Ingest Claude Code transcript records",
    )
    def post(self, request: Request) -> Response:
        body = read_records(request)
        result = services.ingest_records(
            user_id=_user_id(request), records=body.records, host=body.host, now=_now()
        )
        return Response(
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "skipped": result.skipped,
                "expired": result.expired,
                "rejected": [
                    {"index": r.index, "error": {"code": r.code, "message": r.message}}
                    for r in result.rejected
                ],
                "unpriced_models": result.unpriced_models,
                "position": result.last_position,
                "clamped": [
                    {"index": c.index, "warning": {"code": c.code, "message": c.message}}
                    for c in result.clamped
                ],
            }
        )


class LimitsView(APIView):
    """Claude's official rate-limit readings, forwarded by the agent's statusline command."""

    @extend_schema(
        request=OfficialLimitsParams,
        responses={200: docs.LimitsAnswerSerializer},
        parameters=[docs.HOST_HEADER],
        summary="Record Claude Code's official rate-limit reading",
    )
    def post(self, request: Request) -> Response:
        params = OfficialLimitsParams(data=request.data)
        params.is_valid(raise_exception=True)
        host = machine_name(request, params.validated_data.get("host", ""))
        saved = services.record_official_limits(
            user_id=_user_id(request), limits=params.limits(now=_now(), host=host)
        )
        return Response({"saved": saved})


class DashboardView(APIView):
    @extend_schema(parameters=[DashboardParams], responses={200: docs.DashboardSerializer})
    def get(self, request: Request) -> Response:
        params = DashboardParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(
            selectors.dashboard(
                user_id=_user_id(request),
                now=_now(),
                hours=params.validated_data["hours"],
                limits=params.limits(),
            )
        )


class TimeseriesView(APIView):
    @extend_schema(parameters=[TimeseriesParams], responses={200: docs.TimeseriesSerializer})
    def get(self, request: Request) -> Response:
        params = TimeseriesParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(
            selectors.timeseries(
                user_id=_user_id(request),
                now=_now(),
                hours=params.validated_data["hours"],
                interval=params.validated_data["interval"],
            )
        )


class StatsView(APIView):
    @extend_schema(parameters=[LimitParams], responses={200: docs.StatsSerializer})
    def get(self, request: Request) -> Response:
        params = LimitParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(
            selectors.stats(user_id=_user_id(request), now=_now(), limits=params.limits())
        )


class ProjectListView(APIView):
    # Named: drf-spectacular would call both this and the detail "projects_retrieve", and
    # warn (in `manage.py check --deploy`) that it numbered the second.
    @extend_schema(operation_id="projects_list", responses={200: docs.ProjectListSerializer})
    def get(self, request: Request) -> Response:
        return Response(selectors.project_list(user_id=_user_id(request)))


PROJECT_NAME = OpenApiParameter(
    "project_name", str, OpenApiParameter.PATH, description="Project name or numeric id."
)


class ProjectDetailView(APIView):
    @extend_schema(parameters=[PROJECT_NAME], responses={200: docs.ProjectDetailSerializer})
    def get(self, request: Request, project_name: str) -> Response:
        return Response(selectors.project_detail(user_id=_user_id(request), name=project_name))


class ProjectSessionsView(APIView):
    @extend_schema(parameters=[PROJECT_NAME], responses={200: docs.ProjectSessionsSerializer})
    def get(self, request: Request, project_name: str) -> Response:
        return Response(selectors.project_sessions(user_id=_user_id(request), name=project_name))


class PricingView(APIView):
    """The rates in force for each model in the user's data, each with its source."""

    @extend_schema(
        parameters=[PricingParams],
        responses={200: docs.PriceListSerializer},
        summary="Rates in force per model, with their sources",
    )
    def get(self, request: Request) -> Response:
        params = PricingParams(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(
            selectors.price_list(
                user_id=_user_id(request), now=_now(), day=params.validated_data.get("date")
            )
        )
