"""Shipping: the checkpoint moves only after the server answered, and no line is ever skipped."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from claude_usage_agent.backoff import GaveUpError
from claude_usage_agent.checkpoints import load_state, save_state
from claude_usage_agent.discovery import transcript_files
from claude_usage_agent.records import slim_record
from claude_usage_agent.shipper import Shipper, Totals
from claude_usage_agent.transport import IngestResult, parse_ingest_result
from tests.data.copy_ranking import Case, Copy, load_cases
from tests.support import samples

from .fake_server import FakeUsageServer
from .transcripts import (
    SECRET,
    append,
    assistant_line,
    line,
    now_stamp,
    user_record,
)

SERVER = "http://usage.test"


class Crash(Exception):
    """The agent dies mid-run (a kill at the worst moment)."""


class Harness:
    """A shipper over a state file, delivering straight into an in-memory server."""

    def __init__(self, tmp_path: Path, batch_size: int = 1000) -> None:
        self.server = FakeUsageServer()
        self.state_file = tmp_path / "state.json"
        self.batch_size = batch_size
        self.deliveries: list[int] = []
        self.lock = threading.Lock()
        # Called before (or after, for ack_lost) each delivery; may raise Crash.
        self.before: Callable[[int], None] = lambda number: None
        self.ack_lost_on: int | None = None

    def deliver(self, lines: Sequence[bytes]) -> IngestResult:
        with self.lock:  # the agent's senders call this from two threads
            number = len(self.deliveries) + 1
            self.deliveries.append(len(lines))
        self.before(number)
        answer = self.server.ingest([json.loads(raw) for raw in lines])
        if number == self.ack_lost_on:
            raise Crash("answer lost")
        return parse_ingest_result(answer)

    def ship(self, *paths: Path, since: datetime | None = None) -> Totals:
        state = load_state(self.state_file, SERVER)
        shipper = Shipper(
            state=state,
            deliver=self.deliver,
            save=lambda current: save_state(self.state_file, current),
            since=since,
            batch_size=self.batch_size,
        )
        return shipper.ship([str(path) for path in paths])

    def offset(self, path: Path) -> int:
        return load_state(self.state_file, SERVER).files[str(path)].offset


def write_session(path: Path, count: int, prefix: str = "m", tokens: int = 10) -> None:
    """`count` assistant messages, each written as two content-block lines, between prompts.
    The two copies are alike to the millisecond, so that the agent cannot rank them and sends
    both (see the tests of merged copies below): the counts here are of lines."""
    stamp = now_stamp()
    for index in range(count):
        append(path, line(user_record()))
        for _block in range(2):
            append(
                path,
                assistant_line(
                    f"{prefix}{index}",
                    f"req-{prefix}{index}",
                    input_tokens=tokens,
                    timestamp=stamp,
                ),
            )


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_it_ships_only_usage_records_and_no_text(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    write_session(log, 3)
    totals = harness.ship(log)
    assert (totals.lines_read, totals.records_sent) == (9, 6)
    assert (totals.accepted, totals.duplicates) == (3, 3)
    sent = json.dumps(harness.server.batches)
    assert SECRET not in sent
    assert harness.offset(log) == log.stat().st_size


def test_a_second_run_sends_nothing_and_opens_nothing(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    write_session(log, 3)
    harness.ship(log)
    totals = harness.ship(log)
    assert (totals.files_read, totals.records_sent) == (0, 0)


def test_only_lines_appended_since_the_last_run_are_sent(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    write_session(log, 2)
    harness.ship(log)
    write_session(log, 1, prefix="new")
    totals = harness.ship(log)
    assert totals.records_sent == 2
    assert len(harness.server.records) == 3


def test_a_half_written_last_line_waits_for_its_newline(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    write_session(log, 1)
    complete_size = log.stat().st_size
    last = assistant_line("late", "req-late")
    append(log, last[:40])
    assert harness.ship(log).records_sent == 2
    assert harness.offset(log) == complete_size
    assert harness.ship(log).files_read == 0  # unchanged size: not even opened
    append(log, last[40:])
    assert harness.ship(log).records_sent == 1
    assert harness.offset(log) == log.stat().st_size
    assert ("late", "req-late") in harness.server.records


def test_malformed_lines_cost_only_themselves(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    append(log, assistant_line("a", "ra"))
    append(log, b'{"type":"assistant","message":{"usage":{"input_tok\n')
    append(log, b'"just a string"\n<<<<<<< HEAD\n')
    append(log, b'{"usage": "not an object"}\n')
    append(log, assistant_line("b", "rb"))
    totals = harness.ship(log)
    assert (totals.records_sent, totals.malformed_lines) == (2, 1)
    assert harness.offset(log) == log.stat().st_size


def test_a_truncated_file_is_read_again_from_the_start(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    write_session(log, 3)
    harness.ship(log)
    with open(log, "wb") as handle:
        handle.write(assistant_line("fresh", "req-fresh"))
    assert harness.ship(log).records_sent == 1
    assert harness.offset(log) == log.stat().st_size


def test_a_replaced_file_is_read_again_from_the_start(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    write_session(log, 3)
    harness.ship(log)
    replacement = tmp_path / "s.jsonl.new"
    write_session(replacement, 5, prefix="r")  # larger than the old file: only the inode says so
    os.replace(replacement, log)
    assert harness.ship(log).records_sent == 10
    assert len(harness.server.records) == 8


def test_a_file_rewritten_in_place_is_read_again(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    write_session(log, 2)
    harness.ship(log)
    offset = harness.offset(log)
    with open(log, "r+b") as handle:  # same inode, longer, but no line end before the offset
        handle.write(b"x" * (offset + 10) + b"\n" + assistant_line("w", "req-w"))
    assert harness.ship(log).records_sent == 1


def test_checkpoints_move_only_after_the_server_answered(tmp_path: Path) -> None:
    harness = Harness(tmp_path, batch_size=2)
    log = tmp_path / "s.jsonl"
    write_session(log, 3)  # 6 usage lines: three batches of two
    seen: list[int | None] = []

    def record_checkpoint(number: int) -> None:
        state = load_state(harness.state_file, SERVER)
        seen.append(state.files[str(log)].offset if str(log) in state.files else None)

    harness.before = record_checkpoint
    harness.ship(log)
    lines = log.read_bytes().splitlines(keepends=True)
    ends = [sum(len(text) for text in lines[: count + 1]) for count in range(len(lines))]
    batch_ends = [ends[2], ends[5], ends[8]]
    # At each delivery the saved checkpoint is at most the end of a batch already answered
    # (answers are taken in while the next batch is on the wire, so it may lag behind).
    assert seen[0] is None
    for number in (1, 2):
        assert seen[number] in (None, *batch_ends[:number])
    assert harness.offset(log) == batch_ends[-1] == log.stat().st_size


def test_a_batch_spanning_files_moves_all_their_checkpoints(tmp_path: Path) -> None:
    harness = Harness(tmp_path, batch_size=1000)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_session(first, 2)
    write_session(second, 2, prefix="b")
    harness.ship(first, second)
    assert harness.deliveries == [8]
    assert harness.offset(first) == first.stat().st_size
    assert harness.offset(second) == second.stat().st_size


def test_a_failed_delivery_leaves_the_checkpoint_where_it_was(tmp_path: Path) -> None:
    harness = Harness(tmp_path, batch_size=2)
    log = tmp_path / "s.jsonl"
    write_session(log, 3)

    def fail_second(number: int) -> None:
        if number == 2:
            raise GaveUpError("server down")

    harness.before = fail_second
    with pytest.raises(GaveUpError):
        harness.ship(log)
    first_batch_end = sum(len(text) for text in log.read_bytes().splitlines(keepends=True)[:3])
    assert harness.offset(log) == first_batch_end


def _crash_free_totals(tmp_path: Path, files: list[Path]) -> dict[tuple[Any, Any], dict[str, Any]]:
    clean = Harness(tmp_path / "clean", batch_size=3)
    clean.ship(*files)
    return clean.server.records


@pytest.mark.parametrize("crash_at", range(1, 9))
@pytest.mark.parametrize("ack_lost", [False, True], ids=["before-send", "after-ack"])
def test_a_crash_at_any_delivery_ends_with_the_same_server_totals(
    tmp_path: Path, crash_at: int, ack_lost: bool
) -> None:
    files = [tmp_path / "p" / f"s{number}.jsonl" for number in range(3)]
    for number, path in enumerate(files):
        write_session(path, 4, prefix=f"f{number}-", tokens=number + 1)
    (tmp_path / "clean").mkdir()
    expected = _crash_free_totals(tmp_path, files)

    harness = Harness(tmp_path, batch_size=3)

    def crash(number: int) -> None:
        if number == crash_at and not ack_lost:
            raise Crash("killed")

    harness.before = crash
    harness.ack_lost_on = crash_at if ack_lost else None
    with pytest.raises(Crash):
        harness.ship(*files)
    harness.before, harness.ack_lost_on = (lambda number: None), None
    harness.ship(*files)
    assert harness.server.records == expected
    assert harness.ship(*files).records_sent == 0


def test_records_the_server_rejects_are_skipped_not_retried(
    harness: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    harness.server.reject = lambda record: "bad" if record["message"]["id"] == "m1" else None
    log = tmp_path / "s.jsonl"
    write_session(log, 3)
    totals = harness.ship(log)
    assert (totals.rejected, totals.accepted) == (2, 2)
    assert "server rejected" in caplog.text
    assert "message m1, request req-m1" in caplog.text
    assert harness.offset(log) == log.stat().st_size
    assert harness.ship(log).records_sent == 0


def test_since_leaves_out_older_records(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    append(log, assistant_line("old", "r1", timestamp="2025-10-01T10:00:00.000Z"))
    append(log, assistant_line("new", "r2", timestamp="2025-10-05T10:00:00.000Z"))
    totals = harness.ship(log, since=datetime(2025, 10, 3, tzinfo=UTC))
    assert (totals.records_sent, totals.older_than_since) == (1, 1)
    assert list(harness.server.records) == [("new", "r2")]


def test_a_file_deleted_before_reading_is_skipped(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    write_session(log, 1)
    assert harness.ship(tmp_path / "gone.jsonl", log).records_sent == 2


def test_an_empty_new_file_gets_a_checkpoint(harness: Harness, tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    log.touch()
    harness.ship(log)
    assert harness.offset(log) == 0


def test_the_sample_tree_ships_every_usage_line(harness: Harness) -> None:
    files = [Path(name) for name in transcript_files([samples("claude-config", "projects")])]
    totals = harness.ship(*files)
    # Every line with a message.usage object: sent, or merged into a better copy sent with it.
    assert totals.records_sent + totals.copies_merged == 541
    assert (totals.files_read, totals.malformed_lines) == (16, 1)
    sent = [record for batch in harness.server.batches for record in batch]
    assert not any("content" in record["message"] for record in sent)


# --- copies of one message within a batch ----------------------------------------------------

T0 = "2025-10-05T10:00:00.000Z"
T1 = "2025-10-05T10:00:00.250Z"


def test_only_the_copy_the_server_would_keep_is_sent(harness: Harness, tmp_path: Path) -> None:
    """Claude Code's content-block lines: early copies carry partial output counts."""
    log = tmp_path / "s.jsonl"
    for output_tokens, stamp in ((1, T0), (40, T1), (7, T1)):
        append(log, assistant_line("m", "r", output_tokens=output_tokens, timestamp=stamp))
    totals = harness.ship(log)
    assert (totals.records_sent, totals.copies_merged) == (1, 2)
    (sent,) = harness.server.batches[0]
    assert sent["message"]["usage"]["output_tokens"] == 40
    assert harness.offset(log) == log.stat().st_size


def test_copies_the_agent_cannot_rank_are_all_sent(harness: Harness, tmp_path: Path) -> None:
    """Same rank (the server's further tie-breaks decide) or a count the server would refuse
    (the other copy may be the one that counts): the server gets them all."""
    log = tmp_path / "s.jsonl"
    append(log, assistant_line("same", "r", timestamp=T0, session_id="a"))
    append(log, assistant_line("same", "r", timestamp=T0, session_id="b"))
    append(log, assistant_line("bad", "r", timestamp=T0))
    append(log, assistant_line("bad", "r", timestamp=T1, output_tokens=-3))
    append(log, assistant_line("bad", "r", timestamp=T1, output_tokens=10**12))
    totals = harness.ship(log)
    assert (totals.records_sent, totals.copies_merged) == (5, 0)


def test_merging_copies_leaves_the_server_totals_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [Path(name) for name in transcript_files([samples("claude-config", "projects")])]
    (tmp_path / "merged").mkdir()
    merged = Harness(tmp_path / "merged")
    assert merged.ship(*files).copies_merged > 0
    monkeypatch.setattr("claude_usage_agent.shipper.copy_rank", lambda record: None)
    everything = Harness(tmp_path)
    assert everything.ship(*files).copies_merged == 0
    assert merged.server.records == everything.server.records


# --- the copy the server keeps: the cases of tests/data/copy_ranking.json --------------------

RANKING_CASES = load_cases()


def slim(copy: Copy) -> dict[str, Any]:
    record = slim_record(copy.line)
    assert record is not None
    return record


def kept_by_the_server(case: Case) -> dict[tuple[str, str], dict[str, Any]]:
    """What the fake server should hold once all the case's copies have arrived."""
    line = case.kept_copy.line
    return {(line["message"]["id"], line["requestId"]): slim(case.kept_copy)}


@pytest.mark.parametrize("case", RANKING_CASES, ids=str)
def test_the_fake_server_keeps_the_copy_the_real_one_keeps_in_every_arrival_order(
    case: Case,
) -> None:
    for order in case.arrival_orders():
        one_by_one = FakeUsageServer()
        for copy in order:
            one_by_one.ingest([slim(copy)], host=copy.host)
        assert one_by_one.records == kept_by_the_server(case), order
        if case.from_one_machine:  # a batch comes from one machine
            in_one_batch = FakeUsageServer()
            in_one_batch.ingest([slim(copy) for copy in order], host=order[0].host)
            assert in_one_batch.records == kept_by_the_server(case), order


# One agent reads the logs of one machine: copies from two never meet in its batches.
ONE_MACHINE_CASES = [case for case in RANKING_CASES if case.from_one_machine]


@pytest.mark.parametrize("case", ONE_MACHINE_CASES, ids=str)
def test_the_agent_sends_the_copy_the_server_keeps_in_whatever_order_it_reads_them(
    case: Case, tmp_path: Path
) -> None:
    """Alone where the agent decides; with the copies it cannot rank against it where it
    leaves the choice to the server."""
    kept = slim(case.kept_copy)
    for number, order in enumerate(case.arrival_orders()):
        (tmp_path / str(number)).mkdir()
        harness = Harness(tmp_path / str(number))
        log = tmp_path / str(number) / "s.jsonl"
        for copy in order:
            append(log, line(copy.line))
        harness.ship(log)
        sent = [record for batch in harness.server.batches for record in batch]
        assert harness.server.records == kept_by_the_server(case), order
        if case.agent_decides:
            assert sent == [kept], order
        else:
            assert kept in sent, order
            assert len(sent) > 1, order


# --- reading goes on while the server answers -------------------------------------------------


class Events:
    """A Progress that records who advanced what, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def start(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, *, files: int = 0, bytes_read: int = 0, records: int = 0) -> None:
        if records:
            self.seen.append(f"answered {records}")
        elif bytes_read and not files:
            self.seen.append("read a batch")

    def finish(self) -> None:
        pass


def test_the_next_batch_is_read_while_the_server_answers(tmp_path: Path) -> None:
    harness = Harness(tmp_path, batch_size=2)
    log = tmp_path / "s.jsonl"
    for index in range(6):
        append(log, assistant_line(f"m{index}", f"r{index}"))
    harness.before = lambda number: time.sleep(0.2) if number == 1 else None
    events = Events()
    shipper = Shipper(
        state=load_state(harness.state_file, SERVER),
        deliver=harness.deliver,
        save=lambda current: save_state(harness.state_file, current),
        batch_size=2,
    )
    shipper.ship([str(log)], events)
    # The second batch (and the third, which then waits) was read before the first was
    # answered; no more than that: reading stops while two batches are unanswered.
    assert events.seen[:4] == ["read a batch"] * 3 + ["answered 2"]
    assert harness.offset(log) == log.stat().st_size


def test_after_a_failed_batch_no_later_answer_is_taken_in(tmp_path: Path) -> None:
    """The third batch is on the wire beside the second when the second fails: its answer
    must not move the checkpoint past the second batch's records, and no batch after it is
    sent at all."""
    harness = Harness(tmp_path, batch_size=2)
    log = tmp_path / "s.jsonl"
    for index in range(16):  # eight batches
        append(log, assistant_line(f"m{index}", f"r{index}"))

    def fail_second_slowly(number: int) -> None:
        if number == 2:
            time.sleep(0.2)  # time enough for the third batch to be sent and answered
            raise GaveUpError("server down")

    harness.before = fail_second_slowly
    with pytest.raises(GaveUpError):
        harness.ship(log)
    assert harness.deliveries == [2, 2, 2]
    first_batch_end = sum(len(text) for text in log.read_bytes().splitlines(keepends=True)[:2])
    assert harness.offset(log) == first_batch_end
    assert Harness(tmp_path, batch_size=2).ship(log).records_sent == 14  # all but the first
