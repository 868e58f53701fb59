"""The mutable tables beside the event log: Claude's latest official limits per user, and the
totals of completed 5-hour windows. Unlike the log, rows here are replaced and deleted."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from django.db import transaction

from usage.limits import LimitReading, OfficialLimits
from usage.models import CompletedWindow, OfficialLimit

# --- official limits -----------------------------------------------------------------------


def save_official_limits(user_id: int, limits: OfficialLimits) -> bool:
    """Keep the newest reading; an older one arriving late is ignored. True when saved."""
    with transaction.atomic():
        current = OfficialLimit.objects.select_for_update().filter(user_id=user_id).first()
        if current is not None and current.observed_at > limits.observed_at:
            return False
        five, seven = limits.five_hour, limits.seven_day
        OfficialLimit.objects.update_or_create(
            user_id=user_id,
            defaults={
                "five_hour_used_percentage": five.used_percentage if five else None,
                "five_hour_resets_at": five.resets_at if five else None,
                "seven_day_used_percentage": seven.used_percentage if seven else None,
                "seven_day_resets_at": seven.resets_at if seven else None,
                "observed_at": limits.observed_at,
                "host": limits.host,
            },
        )
    return True


def official_limits(user_id: int) -> OfficialLimits | None:
    row = OfficialLimit.objects.filter(user_id=user_id).first()
    if row is None:
        return None
    return OfficialLimits(
        five_hour=_reading(row.five_hour_used_percentage, row.five_hour_resets_at),
        seven_day=_reading(row.seven_day_used_percentage, row.seven_day_resets_at),
        observed_at=row.observed_at,
        host=row.host,
    )


def _reading(used: float | None, resets_at: datetime | None) -> LimitReading | None:
    if used is None or resets_at is None:
        return None
    return LimitReading(used_percentage=used, resets_at=resets_at)


# --- completed windows ---------------------------------------------------------------------


def save_completed_window(
    *, user_id: int, align: str, start: datetime, end: datetime, totals: dict[str, int]
) -> None:
    CompletedWindow.objects.update_or_create(
        user_id=user_id, align=align, start=start, defaults={"end": end, **totals}
    )


def latest_window_start(user_id: int, align: str, *, at_or_before: datetime) -> datetime | None:
    """The start of the user's latest recorded window that starts at or before a moment."""
    rows = CompletedWindow.objects.filter(user_id=user_id, align=align, start__lte=at_or_before)
    return rows.order_by("-start").values_list("start", flat=True).first()


def delete_windows_from(
    user_id: int, align: str, start: datetime, *, keep: Collection[datetime]
) -> int:
    """Delete the user's recorded windows starting at or after ``start``, but those in
    ``keep`` (windows that later data moved no longer exist)."""
    rows = CompletedWindow.objects.filter(user_id=user_id, align=align, start__gte=start)
    deleted, _ = rows.exclude(start__in=list(keep)).delete()
    return deleted


def completed_window_totals(user_id: int, align: str, since: datetime) -> list[int]:
    rows = CompletedWindow.objects.filter(user_id=user_id, align=align, start__gte=since)
    return list(rows.values_list("input_output_tokens", flat=True))


def delete_completed_windows_before(cutoff: datetime) -> int:
    deleted, _ = CompletedWindow.objects.filter(start__lt=cutoff).delete()
    return deleted
