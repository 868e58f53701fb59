"""Response shapes for the generated OpenAPI schema (drf-spectacular reads these; the views
build their answers in ``usage.shapes``, and a test checks the two agree)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers

from usage.api.serializers import IngestResultSerializer

__all__ = ["IngestAnswerSerializer", "IngestResultSerializer"]

HOST_HEADER = OpenApiParameter(
    "X-Usage-Host",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="The machine the records came from (else the JSON body's host, else 'unknown').",
)
NDJSON_BODY = {"type": "string", "description": "One Claude Code transcript record per line."}
JSON_BODY = {
    "type": "object",
    "properties": {
        "records": {"type": "array", "items": {"type": "object"}},
        "host": {"type": "string"},
    },
    "required": ["records"],
}

S = serializers


class _Base(S.Serializer):  # type: ignore[type-arg]
    """Documentation only: never used to validate or render."""


class SummarySerializer(_Base):
    total_tokens = S.IntegerField()
    total_cost_usd = S.FloatField()
    total_messages = S.IntegerField()
    time_range_hours = S.FloatField()
    input_tokens = S.IntegerField()
    output_tokens = S.IntegerField()
    cache_creation_tokens = S.IntegerField()
    cache_read_tokens = S.IntegerField()
    unpriced_models = S.ListField(child=S.CharField(), help_text="Models with no known price.")
    web_search_requests = S.IntegerField(help_text="Web searches (usage.server_tool_use).")
    web_search_cost_usd = S.FloatField(help_text="Their fees, included in every cost figure.")


class BurnRateSerializer(_Base):
    tokens_per_minute = S.FloatField(help_text="Input + output tokens of the last 60 min / 60.")
    cost_per_minute_usd = S.FloatField()
    all_tokens_per_minute = S.FloatField(help_text="All four token types, last 60 min / 60.")


class ModelShareSerializer(_Base):
    model = S.CharField()
    tokens = S.IntegerField()
    messages = S.IntegerField()
    cost_usd = S.FloatField()
    percentage = S.FloatField()
    input_tokens = S.IntegerField()
    output_tokens = S.IntegerField()
    cache_creation_tokens = S.IntegerField()
    cache_read_tokens = S.IntegerField()
    web_search_requests = S.IntegerField(help_text="Web searches (usage.server_tool_use).")
    web_search_cost_usd = S.FloatField(help_text="Their fees, included in every cost figure.")


class PredictionSerializer(_Base):
    tokens_will_run_out = S.BooleanField()
    estimated_time_to_limit = S.CharField()
    estimated_limit_at = S.DateTimeField(allow_null=True)


class LimitReadingSerializer(_Base):
    used_percentage = S.FloatField()
    resets_at = S.DateTimeField()


class OfficialLimitsSerializer(_Base):
    five_hour = LimitReadingSerializer(allow_null=True)
    seven_day = LimitReadingSerializer(allow_null=True)
    observed_at = S.DateTimeField()
    host = S.CharField()


class RateLimitSerializer(_Base):
    current_window_tokens = S.IntegerField()
    current_window_start = S.DateTimeField(allow_null=True)
    next_reset_at = S.DateTimeField(allow_null=True)
    time_until_reset_seconds = S.IntegerField()
    time_until_reset_human = S.CharField()
    is_within_active_window = S.BooleanField()
    token_limit = S.IntegerField()
    limit_tokens_used = S.IntegerField(help_text="Input + output tokens of the window.")
    used_percentage = S.FloatField()
    plan = S.CharField()
    source = S.ChoiceField(choices=["estimate", "official"])  # type: ignore[assignment]
    predictions = PredictionSerializer()
    official = OfficialLimitsSerializer(
        allow_null=True, help_text="Claude's own last reading (statusline), if any."
    )


class DashboardSerializer(_Base):
    summary = SummarySerializer()
    burn_rate = BurnRateSerializer()
    model_distribution = ModelShareSerializer(many=True)
    rate_limit = RateLimitSerializer()


class DataPointSerializer(_Base):
    timestamp = S.DateTimeField()
    total_tokens = S.IntegerField()
    input_tokens = S.IntegerField()
    output_tokens = S.IntegerField()
    cache_creation_tokens = S.IntegerField()
    cache_read_tokens = S.IntegerField()
    message_count = S.IntegerField()
    cost_usd = S.FloatField()
    web_search_requests = S.IntegerField(help_text="Web searches (usage.server_tool_use).")
    web_search_cost_usd = S.FloatField(help_text="Their fees, included in every cost figure.")


class TimeseriesSerializer(_Base):
    start_time = S.DateTimeField()
    end_time = S.DateTimeField()
    interval = S.CharField()
    data_points = DataPointSerializer(many=True)


class HostSerializer(_Base):
    host = S.CharField()
    total_tokens = S.IntegerField()
    total_messages = S.IntegerField()
    total_cost_usd = S.FloatField()
    last_seen = S.DateTimeField(allow_null=True)


class StatsSerializer(_Base):
    total_tokens = S.IntegerField()
    total_input_tokens = S.IntegerField()
    total_output_tokens = S.IntegerField()
    total_cache_creation_tokens = S.IntegerField()
    total_cache_read_tokens = S.IntegerField()
    total_sessions = S.IntegerField()
    total_messages = S.IntegerField()
    projects = S.IntegerField()
    current_window_tokens = S.IntegerField()
    next_reset_at = S.DateTimeField(allow_null=True)
    time_until_reset_seconds = S.IntegerField()
    time_until_reset_human = S.CharField()
    is_within_active_window = S.BooleanField()
    total_cost_usd = S.FloatField()
    unpriced_models = S.ListField(child=S.CharField())
    total_web_search_requests = S.IntegerField()
    total_web_search_cost_usd = S.FloatField(help_text="Included in total_cost_usd.")
    hosts = HostSerializer(many=True)
    rate_limit = RateLimitSerializer()


class ProjectSerializer(_Base):
    id = S.IntegerField()
    name = S.CharField()
    path = S.CharField()
    total_tokens = S.IntegerField()
    total_sessions = S.IntegerField()
    total_cost = S.FloatField()
    created_at = S.DateTimeField(allow_null=True)
    updated_at = S.DateTimeField(allow_null=True)
    total_messages = S.IntegerField()
    input_tokens = S.IntegerField()
    output_tokens = S.IntegerField()
    cache_creation_tokens = S.IntegerField()
    cache_read_tokens = S.IntegerField()
    web_search_requests = S.IntegerField(help_text="Web searches (usage.server_tool_use).")
    web_search_cost_usd = S.FloatField(help_text="Their fees, included in every cost figure.")


class ProjectListSerializer(_Base):
    projects = ProjectSerializer(many=True)
    count = S.IntegerField()


class SessionSerializer(_Base):
    session_id = S.CharField()
    total_tokens = S.IntegerField()
    input_tokens = S.IntegerField()
    output_tokens = S.IntegerField()
    cache_creation_tokens = S.IntegerField()
    cache_read_tokens = S.IntegerField()
    total_messages = S.IntegerField()
    total_cost = S.FloatField()
    first_activity = S.DateTimeField(allow_null=True)
    last_activity = S.DateTimeField(allow_null=True)
    web_search_requests = S.IntegerField(help_text="Web searches (usage.server_tool_use).")
    web_search_cost_usd = S.FloatField(help_text="Their fees, included in every cost figure.")


class ProjectDetailSerializer(ProjectSerializer):
    sessions = SessionSerializer(many=True)


class ProjectSessionsSerializer(_Base):
    project = S.CharField()
    sessions = SessionSerializer(many=True)
    count = S.IntegerField()


class NoticeSerializer(_Base):
    code = S.CharField()
    message = S.CharField()


class ClampedSerializer(_Base):
    index = S.IntegerField(help_text="The record's index in the request.")
    warning = NoticeSerializer(help_text="CLOCK_AHEAD: what was done with it, and why.")


class IngestAnswerSerializer(IngestResultSerializer):
    """The seed's ingest answer, and the records kept but not as sent."""

    clamped = ClampedSerializer(
        many=True,
        help_text="Records dated more than 5 minutes ahead of the server's clock (and at most "
        "a day: later ones are rejected): stored at the server's time, so a fast clock cannot "
        "open the 5-hour window early.",
    )


class LimitsAnswerSerializer(_Base):
    saved = S.BooleanField(help_text="False when a newer reading was already stored.")


# Rates and their source, as drf-spectacular's inline serializers: a serializer's own field
# named "source" would shadow DRF's Field.source.
def _rates(**extra: S.Field) -> dict[str, S.Field]:  # type: ignore[type-arg]
    names = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
    return {**{name: S.FloatField() for name in names}, **extra}


def _source() -> S.CharField:
    return S.CharField(help_text="Where the figures come from (price data, overlay entry).")


class ModelPricesSerializer(_Base):
    model = S.CharField()
    priced = S.BooleanField(help_text="False: no price known; its usage is counted, not priced.")
    known_as = S.CharField(allow_null=True, help_text="genai-prices' model id.")
    standard = inline_serializer("StandardRates", fields=_rates(source=_source()), allow_null=True)
    long_context = inline_serializer(
        "LongContextRates",
        fields=_rates(
            above_input_tokens=S.IntegerField(
                help_text="A request whose input + cache writes + cache reads exceed this pays "
                "these rates for all its tokens."
            ),
            source=_source(),
        ),
        allow_null=True,
    )
    fast = inline_serializer(
        "FastModeRates",
        fields=_rates(
            multiplier=S.FloatField(allow_null=True, help_text="Of the rates of the size."),
            long_context=inline_serializer(
                "FastLongContextRates", fields=_rates(), allow_null=True
            ),
            source=_source(),
        ),
        allow_null=True,
        help_text='"speed": "fast" requests.',
    )
    web_search = inline_serializer(
        "WebSearchPrice",
        fields={"usd_per_1000": S.FloatField(), "source": _source()},
        allow_null=True,
    )
    reported_by_claude_code = inline_serializer(
        "ReportedCost",
        fields={
            "reported_cost_usd": S.FloatField(
                help_text="What Claude Code's OpenTelemetry api_request events said (cost_usd)."
            ),
            "our_cost_usd": S.FloatField(help_text="Our cost of those same requests."),
            "difference_usd": S.FloatField(help_text="Reported minus ours."),
        },
        allow_null=True,
        help_text="Over the requests Claude Code reported a cost for (v1/logs); null if none.",
    )


class PriceDataSerializer(_Base):
    genai_prices = S.CharField(help_text="The genai-prices version.")
    overlays = S.ListField(child=S.CharField(), help_text="Our overlay, an operator's: versions.")
    fingerprint = S.CharField(help_text="Changes with any price data; projections carry it.")


class PriceListSerializer(_Base):
    date = S.DateField()
    units = S.CharField()
    price_data = PriceDataSerializer()
    models = ModelPricesSerializer(many=True)
    count = S.IntegerField()
