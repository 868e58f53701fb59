from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Claude usage"
    default_auto_field = "django.db.models.BigAutoField"
