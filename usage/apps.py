from django.apps import AppConfig
from django.core import checks


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Claude usage"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The settings' allowed values come from usage (window alignments, plans), and every
        # process that serves or runs a command sets this app up first.
        from django.conf import settings
        from django.core.signals import setting_changed

        from backend.checks import TAG, check_price_data, check_settings
        from usage import pricing

        checks.register(check_settings, TAG)
        checks.register(check_price_data, TAG)
        # Pure pricing reads no settings: it is told the operator's overlay, here and
        # whenever a test overrides the setting.
        pricing.configure(settings.USAGE_PRICE_OVERLAY)
        setting_changed.connect(_price_overlay_changed, dispatch_uid="usage.price_overlay")


def _price_overlay_changed(*, setting: str, value: object, **kwargs: object) -> None:
    from usage import pricing

    if setting == "USAGE_PRICE_OVERLAY":
        pricing.configure(str(value or ""))
