"""Explicit input serializers: query parameters and WebSocket settings are validated here."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from usage.selectors import INTERVALS, LimitSettings
from usage.windows import CUSTOM_PLAN, PLAN_LIMITS, WindowAlign

MAX_HOURS = 24 * 30  # Claude Code itself keeps 30 days of logs
PLANS = [*PLAN_LIMITS, CUSTOM_PLAN]


class LimitParams(serializers.Serializer):  # type: ignore[type-arg]
    plan = serializers.ChoiceField(choices=PLANS, required=False)
    token_limit = serializers.IntegerField(min_value=1, max_value=10**12, required=False)
    window_align = serializers.ChoiceField(
        choices=[align.value for align in WindowAlign], required=False
    )

    def limits(self) -> LimitSettings:
        data = self.validated_data
        return LimitSettings(
            plan=data.get("plan", settings.USAGE_DEFAULT_PLAN),
            token_limit=data.get("token_limit"),
            window_align=WindowAlign(data.get("window_align", settings.USAGE_WINDOW_ALIGN)),
        )


class DashboardParams(LimitParams):
    hours = serializers.FloatField(min_value=0.0167, max_value=MAX_HOURS, required=False, default=6)


class TimeseriesParams(serializers.Serializer):  # type: ignore[type-arg]
    hours = serializers.FloatField(min_value=0.0167, max_value=MAX_HOURS, required=False, default=6)
    interval = serializers.ChoiceField(choices=list(INTERVALS), required=False, default="5min")


class IngestResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Documents the ingest answer in the OpenAPI schema."""

    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    skipped = serializers.IntegerField()
    expired = serializers.IntegerField(help_text="Older than the retention horizon; not kept.")
    rejected = serializers.ListField(child=serializers.DictField())
    unpriced_models = serializers.ListField(child=serializers.CharField())
    position = serializers.IntegerField(allow_null=True)
