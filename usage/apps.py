from django.apps import AppConfig
from django.core import checks


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Claude usage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The settings' allowed values come from usage (window alignments, plans), and every
        # process that serves or runs a command sets this app up first.
        from backend.checks import TAG, check_settings

        checks.register(check_settings, TAG)
