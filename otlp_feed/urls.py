"""OTLP/HTTP's default paths, at the server's root: an exporter appends ``/v1/logs`` (and
``/v1/metrics``, ``/v1/traces``) to ``OTEL_EXPORTER_OTLP_ENDPOINT``. No trailing slash:
exporters never send one, and a redirect would lose the POST."""

from django.urls import path

from otlp_feed import views

app_name = "otlp"

urlpatterns = [
    path("v1/logs", views.LogsView.as_view(), name="logs"),
    path("v1/metrics", views.MetricsView.as_view(), name="metrics"),
    path("v1/traces", views.TracesView.as_view(), name="traces"),
]
