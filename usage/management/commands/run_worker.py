"""``manage.py run_worker``: the periodic jobs (the Procfile's ``worker``).

Every tick: catch every user's projection up to the log (repairs a crash between an
ingest's commit and its projection), keep finished windows' totals, apply retention.
"""

import logging
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand

from usage import services
from usage.completed_windows import Progress
from usage.projection import projector

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the periodic jobs: projection catch-up, completed windows, retention."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--interval", type=float, default=60.0, help="seconds between ticks")
        parser.add_argument("--once", action="store_true", help="run one tick and exit")

    progress = Progress()  # what the completed-window bookkeeping has seen

    def handle(self, *args: Any, **options: Any) -> None:
        # Which price data this process prices with, and the projections it re-prices.
        try:
            projector.reprice_at_start()
        except Exception:  # Redis or the database down: the ticks (and reads) catch up later
            log.exception("could not compare the projections' price data with this one's")
        if options["once"]:
            self.tick()
            return
        # Ctrl-C (make run: the whole process group gets it) and SIGTERM (a platform, or
        # backend.serve stopping its children) end the loop quietly, through the exit
        # handlers: the embedded Redis must see this process leave (backend/embedded_redis.py).
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        log.info("periodic jobs running, every %g s", options["interval"])
        try:
            while True:
                self.tick()
                time.sleep(options["interval"])
        except _Stopped:
            return

    def tick(self) -> None:
        self.progress = services.run_periodic_jobs(now=datetime.now(tz=UTC), since=self.progress)


class _Stopped(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, as KeyboardInterrupt is: it may arrive
    inside a job, and a job's ``except Exception`` (a failed job is logged, the others run)
    must not take it for a failure and go on."""


_stopping = threading.Event()


def _stop(signum: int, frame: object) -> None:
    # Once only: Ctrl-C reaches the whole group, then the launcher sends SIGTERM, and the
    # second must not interrupt the exit handlers.
    if not _stopping.is_set():
        _stopping.set()
        raise _Stopped
