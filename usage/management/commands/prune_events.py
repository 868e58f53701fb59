"""``manage.py prune_events``: delete events older than USAGE_RETENTION_HOURS."""

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand

from usage import services
from usage.completed_windows import Progress


class Command(BaseCommand):
    help = "Delete usage events older than the retention horizon and rebuild projections."

    def handle(self, *args: Any, **options: Any) -> None:
        now = datetime.now(tz=UTC)
        # The windows that retention is about to take events from are recorded first.
        services.record_completed_windows(now=now, since=Progress())
        deleted = services.prune_events(now=now)
        total = sum(deleted.values())
        self.stdout.write(f"pruned {total} events of {len(deleted)} users")
