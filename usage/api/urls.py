from __future__ import annotations

from typing import Any, ClassVar

from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from usage.api import views


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema, generated once per process: it depends only on the code (public,
    one version, no translations), and generating it walks every view and serializer."""

    _schema: ClassVar[dict[str, Any] | None] = None

    def _get_schema_response(self, request: Request) -> Response:
        if SchemaView._schema is None:
            generated = super()._get_schema_response(request)  # type: ignore[no-untyped-call]
            SchemaView._schema = generated.data
        version = self.api_version or request.version
        filename = self._get_filename(request, version)  # type: ignore[no-untyped-call]
        disposition = f'inline; filename="{filename}"'
        return Response(data=SchemaView._schema, headers={"Content-Disposition": disposition})

    def finalize_response(
        self, request: Request, response: Any, *args: Any, **kwargs: Any
    ) -> Response:
        # An error (a 429) is the JSON envelope, not a YAML document of the schema's type.
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        result: Response = super().finalize_response(request, response, *args, **kwargs)
        return result

    @classmethod
    def forget(cls) -> None:
        """Drop the generated schema (tests)."""
        SchemaView._schema = None


app_name = "claude_usage"

urlpatterns = [
    path("events/", views.IngestView.as_view(), name="events"),
    path("limits/", views.LimitsView.as_view(), name="limits"),
    path("dashboard/", views.DashboardView.as_view(), name="dashboard"),
    path("timeseries/", views.TimeseriesView.as_view(), name="timeseries"),
    path("stats/", views.StatsView.as_view(), name="stats"),
    path("pricing/", views.PricingView.as_view(), name="pricing"),
    path("projects/", views.ProjectListView.as_view(), name="projects"),
    path("projects/<str:project_name>/", views.ProjectDetailView.as_view(), name="project"),
    path(
        "projects/<str:project_name>/sessions/",
        views.ProjectSessionsView.as_view(),
        name="project-sessions",
    ),
    path("schema/", SchemaView.as_view(permission_classes=[]), name="schema"),
]
