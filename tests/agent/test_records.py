"""Record slimming: usage-bearing lines only, and nothing of the conversation leaves the machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from claude_usage_agent import records
from claude_usage_agent.records import (
    ENVELOPE_FIELDS,
    MESSAGE_FIELDS,
    CopyRank,
    MalformedLineError,
    copy_rank,
    describe_record,
    encode_record,
    is_older_than,
    might_carry_usage,
    parse_line,
    record_time,
    slim_line,
    slim_record,
)
from tests.data.copy_ranking import Case, Copy, load_cases
from tests.support import samples

from .transcripts import SECRET, assistant_record, user_record


def test_it_keeps_ids_model_usage_and_the_envelope() -> None:
    record = assistant_record("msg_1", "req_1", timestamp="2025-10-05T20:13:17.059Z")
    record["costUSD"] = 0.12
    slim = slim_record(record)
    assert slim == {
        "type": "assistant",
        "timestamp": "2025-10-05T20:13:17.059Z",
        "sessionId": "session-1",
        "cwd": "/home/dev/acme-api",
        "isSidechain": False,
        "requestId": "req_1",
        "uuid": "uuid-msg_1-req_1",
        "version": "2.0.29",
        "gitBranch": "main",
        "costUSD": 0.12,
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "stop_reason": "end_turn",
            "usage": record["message"]["usage"],
        },
    }


def test_it_drops_every_piece_of_text() -> None:
    record = assistant_record("msg_1", "req_1")
    record["toolUseResult"] = {"stdout": SECRET}
    record["error"] = SECRET
    slim = slim_record(record)
    assert slim is not None
    assert SECRET not in encode_record(slim).decode()


@pytest.mark.parametrize(
    "record",
    [
        user_record(),
        {"type": "summary", "summary": "x"},
        {"type": "assistant", "message": {"id": "m", "usage": None}},
        {"type": "assistant", "message": {"id": "m", "usage": 12}},
        {"type": "assistant", "message": "not an object"},
    ],
)
def test_records_without_a_usage_object_are_not_sent(record: dict[str, object]) -> None:
    assert slim_record(record) is None


@pytest.mark.parametrize(
    "line",
    [b'{"type":"assistant","message":{"usage":', b"<<<<<<< HEAD", b'"just a string"', b"[1,2]"],
)
def test_malformed_lines_are_reported_as_such(line: bytes) -> None:
    with pytest.raises(MalformedLineError):
        parse_line(line)


def test_non_standard_constants_are_malformed_rather_than_forwarded() -> None:
    with pytest.raises(MalformedLineError):
        parse_line(b'{"message":{"usage":{"input_tokens":NaN}}}')


def test_invalid_utf8_is_malformed() -> None:
    with pytest.raises(MalformedLineError):
        parse_line(b'{"a":"\xff\xfe"}')


def test_the_prefilter_only_lets_usage_candidates_through() -> None:
    assert might_carry_usage(b'{"message":{"usage":{}}}')
    assert not might_carry_usage(json.dumps(user_record()).encode())


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2025-10-05T20:13:17.059Z", datetime(2025, 10, 5, 20, 13, 17, 59000, tzinfo=UTC)),
        ("2025-10-05T20:13:17", datetime(2025, 10, 5, 20, 13, 17, tzinfo=UTC)),
        ("yesterday", None),
        (None, None),
    ],
)
def test_it_reads_timestamps_as_aware_utc(stamp: str | None, expected: datetime | None) -> None:
    assert record_time({"timestamp": stamp}) == expected


def test_since_excludes_older_records_but_keeps_undated_ones() -> None:
    since = datetime(2025, 10, 5, 18, tzinfo=UTC)
    assert is_older_than({"timestamp": "2025-10-05T17:59:59Z"}, since)
    assert not is_older_than({"timestamp": "2025-10-05T18:00:00Z"}, since)
    assert not is_older_than({}, since)
    assert not is_older_than({"timestamp": "2020-01-01T00:00:00Z"}, None)


def test_it_describes_a_record_by_its_ids() -> None:
    line = encode_record({"requestId": "req_1", "message": {"id": "msg_1"}})
    assert describe_record(line) == "message msg_1, request req_1"


# --- slim_line: the one-step decode the shipper uses -----------------------------------------


def sample_usage_lines() -> list[bytes]:
    """Every usage candidate of the reference sample tree, subagent files included."""
    return [
        line
        for path in sorted(samples("claude-config", "projects").rglob("*.jsonl"))
        for line in path.read_bytes().splitlines()
        if might_carry_usage(line)
    ]


def slim_in_two_steps(line: bytes) -> dict[str, object] | type[MalformedLineError] | None:
    try:
        return slim_record(parse_line(line))
    except MalformedLineError:
        return MalformedLineError


def slim_in_one_step(line: bytes) -> dict[str, object] | type[MalformedLineError] | None:
    try:
        return slim_line(line)
    except MalformedLineError:
        return MalformedLineError


def test_slim_line_equals_parsing_then_slimming_on_every_sample_line() -> None:
    lines = sample_usage_lines()
    assert len(lines) > 100
    for line in lines:
        one_step = slim_in_one_step(line)
        assert one_step == slim_in_two_steps(line)
        # The same bytes go to the server, key order included.
        if isinstance(one_step, dict):
            assert encode_record(one_step) == encode_record(slim_record(parse_line(line)) or {})


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"assistant","message":"not an object","usage":1}',
        b'{"type":"assistant","message":null,"usage":1}',
        b'{"message":{"id":"m","usage":12}}',
        b'{"message":{"id":"m","usage":null}}',
        b'{"message":{"id":"m"},"usage":{}}',
        b'[{"message":{"usage":{}}}]',
        b'"usage"',
        b'{"message":{"usage":{"input_tokens":1',
        b'{"message":{"usage":{"input_tokens":NaN}}}',
        b'{"message":{"usage":{"input_tokens":123456789012345678901234567890}}}',
        b'{"message":{"id":"m","usage":{"input_tokens":1},"content":"\\ud800"}}',
        b'{"message":{"id":"\\ud800","usage":{"input_tokens":1}}}',
        b'{"message":{"id":"a","usage":{"input_tokens":1}},"message":{"id":"b","usage":{}}}',
        b'{"cwd":"\xff","message":{"id":"m","usage":{"input_tokens":1}}}',
        b'{"message":{"id":"m","usage":{"input_tokens":1}}} trailing',
        b'{"costUSD":0.1,"isSidechain":true,"message":{"usage":{"output_tokens":2}},"x":[1]}',
    ],
)
def test_slim_line_equals_parsing_then_slimming_on_odd_lines(line: bytes) -> None:
    assert slim_in_one_step(line) == slim_in_two_steps(line)


def test_text_that_is_dropped_unread_may_be_invalid_utf8() -> None:
    """The one difference: `content` is skipped unread, so its bytes are not checked, and
    the usage counts (ccusage counts such a line too). In a kept field they still make the
    line malformed."""
    line = b'{"message":{"id":"m","usage":{"input_tokens":1},"content":"\xff\xfe"}}'
    assert slim_line(line) == {"message": {"id": "m", "usage": {"input_tokens": 1}}}
    with pytest.raises(MalformedLineError):
        parse_line(line)
    with pytest.raises(MalformedLineError):
        slim_line(b'{"message":{"id":"\xff","usage":{"input_tokens":1}}}')


def test_the_one_step_decode_keeps_the_same_fields_in_the_same_order() -> None:
    assert records._Line.__struct_fields__ == (*ENVELOPE_FIELDS, "message")
    assert records._Message.__struct_fields__ == MESSAGE_FIELDS


# --- copy_rank: the server's choice among copies (tests/data/copy_ranking.json) ---------------

RANKING_CASES = load_cases()


def rank_of(copy: Copy) -> CopyRank | None:
    slim = slim_record(copy.line)
    assert slim is not None
    ranked = copy_rank(slim)
    if ranked is None:
        return None
    key, rank = ranked
    assert key == (copy.line["message"]["id"], copy.line["requestId"])
    return rank


def ranks_of(case: Case) -> tuple[CopyRank | None, list[CopyRank | None]]:
    """The kept copy's rank, and the other copies'."""
    ranks = [rank_of(copy) for copy in case.copies]
    return ranks[case.kept], ranks[: case.kept] + ranks[case.kept + 1 :]


@pytest.mark.parametrize("case", RANKING_CASES, ids=str)
def test_no_copy_ranks_above_the_one_the_server_keeps(case: Case) -> None:
    """Else the shipper would send that copy alone, and the server could not keep its own."""
    kept, others = ranks_of(case)
    if kept is not None:
        assert not any(other is not None and other > kept for other in others)


@pytest.mark.parametrize("case", [case for case in RANKING_CASES if case.agent_decides], ids=str)
def test_the_kept_copy_ranks_above_every_other_where_the_agent_decides(case: Case) -> None:
    kept, others = ranks_of(case)
    assert kept is not None
    assert all(other is not None and other < kept for other in others)


@pytest.mark.parametrize(
    "case", [case for case in RANKING_CASES if not case.agent_decides], ids=str
)
def test_the_agent_leaves_the_choice_to_the_server_where_it_defers(case: Case) -> None:
    """The kept copy ties with another (the server's tie-break decides) or a copy has no rank
    (the server may refuse it): the shipper then sends both."""
    kept, others = ranks_of(case)
    assert kept is None or any(other is None or other == kept for other in others)
