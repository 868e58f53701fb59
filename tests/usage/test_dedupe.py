"""Which copy of a message counts: once per (message id, request id), the larger copy wins, a
sidechain replay of a parent message never counts, and the outcome never depends on the order
the copies arrive in or on how they are split into batches. Pure: no database, no Redis.

Which copy is the larger one is told by the cases of ``tests/data/copy_ranking.json``, which
the agent's tests read too."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from tests.data.copy_ranking import Case, Copy, load_cases
from usage.dedupe import Entry, decide
from usage.events import (
    EventKind,
    Feed,
    InvalidRecord,
    UsageRecord,
    otlp_message_id,
    otlp_sequence_message_id,
    parse_record,
)

T0 = datetime(2025, 10, 5, 21, 0, tzinfo=UTC)
Key = tuple[str, str]


def record(
    message_id: str = "msg_1",
    request_id: str = "req_1",
    *,
    output_tokens: int = 400,
    seconds: float = 0,
    session_id: str = "session-a",
    sidechain: bool = False,
    host: str = "laptop",
) -> UsageRecord:
    return UsageRecord(
        message_id=message_id,
        request_id=request_id,
        timestamp=T0 + timedelta(seconds=seconds),
        model="claude-sonnet-4-5-20250929",
        input_tokens=3,
        output_tokens=output_tokens,
        cache_creation_5m_tokens=3000,
        cache_creation_1h_tokens=0,
        cache_read_tokens=14000,
        session_id=session_id,
        project_path="/home/dev/acme-api",
        is_sidechain=sidechain,
        host=host,
    )


def otlp_copy(
    request_id: str = "req_1",
    *,
    cost: int | None = 12_345_000,
    output_tokens: int = 400,
    seconds: float = 0.05,
    sequence: int = 7,
) -> UsageRecord:
    """The same request as Claude Code's OpenTelemetry export sends it: keyed by its request
    id (or, without one, its session, sequence and time), cache writes unsplit, with the
    cost Claude Code reported."""
    moment = T0 + timedelta(seconds=seconds)
    message_id = (
        otlp_message_id(request_id)
        if request_id
        else otlp_sequence_message_id("session-a", sequence, moment)
    )
    return record(message_id, request_id, output_tokens=output_tokens, seconds=seconds)._replace(
        project_path="", feed=Feed.OTLP.value, reported_cost_nanos=cost
    )


def fold(records: Sequence[UsageRecord], logged: Iterable[Entry] = ()) -> dict[Key, Entry]:
    """The ledger after ``records`` arrive on top of ``logged``, as the log would hold it:
    the latest revision of every key."""
    state = {entry.key: entry for entry in logged}
    for decision in decide(records, list(state.values())).decisions:
        key = (decision.record.message_id, decision.record.request_id)
        counted = decision.kind is not EventKind.RETRACTED
        state[key] = Entry(record=decision.record, revision=decision.revision, counted=counted)
    return state


def counted(state: dict[Key, Entry]) -> dict[Key, UsageRecord]:
    return {key: entry.record for key, entry in state.items() if entry.counted}


def test_it_counts_a_duplicated_line_once() -> None:
    outcome = decide([record(), record()], [])

    assert [(d.kind, d.revision) for d in outcome.decisions] == [(EventKind.RECORDED, 0)]
    assert outcome.duplicates == 1


def test_a_larger_later_copy_revises_the_counted_one() -> None:
    partial, full = record(output_tokens=1), record(output_tokens=412, seconds=0.3)

    outcome = decide([partial, full], [])

    assert [(d.kind, d.record, d.revision) for d in outcome.decisions] == [
        (EventKind.RECORDED, partial, 0),
        (EventKind.REVISED, full, 1),
    ]
    assert outcome.duplicates == 0


def test_a_smaller_later_copy_is_a_duplicate() -> None:
    full, partial = record(output_tokens=412, seconds=0.3), record(output_tokens=1)

    outcome = decide([full, partial], [])

    assert [(d.kind, d.record) for d in outcome.decisions] == [(EventKind.RECORDED, full)]
    assert outcome.duplicates == 1


def test_a_larger_copy_of_a_logged_message_is_its_next_revision() -> None:
    logged = [Entry(record=record(output_tokens=1), revision=2, counted=True)]

    outcome = decide([record(output_tokens=412)], logged)

    assert [(d.kind, d.revision) for d in outcome.decisions] == [(EventKind.REVISED, 3)]


def test_a_copy_no_larger_than_the_logged_one_is_a_duplicate() -> None:
    logged = [Entry(record=record(output_tokens=412), revision=0, counted=True)]

    outcome = decide([record(output_tokens=412), record(output_tokens=1)], logged)

    assert outcome.decisions == []
    assert outcome.duplicates == 2


def test_a_resumed_copy_under_a_new_session_is_a_duplicate() -> None:
    original, resumed = record(), record(session_id="session-b")

    outcome = decide([original, resumed], [])

    assert [d.record for d in outcome.decisions] == [original]
    assert outcome.duplicates == 1


def test_a_message_without_request_id_is_counted_once_by_its_message_id() -> None:
    outcome = decide([record("msg_x", ""), record("msg_x", ""), record("msg_y", "")], [])

    assert [d.record.message_id for d in outcome.decisions] == ["msg_x", "msg_y"]
    assert outcome.duplicates == 1


def test_other_request_ids_of_one_message_each_count() -> None:
    outcome = decide([record("msg_1", "req_1"), record("msg_1", "req_2")], [])

    assert len(outcome.decisions) == 2
    assert outcome.duplicates == 0


def test_a_sidechain_replay_after_its_parent_is_a_duplicate() -> None:
    parent, replay = record("msg_1", "req_1"), record("msg_1", "req_side", sidechain=True)

    outcome = decide([parent, replay], [])

    assert [d.record for d in outcome.decisions] == [parent]
    assert outcome.duplicates == 1


def test_a_sidechain_replay_before_its_parent_is_retracted_when_the_parent_arrives() -> None:
    parent, replay = record("msg_1", "req_1"), record("msg_1", "req_side", sidechain=True)

    outcome = decide([replay, parent], [])

    assert [(d.kind, d.record, d.revision) for d in outcome.decisions] == [
        (EventKind.RECORDED, replay, 0),
        (EventKind.RECORDED, parent, 0),
        (EventKind.RETRACTED, replay, 1),
    ]


def test_a_logged_sidechain_replay_is_retracted_by_a_later_batchs_parent() -> None:
    replay = record("msg_1", "req_side", sidechain=True)
    logged = [Entry(record=replay, revision=0, counted=True)]

    outcome = decide([record("msg_1", "req_1")], logged)

    assert [(d.kind, d.revision) for d in outcome.decisions] == [
        (EventKind.RECORDED, 0),
        (EventKind.RETRACTED, 1),
    ]


def test_a_retracted_replay_never_counts_again_even_when_larger() -> None:
    logged = [
        Entry(record=record("msg_1", "req_1"), revision=0, counted=True),
        Entry(record=record("msg_1", "req_side", sidechain=True), revision=1, counted=False),
    ]

    outcome = decide([record("msg_1", "req_side", output_tokens=9999, sidechain=True)], logged)

    assert outcome.decisions == []
    assert outcome.duplicates == 1


def test_a_sidechain_message_without_a_parent_copy_counts() -> None:
    outcome = decide([record("msg_sub", "req_sub", sidechain=True)], [])

    assert [d.kind for d in outcome.decisions] == [EventKind.RECORDED]


# Batches in the shapes Claude Code writes. Copies of one response carry their own timestamps
# (one line per content block), resumed copies a new session id; a permutation of any of
# these must leave the same copies counted.
SCENARIOS = {
    "content-block copies with their own timestamps": [
        record(seconds=0.0),
        record(seconds=0.2),
        record(seconds=0.5),
    ],
    "partial copies": [
        record(output_tokens=1, seconds=0.0),
        record(output_tokens=412, seconds=0.4),
        record(output_tokens=412, seconds=0.9),
    ],
    "resumed copies": [
        record("msg_1", "req_1", session_id="session-a"),
        record("msg_1", "req_1", session_id="session-b"),
        record("msg_2", "req_2", session_id="session-b", seconds=60),
    ],
    "sidechain replays": [
        record("msg_1", "req_1", output_tokens=1),
        record("msg_1", "req_1", output_tokens=412, seconds=0.3),
        record("msg_1", "req_side", sidechain=True, output_tokens=1, seconds=5),
        record("msg_1", "req_side", sidechain=True, output_tokens=500, seconds=5.2),
        record("msg_sub", "req_sub", sidechain=True, seconds=6),
    ],
    "a parent copy that is also logged as a sidechain copy": [
        record("msg_1", "req_1"),
        record("msg_1", "req_1", sidechain=True, seconds=0.1),
        record("msg_1", "req_2", sidechain=True, seconds=0.2),
    ],
    "a parent copy under the key of a retracted replay": [
        record("msg_1", "req_1", sidechain=True),
        record("msg_1", "req_2", seconds=0.1),
        record("msg_1", "req_1", seconds=0.2),
    ],
    "a request from the transcript and from OpenTelemetry": [record(), otlp_copy()],
    "partial transcript copies and OpenTelemetry's, sent twice": [
        record(output_tokens=1),
        otlp_copy(),
        record(output_tokens=412, seconds=0.4),
        otlp_copy(),
    ],
    "a subagent's request from both feeds": [
        record("msg_sub", "req_sub", sidechain=True),
        otlp_copy("req_sub"),
        record("msg_2", "req_2", seconds=30),
    ],
    "OpenTelemetry without request ids, one event sent twice": [
        otlp_copy("", sequence=1),
        otlp_copy("", sequence=1),
        otlp_copy("", sequence=2, seconds=9),
    ],
    "the same log shipped from two hosts": [
        record(host="laptop"),
        record(host="desktop"),
        record("msg_2", "", host="desktop", seconds=30),
    ],
}


@pytest.mark.parametrize("batch", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_every_arrival_order_counts_the_same_copies(batch: list[UsageRecord]) -> None:
    expected = counted(fold(batch))

    for order in itertools.permutations(batch):
        assert counted(fold(order)) == expected, order


@pytest.mark.parametrize("batch", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_splitting_a_batch_in_two_counts_the_same_copies(batch: list[UsageRecord]) -> None:
    expected = counted(fold(batch))

    for order in itertools.permutations(batch):
        for cut in range(1, len(order)):
            earlier = fold(order[:cut])
            assert counted(fold(order[cut:], earlier.values())) == expected, (order, cut)


@pytest.mark.parametrize("batch", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_resending_a_batch_adds_nothing(batch: list[UsageRecord]) -> None:
    logged = fold(batch)

    outcome = decide(batch, list(logged.values()))

    assert outcome.decisions == []
    assert outcome.duplicates == len(batch)


def test_an_opentelemetry_copy_of_a_transcript_request_is_not_counted_but_reports_its_cost() -> (
    None
):
    transcript = record()

    state = fold([transcript, otlp_copy(cost=99)])

    assert counted(state) == {("msg_1", "req_1"): transcript._replace(reported_cost_nanos=99)}


def test_an_opentelemetry_copy_is_retracted_when_the_transcripts_copy_arrives() -> None:
    logged = fold([otlp_copy(cost=99)])
    assert list(counted(logged)) == [("otel:req_1", "req_1")]

    outcome = decide([record()], list(logged.values()))

    assert [(d.kind, d.record.message_id) for d in outcome.decisions] == [
        (EventKind.RECORDED, "msg_1"),
        (EventKind.RETRACTED, "otel:req_1"),
    ]
    assert outcome.decisions[0].record.reported_cost_nanos == 99  # the cost stays with it


def test_a_larger_transcript_copy_keeps_the_reported_cost() -> None:
    state = fold([record(output_tokens=1), otlp_copy(cost=99), record(output_tokens=412)])

    [kept] = counted(state).values()
    assert (kept.output_tokens, kept.reported_cost_nanos) == (412, 99)


def test_an_opentelemetry_copy_without_a_cost_after_the_transcripts_is_a_duplicate() -> None:
    outcome = decide([otlp_copy(cost=None)], list(fold([record()]).values()))

    assert (outcome.decisions, outcome.duplicates) == ([], 1)


def test_a_retracted_opentelemetry_copy_never_counts_again() -> None:
    """Not even when the transcript's copy is no longer among the logged ones (retention
    deleted it: its timestamp is the earlier one) and an exporter sends the event again."""
    retracted = {
        key: entry for key, entry in fold([otlp_copy(), record()]).items() if key[0] != "msg_1"
    }

    outcome = decide([otlp_copy(output_tokens=999)], list(retracted.values()))

    assert (outcome.decisions, outcome.duplicates) == ([], 1)


def test_opentelemetry_events_without_request_ids_count_beside_the_transcript() -> None:
    """Nothing ties them to a transcript line (older Claude Code): both count, which is why
    the README says to run one feed or the other with such versions."""
    state = fold([record(), otlp_copy("")])

    assert len(counted(state)) == 2


def test_the_largest_copy_is_the_one_counted() -> None:
    copies = [record(output_tokens=n, seconds=n / 1000) for n in (1, 412, 90, 7)]

    assert counted(fold(copies)) == {("msg_1", "req_1"): copies[1]}


def test_a_revision_keeps_the_retracted_copys_identity() -> None:
    replay = record("msg_1", "req_side", sidechain=True)

    outcome = decide([replay, record("msg_1", "req_1")], [])

    retraction = outcome.decisions[-1]
    assert retraction.kind is EventKind.RETRACTED
    assert retraction.record == replay


# --- the shared copy-ranking cases (tests/data/copy_ranking.json) ----------------------------

RANKING_CASES = load_cases()
# Every case's copies are dated the day before: none is refused as being from the future.
RANKING_NOW = datetime(2025, 10, 6, tzinfo=UTC)


def parsed_copy(copy: Copy) -> UsageRecord | None:
    """The copy as the server reads it; None when the server refuses it."""
    try:
        record = parse_record(copy.line, host=copy.host, now=RANKING_NOW)
    except InvalidRecord:
        return None
    assert record is not None  # every copy carries usage
    return record


def accepted_copies(copies: Iterable[Copy]) -> list[UsageRecord]:
    """What the ingest hands to ``decide``: the copies it does not refuse."""
    return [record for record in map(parsed_copy, copies) if record is not None]


@pytest.mark.parametrize("case", RANKING_CASES, ids=str)
def test_the_case_files_copies_are_distinct_and_refused_only_where_it_says(case: Case) -> None:
    """A case proves nothing if its copies read the same, or if a copy meant to be ranked is
    in fact refused (or one meant to be refused is not)."""
    records = [parsed_copy(copy) for copy in case.copies]
    accepted = [record for record in records if record is not None]

    assert records[case.kept] is not None
    assert len(set(accepted)) == len(accepted)
    assert (len(accepted) < len(records)) == case.refused


@pytest.mark.parametrize("case", RANKING_CASES, ids=str)
def test_the_case_files_kept_copy_counts_in_every_arrival_order(case: Case) -> None:
    kept = parsed_copy(case.kept_copy)
    assert kept is not None
    expected = {(kept.message_id, kept.request_id): kept}

    for order in case.arrival_orders():
        assert counted(fold(accepted_copies(order))) == expected, order


@pytest.mark.parametrize("case", RANKING_CASES, ids=str)
def test_the_case_files_kept_copy_counts_when_each_copy_comes_in_a_batch_of_its_own(
    case: Case,
) -> None:
    """The same rule when the other copies are already in the log."""
    kept = parsed_copy(case.kept_copy)
    assert kept is not None
    expected = {(kept.message_id, kept.request_id): kept}

    for order in case.arrival_orders():
        state: dict[Key, Entry] = {}
        for record in accepted_copies(order):
            state = fold([record], state.values())
        assert counted(state) == expected, order
