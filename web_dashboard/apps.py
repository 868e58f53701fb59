from django.apps import AppConfig


class WebDashboardConfig(AppConfig):
    name = "web_dashboard"
    verbose_name = "Web dashboard"
