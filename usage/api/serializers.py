"""Explicit input serializers: query parameters and WebSocket settings are validated here."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from datetime import date as Day
from typing import Any

from django.conf import settings
from rest_framework import serializers

from usage.limits import LimitReading, OfficialLimits
from usage.selectors import INTERVALS, LimitSettings
from usage.windows import CUSTOM_PLAN, PLAN_LIMITS, WindowAlign

# Claude Code itself keeps 30 days of logs: the most hours a read may span when retention
# keeps everything (USAGE_RETENTION_HOURS=0); otherwise it may span what retention keeps.
MAX_HOURS = 24 * 30
MIN_HOURS = 0.0167  # a minute
# One timeseries answer: 30 days of 5-minute buckets, 6 days of 1-minute ones.
MAX_INTERVALS = 8640
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


def max_hours() -> float:
    """The most hours a read may span: what retention keeps, or MAX_HOURS without one."""
    retention: float = settings.USAGE_RETENTION_HOURS
    return retention if retention > 0 else MAX_HOURS


def within_retention(hours: float) -> None:
    limit = max_hours()
    if hours > limit:
        reason = (
            f"USAGE_RETENTION_HOURS keeps {limit:g} hours of events"
            if settings.USAGE_RETENTION_HOURS > 0
            else "the limit when retention keeps everything"
        )
        raise serializers.ValidationError(f"At most {limit:g} hours: {reason}.")


def hours_field() -> serializers.FloatField:
    # Checked against the setting when a request is validated, not when this module loads.
    return serializers.FloatField(
        min_value=MIN_HOURS, required=False, default=6, validators=[within_retention]
    )


class DashboardParams(LimitParams):
    hours = hours_field()


class TimeseriesParams(serializers.Serializer):  # type: ignore[type-arg]
    hours = hours_field()
    interval = serializers.ChoiceField(choices=list(INTERVALS), required=False, default="5min")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Intervals in the span; the answer adds at most the partial bucket of now.
        intervals = math.ceil(attrs["hours"] * 3600 / INTERVALS[attrs["interval"]])
        if intervals > MAX_INTERVALS:
            raise serializers.ValidationError(
                f"{attrs['hours']:g} hours of {attrs['interval']} intervals are {intervals}"
                f" points; at most {MAX_INTERVALS}: ask for a longer interval or fewer hours."
            )
        return attrs


class PricingParams(serializers.Serializer):  # type: ignore[type-arg]
    date = serializers.DateField(
        required=False,
        input_formats=["iso-8601"],
        help_text="The day (UTC, YYYY-MM-DD) whose rates to list; today by default.",
    )

    def validate_date(self, value: Day) -> Day:
        if not EARLIEST_PRICE_DAY <= value <= LATEST_PRICE_DAY:
            raise serializers.ValidationError(
                f"A day from {EARLIEST_PRICE_DAY} to {LATEST_PRICE_DAY}."
            )
        return value


# No Claude Code record is older (usage.events.EARLIEST_TIMESTAMP); the far end keeps the
# day arithmetic of the price data well inside datetime's range.
EARLIEST_PRICE_DAY = Day(2000, 1, 1)
LATEST_PRICE_DAY = Day(9000, 12, 31)


class IngestResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Documents the ingest answer in the OpenAPI schema."""

    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    skipped = serializers.IntegerField()
    expired = serializers.IntegerField(help_text="Older than the retention horizon; not kept.")
    rejected = serializers.ListField(child=serializers.DictField())
    unpriced_models = serializers.ListField(child=serializers.CharField())
    position = serializers.IntegerField(allow_null=True)


class EpochOrIsoField(serializers.DateTimeField):
    """Claude Code writes ``resets_at`` as Unix epoch seconds; ISO 8601 is accepted too."""

    def to_internal_value(self, value: object) -> datetime:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not 0 <= value < 10**11:
                self.fail("invalid", format="epoch seconds")
            return datetime.fromtimestamp(value, tz=UTC)
        parsed: datetime = super().to_internal_value(value)  # type: ignore[arg-type]
        return parsed


class LimitReadingParams(serializers.Serializer):  # type: ignore[type-arg]
    used_percentage = serializers.FloatField(min_value=0, max_value=1000)
    resets_at = EpochOrIsoField()


class OfficialLimitsParams(serializers.Serializer):  # type: ignore[type-arg]
    """The statusline's ``rate_limits`` object (or the whole statusline input holding it)."""

    five_hour = LimitReadingParams(required=False, allow_null=True)
    seven_day = LimitReadingParams(required=False, allow_null=True)
    observed_at = EpochOrIsoField(required=False)
    host = serializers.CharField(required=False, allow_blank=True)  # see usage.api.hosts

    def to_internal_value(self, data: object) -> Any:
        if isinstance(data, dict) and isinstance(data.get("rate_limits"), dict):
            data = {
                **data["rate_limits"],
                **{k: v for k, v in data.items() if k in ("observed_at", "host")},
            }
        return super().to_internal_value(data)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("five_hour") and not attrs.get("seven_day"):
            raise serializers.ValidationError("Send five_hour and/or seven_day readings.")
        return attrs

    def limits(self, *, now: datetime, host: str) -> OfficialLimits:
        data = self.validated_data
        return OfficialLimits(
            five_hour=_reading(data.get("five_hour")),
            seven_day=_reading(data.get("seven_day")),
            observed_at=min(data.get("observed_at", now), now),
            host=host,
        )


def _reading(data: dict[str, Any] | None) -> LimitReading | None:
    return LimitReading(**data) if data else None
