"""Reading transcripts from their checkpoints and shipping usage records in acknowledged batches.

The one invariant: a file's checkpoint moves only after the server answered for the batch that
holds that file's records up to that point. Everything before a checkpoint has been
acknowledged; everything after it will be read again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

from claude_usage_agent.checkpoints import AgentState, Checkpoint, needs_reading, resume_offset
from claude_usage_agent.lines import follows_line_end, iter_complete_lines
from claude_usage_agent.progress import NoProgress, Progress
from claude_usage_agent.records import (
    CopyRank,
    MalformedLineError,
    copy_rank,
    describe_record,
    encode_record,
    is_older_than,
    might_carry_usage,
    slim_line,
)
from claude_usage_agent.transport import EncodedLines, IngestResult

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 1000
# Requests in flight at once (see _InOrder).
SENDERS = 2


@dataclass
class Totals:
    files_read: int = 0
    lines_read: int = 0
    malformed_lines: int = 0
    older_than_since: int = 0
    # Copies of a message that a better copy in the same batch made pointless to send
    # (Claude Code writes one line per content block, each repeating the usage).
    copies_merged: int = 0
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
        if self.copies_merged:
            text += f"; {self.copies_merged} repeated copies merged before sending"
        return text


@dataclass
class Batch:
    lines: list[bytes] = field(default_factory=list)
    # The file each record came from, to name it if the server rejects the record.
    sources: list[str] = field(default_factory=list)
    # Where each file's checkpoint goes once the server has answered for `lines`.
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    # (message id, request id) -> (index in `lines`, rank) of the copy this batch carries.
    copies: dict[tuple[str, str], tuple[int, CopyRank]] = field(default_factory=dict)


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
        self._save = save
        self._since = since
        self._batch_size = batch_size
        self._batch = Batch()
        self._totals = Totals()
        self._progress: Progress = NoProgress()
        self._sender = _InOrder(deliver, self._answer)

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
        self._sender.drain()
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
            if len(self._batch.lines) >= self._batch_size:
                self._batch.checkpoints[path] = Checkpoint(inode, end, end)
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
            record = slim_line(line)
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
        batch = self._batch
        ranked = copy_rank(record)
        if ranked is not None:
            key, rank = ranked
            held = batch.copies.get(key)
            if held is not None and held[1] != rank:
                # The server keeps only the preferred copy of a (message id, request id);
                # sending the other one would cost it a duplicate check and change nothing.
                self._totals.copies_merged += 1
                index, held_rank = held
                if rank > held_rank:
                    batch.lines[index] = encode_record(record)
                    batch.sources[index] = path
                    batch.copies[key] = (index, rank)
                return
            batch.copies[key] = (len(batch.lines), rank)
        batch.lines.append(encode_record(record))
        batch.sources.append(path)

    def _flush(self) -> None:
        """Hand the batch to the sender; reading goes on while the server answers it."""
        batch, self._batch = self._batch, Batch()
        if batch.lines or batch.checkpoints:
            self._sender.submit(batch, EncodedLines(batch.lines) if batch.lines else None)

    def _answer(self, batch: Batch, result: IngestResult) -> None:
        """The server answered for `batch`, and for every batch before it."""
        if batch.lines:
            self._totals.count(result, len(batch.lines))
            self._progress.advance(records=len(batch.lines))
            _log_rejections(batch, result)
        # Only now, with the server's answer in hand, may the checkpoints move.
        if batch.checkpoints:
            self._state.files.update(batch.checkpoints)
            self._save(self._state)


class _InOrder:
    """Sends batches from background threads while the caller reads the next ones, and hands
    the answers back to the caller's thread in the order the batches were read.

    Only the requests run in the background: answers are taken in (totals, checkpoints, the
    state file) on the caller's thread. At most ``senders`` batches are unanswered at once,
    each on the wire or about to be, while the caller reads the next one; beyond that the
    caller blocks, so memory stays at a few batches whatever the tree's size. Two senders:
    the server overlaps one request's Python work with the other's waits on PostgreSQL and
    Redis (bench.agent_backfill measures the difference).

    An answer is taken in only after every earlier one: once a batch fails, the failure is
    raised to the caller and no later answer is taken in (its checkpoints would skip the
    failed batch's records), and no batch not yet started is sent. A later batch already on
    the wire may reach the server; it is sent again next time, and the server drops it as a
    duplicate. The threads are daemons: a killed or interrupted agent abandons the batches in
    flight, whose checkpoints were not saved, and reads them again next time."""

    def __init__(
        self,
        send: Callable[[Sequence[bytes]], IngestResult],
        answer: Callable[[Batch, IngestResult], None],
        senders: int = SENDERS,
    ) -> None:
        self._send = send
        self._answer = answer
        self._senders = senders
        self._pending: deque[tuple[Batch, Future[IngestResult]]] = deque()
        self._queue: deque[tuple[EncodedLines | None, Future[IngestResult]]] = deque()
        self._ready = threading.Condition()
        self._failed = False
        self._threads: list[threading.Thread] = []

    def submit(self, batch: Batch, lines: EncodedLines | None) -> None:
        while self._pending and self._pending[0][1].done():
            self._take_oldest()
        while len(self._pending) >= self._senders:
            self._take_oldest()
        future: Future[IngestResult] = Future()
        self._pending.append((batch, future))
        with self._ready:
            self._queue.append((lines, future))
            self._ready.notify()
        while len(self._threads) < self._senders:
            thread = threading.Thread(target=self._run, name="ship", daemon=True)
            thread.start()
            self._threads.append(thread)

    def drain(self) -> None:
        """Wait for the answers to every submitted batch and take them in."""
        try:
            while self._pending:
                self._take_oldest()
        finally:
            self._pending.clear()

    def _take_oldest(self) -> None:
        batch, future = self._pending.popleft()
        self._answer(batch, future.result())  # raises the failure of that batch, if any

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                lines, future = self._queue.popleft()
            if self._failed:
                future.set_exception(RuntimeError("an earlier batch failed; not sent"))
            elif lines is None:
                future.set_result(IngestResult())  # only checkpoints: nothing to send
            else:
                try:
                    future.set_result(self._send(lines))
                except BaseException as error:  # noqa: BLE001 - raised on the caller's thread
                    self._failed = True
                    future.set_exception(error)


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
