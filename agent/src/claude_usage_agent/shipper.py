"""Reading transcripts from their checkpoints and shipping usage records in acknowledged batches.

The one invariant: a file's checkpoint moves only after the server answered for the batch that
holds that file's records up to that point. Everything before a checkpoint has been
acknowledged; everything after it will be read again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

from claude_usage_agent.checkpoints import AgentState, Checkpoint, needs_reading, resume_offset
from claude_usage_agent.lines import follows_line_end, iter_complete_lines
from claude_usage_agent.progress import NoProgress, Progress
from claude_usage_agent.records import (
    MalformedLineError,
    describe_record,
    encode_record,
    is_older_than,
    might_carry_usage,
    parse_line,
    slim_record,
)
from claude_usage_agent.transport import IngestResult

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 1000


@dataclass
class Totals:
    files_read: int = 0
    lines_read: int = 0
    malformed_lines: int = 0
    older_than_since: int = 0
    records_sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: int = 0
    expired: int = 0

    def count(self, result: IngestResult, sent: int) -> None:
        self.records_sent += sent
        self.accepted += result.accepted
        self.duplicates += result.duplicates
        self.skipped += result.skipped
        self.rejected += len(result.rejected)
        self.expired += result.expired

    def summary(self) -> str:
        text = (
            f"sent {self.records_sent} records from {self.files_read} files: "
            f"{self.accepted} new, {self.duplicates} duplicates, {self.skipped} skipped, "
            f"{self.rejected} rejected"
        )
        if self.expired:
            text += f"; {self.expired} older than the server's retention (dropped there)"
        if self.malformed_lines:
            text += f"; {self.malformed_lines} malformed lines ignored"
        if self.older_than_since:
            text += f"; {self.older_than_since} records older than --since left out"
        return text


@dataclass
class Batch:
    lines: list[bytes] = field(default_factory=list)
    # The file each record came from, to name it if the server rejects the record.
    sources: list[str] = field(default_factory=list)
    # Where each file's checkpoint goes once the server has answered for `lines`.
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)


class Shipper:
    def __init__(
        self,
        *,
        state: AgentState,
        deliver: Callable[[Sequence[bytes]], IngestResult],
        save: Callable[[AgentState], None],
        since: datetime | None = None,
        batch_size: int = MAX_BATCH_SIZE,
    ) -> None:
        self._state = state
        self._deliver = deliver
        self._save = save
        self._since = since
        self._batch_size = batch_size
        self._batch = Batch()
        self._totals = Totals()
        self._progress: Progress = NoProgress()

    def plan(self, paths: Iterable[str]) -> tuple[int, int]:
        """(files, bytes) that a `ship` would read now, for the progress display."""
        files = total = 0
        for path in paths:
            status = self._changed(path)
            if status is not None:
                known = self._state.files.get(path)
                files += 1
                total += status.st_size - resume_offset(known, status.st_ino, status.st_size)
        return files, total

    def ship(self, paths: Iterable[str], progress: Progress | None = None) -> Totals:
        """Send everything new in `paths`; on return every checkpoint is saved."""
        self._totals = Totals()
        self._progress = progress or NoProgress()
        for path in paths:
            self._read_file(path)
        self._flush()
        return self._totals

    def _changed(self, path: str) -> os.stat_result | None:
        """The file's status when it may hold something new; a stat, not an open, because
        `watch` asks this of every file every second."""
        try:
            status = os.stat(path)
        except FileNotFoundError:
            return None  # removed since discovery (Claude Code's cleanup): nothing left to send
        except OSError as error:
            log.warning("cannot read %s: %s", path, error.strerror)
            return None
        known = self._state.files.get(path)
        return status if needs_reading(known, status.st_ino, status.st_size) else None

    def _read_file(self, path: str) -> None:
        if self._changed(path) is None:
            return
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the `with` below
        except FileNotFoundError:
            return
        except OSError as error:
            log.warning("cannot read %s: %s", path, error.strerror)
            return
        with handle:
            # fstat on the open file: the inode is the one we read, even if the path was
            # replaced since the stat above.
            status = os.fstat(handle.fileno())
            known = self._state.files.get(path)
            self._totals.files_read += 1
            start = self._start_offset(handle, path, known, status.st_size, status.st_ino)
            self._read_from(handle, path, status.st_ino, start)

    def _start_offset(
        self, handle: BinaryIO, path: str, known: Checkpoint | None, size: int, inode: int
    ) -> int:
        offset = resume_offset(known, inode, size)
        if offset and not follows_line_end(handle, offset):
            log.info("%s was rewritten in place; reading it again from the start", path)
            return 0
        if known is not None and known.offset and not offset:
            log.info("%s was truncated or replaced; reading it again from the start", path)
        return offset

    def _read_from(self, handle: BinaryIO, path: str, inode: int, start: int) -> None:
        offset = reported = start
        for line, end in iter_complete_lines(handle, start):
            self._take_line(line, path, end)
            offset = end
            self._batch.checkpoints[path] = Checkpoint(inode, end, end)
            if len(self._batch.lines) >= self._batch_size:
                self._progress.advance(bytes_read=offset - reported)
                reported = offset
                self._flush()
        # The size seen includes a half-written last line: it is re-read once the file grows.
        size_seen = handle.tell()
        self._batch.checkpoints[path] = Checkpoint(inode, size_seen, offset)
        self._progress.advance(files=1, bytes_read=size_seen - reported)

    def _take_line(self, line: bytes, path: str, end: int) -> None:
        self._totals.lines_read += 1
        if not might_carry_usage(line):
            return
        try:
            record = slim_record(parse_line(line))
        except MalformedLineError as error:
            # Costs only this line: the checkpoint moves past it like any other.
            self._totals.malformed_lines += 1
            log.debug("%s: ignoring a malformed line ending at byte %d (%s)", path, end, error)
            return
        if record is None:
            return
        if is_older_than(record, self._since):
            self._totals.older_than_since += 1
            return
        self._batch.lines.append(encode_record(record))
        self._batch.sources.append(path)

    def _flush(self) -> None:
        batch, self._batch = self._batch, Batch()
        if batch.lines:
            result = self._deliver(batch.lines)
            self._totals.count(result, len(batch.lines))
            self._progress.advance(records=len(batch.lines))
            _log_rejections(batch, result)
        # Only now, with the server's answer in hand, may the checkpoints move.
        if batch.checkpoints:
            self._state.files.update(batch.checkpoints)
            self._save(self._state)


def _log_rejections(batch: Batch, result: IngestResult) -> None:
    for rejection in result.rejected:
        if 0 <= rejection.index < len(batch.lines):
            record = describe_record(batch.lines[rejection.index])
            where = f"{batch.sources[rejection.index]} ({record})"
        else:
            where = f"record #{rejection.index} of a batch"
        log.warning(
            "server rejected %s: %s %s; skipping it", where, rejection.code, rejection.message
        )
