"""The append-only event log and the few tables beside it. Only ``usage.store`` imports this."""

from django.conf import settings
from django.db import models


class LoggedEvent(models.Model):
    """One immutable event. ``position`` grows in commit order: appends are serialised (see
    ``usage.store``), so a reader that has seen position N has seen every event below N.
    Database triggers refuse UPDATE; DELETE is only for retention."""

    position = models.BigAutoField(primary_key=True)
    # No foreign key constraint in the database: its check, one per row at commit, would run
    # under the append lock that serialises every ingest. The ids come from authenticated
    # users only, and deleting a user still deletes its events (Django cascades in Python).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    kind = models.CharField(max_length=32)
    schema_version = models.PositiveSmallIntegerField(default=1)
    revision = models.PositiveIntegerField(default=0)
    message_id = models.CharField(max_length=255)
    request_id = models.CharField(max_length=255, blank=True, default="")
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField()
    model = models.CharField(max_length=255)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_5m_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_1h_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    priced = models.BooleanField(default=True)
    session_id = models.CharField(max_length=255, blank=True, default="")
    project_path = models.CharField(max_length=1024, blank=True, default="")
    is_sidechain = models.BooleanField(default=False)
    host = models.CharField(max_length=255, blank=True, default="")
    # What the price depends on beyond the tokens (schema version 2, issue 13); rows of
    # version 1 have the defaults, which price as they always did.
    speed = models.CharField(max_length=32, blank=True, default="")
    service_tier = models.CharField(max_length=32, blank=True, default="")
    web_search_requests = models.PositiveBigIntegerField(default=0)
    web_search_cost_nanos = models.BigIntegerField(default=0)
    # Schema version 3 (issue 16): the feed ("" a transcript line, "otlp" an OpenTelemetry
    # api_request event) and the cost Claude Code reported, if it did (nanodollars).
    feed = models.CharField(max_length=16, blank=True, default="")
    reported_cost_nanos = models.BigIntegerField(null=True)

    class Meta:
        db_table = "usage_event"
        constraints = [
            # The last line of defence against double counting under concurrency.
            models.UniqueConstraint(
                fields=["user", "message_id", "request_id", "revision"],
                name="usage_event_one_revision",
            )
        ]
        indexes = [
            models.Index(fields=["user", "position"], name="usage_event_user_position"),
            models.Index(fields=["occurred_at"], name="usage_event_occurred_at"),
            models.Index(
                fields=["user", "occurred_at", "position"], name="usage_event_user_occurred"
            ),
            # A request's copies from either feed (their message ids differ).
            models.Index(
                fields=["user", "request_id"],
                name="usage_event_user_request",
                condition=~models.Q(request_id=""),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.position} {self.kind} {self.message_id}"


class CompletedWindow(models.Model):
    """A finished 5-hour window's totals, kept 30 days so the "custom" plan can learn a
    limit from history after retention has pruned the events themselves."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    align = models.CharField(max_length=8)
    start = models.DateTimeField()
    end = models.DateTimeField()
    input_output_tokens = models.PositiveBigIntegerField()
    total_tokens = models.PositiveBigIntegerField()
    cost_nanos = models.BigIntegerField()
    messages = models.PositiveIntegerField()

    class Meta:
        db_table = "usage_completed_window"
        constraints = [
            models.UniqueConstraint(fields=["user", "align", "start"], name="usage_window_once")
        ]

    def __str__(self) -> str:
        return f"window {self.start:%Y-%m-%d %H:%M} ({self.align})"


class OfficialLimit(models.Model):
    """The latest rate-limit reading Claude Code's statusline reported for a user (one row
    per user, replaced by newer readings: a cache of Claude's state, not a fact log)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", primary_key=True
    )
    five_hour_used_percentage = models.FloatField(null=True)
    five_hour_resets_at = models.DateTimeField(null=True)
    seven_day_used_percentage = models.FloatField(null=True)
    seven_day_resets_at = models.DateTimeField(null=True)
    observed_at = models.DateTimeField()
    host = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        db_table = "usage_official_limit"

    def __str__(self) -> str:
        return f"limits of user {self.user_id} at {self.observed_at:%Y-%m-%d %H:%M}"


class LogIdentity(models.Model):
    """The log's identity: made with the database (migration 0005) and stored in it. Every
    projection carries it, so that Redis never answers for another log (a new database, a
    second deployment on the same Redis) with this one's user ids."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)  # one row
    value = models.CharField(max_length=32)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "usage_log_identity"

    def __str__(self) -> str:
        return f"log {self.value}"
