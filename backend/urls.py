from django.urls import include, path

from web_dashboard.views import index

urlpatterns = [
    path("", index, name="web-dashboard"),
    path("app/claude-usage/", include("usage.api.urls")),
    path("", include("otlp_feed.urls")),  # v1/logs, v1/metrics, v1/traces (OTLP/HTTP)
    path("", include("operations.urls")),  # healthz, readyz, metrics
]

handler400 = "usage.api.errors.bad_request"
handler404 = "usage.api.errors.not_found"
handler500 = "usage.api.errors.server_error"
