from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from usage.api import views

app_name = "claude_usage"

urlpatterns = [
    path("events/", views.IngestView.as_view(), name="events"),
    path("limits/", views.LimitsView.as_view(), name="limits"),
    path("dashboard/", views.DashboardView.as_view(), name="dashboard"),
    path("timeseries/", views.TimeseriesView.as_view(), name="timeseries"),
    path("stats/", views.StatsView.as_view(), name="stats"),
    path("projects/", views.ProjectListView.as_view(), name="projects"),
    path("projects/<str:project_name>/", views.ProjectDetailView.as_view(), name="project"),
    path(
        "projects/<str:project_name>/sessions/",
        views.ProjectSessionsView.as_view(),
        name="project-sessions",
    ),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[]), name="schema"),
]
