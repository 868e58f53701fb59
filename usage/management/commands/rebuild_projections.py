"""``manage.py rebuild_projections``: recompute everything in Redis from the event log."""

from typing import Any

from django.core.management.base import BaseCommand

from usage import pricing
from usage.projection import projector


class Command(BaseCommand):
    help = "Drop the Redis read models and rebuild them from the event log."

    def handle(self, *args: Any, **options: Any) -> None:
        checkpoints = projector.rebuild_all()
        self.stdout.write(
            f"rebuilt projections of {len(checkpoints)} users, priced with "
            f"{pricing.price_data().describe()}"
        )
