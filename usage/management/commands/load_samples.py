"""``manage.py load_samples [DIR] [--shift-to-now]``: ingest a Claude Code transcript tree.

For trying the server out: ``--shift-to-now`` moves every timestamp by the same amount so
that the newest record is a minute old, which brings old logs (such as shared/samples)
inside the retention horizon and the live 5-hour window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from usage import services, wire

DEFAULT_DIR = Path(settings.BASE_DIR).parent / "shared" / "samples" / "claude-config"


class Command(BaseCommand):
    help = "Ingest every *.jsonl below DIR (default: shared/samples/claude-config)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("directory", nargs="?", default=str(DEFAULT_DIR))
        parser.add_argument("--user", default=settings.USAGE_LOCAL_USER)
        parser.add_argument("--host", default="samples")
        parser.add_argument("--shift-to-now", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        root = Path(options["directory"])
        files = sorted(root.rglob("*.jsonl"))
        if not files:
            raise CommandError(f"No *.jsonl files below {root}")
        records = [
            wire.read_line(line)
            for path in files
            for line in path.read_bytes().splitlines()
            if line.strip()
        ]
        now = datetime.now(tz=UTC)
        if options["shift_to_now"]:
            _shift(records, now - timedelta(minutes=1))
        user, _ = get_user_model().objects.get_or_create(username=options["user"])
        result = services.ingest_records(
            user_id=user.pk, records=records, host=options["host"], now=now
        )
        self.stdout.write(
            f"{len(files)} files: accepted {result.accepted}, duplicates {result.duplicates}, "
            f"skipped {result.skipped}, expired {result.expired}, "
            f"rejected {len(result.rejected)}"
        )


def _shift(records: list[object], newest_at: datetime) -> None:
    stamps = [_timestamp(record) for record in records]
    known = [stamp for stamp in stamps if stamp is not None]
    if not known:
        return
    offset = newest_at - max(known)
    for record, stamp in zip(records, stamps, strict=True):
        if stamp is None:
            continue
        shifted = (stamp + offset).isoformat().replace("+00:00", "Z")
        if isinstance(record, wire.WireLine):
            record.timestamp = shifted
        elif isinstance(record, dict):
            record["timestamp"] = shifted


def _timestamp(record: object) -> datetime | None:
    """A line's time, for the shift (lines without a readable one stay as they are)."""
    if isinstance(record, wire.WireLine):
        text: object = record.timestamp
    elif isinstance(record, dict):
        text = record.get("timestamp")
    else:
        return None
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None
