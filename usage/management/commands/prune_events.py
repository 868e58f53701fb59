"""``manage.py prune_events``: delete events older than USAGE_RETENTION_HOURS."""

from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand

from usage import services


class Command(BaseCommand):
    help = "Delete usage events older than the retention horizon and rebuild projections."

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = services.prune_events(now=datetime.now(tz=UTC))
        total = sum(deleted.values())
        self.stdout.write(f"pruned {total} events of {len(deleted)} users")
