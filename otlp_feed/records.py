"""A request's log events become what ``usage.services.ingest_usage`` takes: a usage record
for each api_request event, the reason one was refused, or None for every other event
(user prompts, tool results...: accepted, never read further, never stored or logged)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from otlp_feed.api_requests import is_api_request, parse_api_request
from otlp_feed.protocol import LogEvent
from usage.api.hosts import MAX_HOST_LENGTH
from usage.events import InvalidRecord, UsageRecord

Item = UsageRecord | InvalidRecord | None


def usage_items(events: Iterable[LogEvent], *, now: datetime) -> list[Item]:
    return [_item(event, now) for event in events]


def _item(event: LogEvent, now: datetime) -> Item:
    if not is_api_request(event.body, event.attributes):
        return None
    if len(event.host) > MAX_HOST_LENGTH:
        # Refused, never cut: two machines must not merge (as usage.api.hosts says).
        return InvalidRecord(f"host.name is longer than {MAX_HOST_LENGTH} characters")
    try:
        return parse_api_request(
            event.attributes, time_unix_nano=event.time_unix_nano, host=event.host, now=now
        )
    except InvalidRecord as refusal:
        return refusal
