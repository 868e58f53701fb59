"""Backfill progress: files, records, MB/s and ETA; a bar only on a terminal."""

from __future__ import annotations

import io
import logging

import pytest

from claude_usage_agent.progress import BackfillProgress, Snapshot, format_duration, format_progress


def test_it_shows_files_records_rate_and_eta() -> None:
    snapshot = Snapshot(files_total=340, bytes_total=30_000_000, files_done=12)
    snapshot.bytes_read, snapshot.records_sent = 10_000_000, 4512
    assert format_progress(snapshot, elapsed=2.0, bar=False) == (
        "12/340 files  4,512 records  5.0 MB/s  ETA 0:04"
    )


def test_the_bar_fills_with_the_bytes_read() -> None:
    snapshot = Snapshot(files_total=2, bytes_total=100, files_done=1, bytes_read=50)
    assert format_progress(snapshot, elapsed=1.0, bar=True).startswith(
        f"[{'#' * 12}{'-' * 12}]  50%"
    )


def test_nothing_read_yet_has_no_eta() -> None:
    assert format_progress(Snapshot(bytes_total=10), elapsed=0.0, bar=False).endswith("ETA ?")


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "?"), (0, "0:00"), (42.4, "0:42"), (3725, "1:02:05")]
)
def test_durations_read_like_a_clock(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_the_bar_is_redrawn_in_place() -> None:
    stream, clock = io.StringIO(), FakeClock()
    progress = BackfillProgress(stream, interactive=True, clock=clock)
    progress.start(files=2, total_bytes=100)
    clock.now = 1.0
    progress.advance(files=1, bytes_read=50, records=7)
    progress.finish()
    assert stream.getvalue().count("\r") == 2
    assert stream.getvalue().endswith("\n")


def test_otherwise_it_logs_a_line_now_and_then(caplog: pytest.LogCaptureFixture) -> None:
    stream, clock = io.StringIO(), FakeClock()
    caplog.set_level(logging.INFO)
    progress = BackfillProgress(stream, interactive=False, clock=clock, log_every=10)
    progress.start(files=2, total_bytes=100)
    for second in range(1, 21):
        clock.now = float(second)
        progress.advance(bytes_read=5)
    progress.finish()
    assert stream.getvalue() == ""
    assert len([r for r in caplog.records if "files" in r.getMessage()]) == 1 + 2 + 1
