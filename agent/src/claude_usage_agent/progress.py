"""Backfill progress: a live bar on a terminal, an occasional log line otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

log = logging.getLogger(__name__)

MEGABYTE = 1_000_000
BAR_WIDTH = 24


class Progress(Protocol):
    def start(self, files: int, total_bytes: int) -> None: ...

    def advance(self, *, files: int = 0, bytes_read: int = 0, records: int = 0) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    """For the steady state of `watch`: nothing to report between polls."""

    def start(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, *, files: int = 0, bytes_read: int = 0, records: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class Snapshot:
    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    bytes_read: int = 0
    records_sent: int = 0


def format_progress(snapshot: Snapshot, elapsed: float, bar: bool) -> str:
    """`[#####-----] 12/340 files  4,512 records  12.3 MB/s  ETA 0:42`."""
    fraction = snapshot.bytes_read / snapshot.bytes_total if snapshot.bytes_total else 1.0
    fraction = min(fraction, 1.0)
    rate = snapshot.bytes_read / elapsed if elapsed > 0 else 0.0
    remaining = (snapshot.bytes_total - snapshot.bytes_read) / rate if rate > 0 else None
    parts = [
        f"{snapshot.files_done}/{snapshot.files_total} files",
        f"{snapshot.records_sent:,} records",
        f"{rate / MEGABYTE:.1f} MB/s",
        f"ETA {format_duration(remaining)}",
    ]
    if bar:
        filled = round(fraction * BAR_WIDTH)
        parts.insert(0, f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {fraction:4.0%}")
    return "  ".join(parts)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class BackfillProgress:
    """Throttled: a redrawn bar on a terminal, otherwise a log line every `log_every` seconds."""

    def __init__(
        self,
        stream: TextIO,
        interactive: bool,
        clock: Callable[[], float] = time.monotonic,
        log_every: float = 10.0,
    ) -> None:
        self._stream = stream
        self._interactive = interactive
        self._clock = clock
        self._interval = 0.1 if interactive else log_every
        self._snapshot = Snapshot()
        self._started = self._last_shown = clock()

    def start(self, files: int, total_bytes: int) -> None:
        self._snapshot = Snapshot(files_total=files, bytes_total=total_bytes)
        self._started = self._last_shown = self._clock()
        log.info("backfill: %d files, %.1f MB to read", files, total_bytes / MEGABYTE)

    def advance(self, *, files: int = 0, bytes_read: int = 0, records: int = 0) -> None:
        self._snapshot.files_done += files
        self._snapshot.bytes_read += bytes_read
        self._snapshot.records_sent += records
        if self._clock() - self._last_shown >= self._interval:
            self._show()

    def finish(self) -> None:
        self._show()
        if self._interactive:
            self._stream.write("\n")
            self._stream.flush()

    def _show(self) -> None:
        now = self._clock()
        self._last_shown = now
        line = format_progress(self._snapshot, now - self._started, bar=self._interactive)
        if self._interactive:
            self._stream.write(f"\r{line}\x1b[K")
            self._stream.flush()
        else:
            log.info("backfill: %s", line)
