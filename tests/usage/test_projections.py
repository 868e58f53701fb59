"""The Redis read models. The headline test of the design: for any sequence of records, in any
split into batches, the projection built ingest by ingest equals a rebuild from the log."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count, pairwise
from typing import Any

import pytest
import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_django.fixtures import Settings
from redis.crc import key_slot
from rest_framework.test import APIClient

from tests.conftest import Clock
from tests.usage.projection_dump import dump_projection
from tests.usage.test_store import run_concurrently, waiting_for_locks
from usage import services, store
from usage.events import UsageEvent
from usage.measures import Totals
from usage.projection import projector, redis_store
from usage.projection.batch import Contribution, Owner, epoch_ms
from usage.projection.redis_store import Checkpoint

NOW = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)
START = NOW - timedelta(hours=10)
SONNET = "claude-sonnet-4-5-20250929"
MODELS = [SONNET, "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001", "<synthetic>", "x-9"]
PROJECT_PATHS = ["/home/alice/api", "/home/alice/web", "/srv/api"]
SESSIONS = ["session-a", "session-b", "session-c"]
HOSTS = ["laptop", "desktop"]
_usernames = count()


def new_user_id() -> int:
    """A fresh user per hypothesis example: its own log rows and its own Redis keys."""
    return int(get_user_model().objects.create(username=f"h{next(_usernames)}").pk)


# --- random transcripts --------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One assistant response; Claude Code may write it to the logs several times."""

    message_id: str
    request_id: str
    at: datetime
    model: str
    usage: dict[str, int]
    session: str
    cwd: str


COPY_KINDS = ["full", "partial", "sidechain", "resumed"]
COUNT_FIELDS = [
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
]


def transcript_line(message: Message, kind: str, seconds_later: int) -> dict[str, object]:
    """A copy of ``message`` as one JSONL line: ``partial`` is an early content-block line
    with fewer output tokens, ``sidechain`` a subagent's replay, ``resumed`` a copy that a
    resumed session wrote into its own file."""
    usage: dict[str, object] = dict(message.usage)
    if kind == "partial":
        usage["output_tokens"] = message.usage["output_tokens"] // 3
    cache_1h = message.usage["cache_creation_input_tokens"] // 2
    usage["cache_creation"] = {"ephemeral_1h_input_tokens": cache_1h}
    line: dict[str, object] = {
        "type": "assistant",
        "timestamp": (message.at + timedelta(seconds=seconds_later)).isoformat(),
        "sessionId": "session-resumed" if kind == "resumed" else message.session,
        "cwd": message.cwd,
        "isSidechain": kind == "sidechain",
        "message": {"id": message.message_id, "model": message.model, "usage": usage},
    }
    if message.request_id:
        line["requestId"] = message.request_id
    return line


messages = st.builds(
    Message,
    message_id=st.sampled_from([f"msg_{i}" for i in range(5)]),  # few ids: many collisions
    request_id=st.sampled_from(["req_a", "req_b", ""]),
    at=st.integers(0, 10 * 3600 * 1000).map(lambda ms: START + timedelta(milliseconds=ms)),
    model=st.sampled_from(MODELS),
    usage=st.fixed_dictionaries(
        {
            "input_tokens": st.integers(0, 5_000),
            "output_tokens": st.integers(0, 5_000),
            "cache_creation_input_tokens": st.integers(0, 50_000),
            "cache_read_input_tokens": st.integers(0, 200_000),
        }
    ),
    session=st.sampled_from(SESSIONS),
    cwd=st.sampled_from(PROJECT_PATHS),
)


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[str, list[dict[str, object]]]]:
    """(host, lines) batches: copies of a few messages, shuffled, split at random points."""
    sent = draw(st.lists(messages, min_size=1, max_size=8))
    copies = draw(
        st.lists(
            st.tuples(
                st.integers(0, len(sent) - 1), st.sampled_from(COPY_KINDS), st.integers(0, 3)
            ),
            min_size=1,
            max_size=30,
        )
    )
    lines = [transcript_line(sent[index], kind, later) for index, kind, later in copies]
    cuts = sorted(draw(st.lists(st.integers(0, len(lines)), max_size=6)))
    bounds = [0, *cuts, len(lines)]
    return [
        (draw(st.sampled_from(HOSTS)), lines[start:end])
        for start, end in pairwise(bounds)
        if end > start
    ]


def ingest(user_id: int, host: str, lines: Sequence[object]) -> None:
    services.ingest_records(user_id=user_id, records=lines, host=host, now=NOW)


def counted_totals_in_log(user_id: int) -> dict[str, int]:
    """The reference, straight from the log: the newest revision of every message that is
    still counted, summed."""
    newest: dict[tuple[str, str], UsageEvent] = {}
    for event in store.events_after(user_id, 0, limit=10**6):
        newest[(event.record.message_id, event.record.request_id)] = event  # in position order
    counted = [event for event in newest.values() if event.counted]
    return {
        "i": sum(e.record.input_tokens for e in counted),
        "o": sum(e.record.output_tokens for e in counted),
        "cc": sum(e.record.cache_creation_tokens for e in counted),
        "cr": sum(e.record.cache_read_tokens for e in counted),
        "n": len(counted),
        "c": sum(e.cost_nanos for e in counted),
    }


def counted_spans_in_log(user_id: int) -> dict[str, tuple[str, str]]:
    """The reference for every project's, session's and host's ``first`` and ``last``: the
    earliest and latest timestamp (ms) of its counted messages, straight from the log."""
    newest: dict[tuple[str, str], UsageEvent] = {}
    for event in store.events_after(user_id, 0, limit=10**6):
        newest[(event.record.message_id, event.record.request_id)] = event
    spans: dict[str, tuple[int, int]] = {}
    for event in newest.values():
        if not event.counted:
            continue
        record = event.record
        at = epoch_ms(record.timestamp)
        session = redis_store._short_id(record.project_path + "\0" + record.session_id)
        for key in (
            f"p:{redis_store.project_id(record.project_path)}",
            f"s:{session}",
            f"host:{record.host}",
        ):
            low, high = spans.get(key, (at, at))
            spans[key] = (min(low, at), max(high, at))
    return {key: (str(low), str(high)) for key, (low, high) in spans.items()}


def projected_spans(user_id: int) -> dict[str, tuple[str, str]]:
    return {
        key: (value["first"], value["last"])
        for key, value in dump_projection(user_id).items()
        if isinstance(value, dict) and "first" in value
    }


def projected_totals(user_id: int) -> dict[str, int]:
    bucket = redis_store.totals(user_id)[0]
    return {
        "i": bucket.input_tokens,
        "o": bucket.output_tokens,
        "cc": bucket.cache_creation_tokens,
        "cr": bucket.cache_read_tokens,
        "n": bucket.messages,
        "c": bucket.cost_nanos,
    }


# --- the headline test ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@override_settings(USAGE_RETENTION_HOURS=0)
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=batches())
def test_projecting_ingest_by_ingest_equals_rebuilding_from_the_log(
    sent: list[tuple[str, list[dict[str, object]]]],
) -> None:
    user_id = new_user_id()
    for host, lines in sent:
        ingest(user_id, host, lines)  # each commit catches the projection up (on_commit)

    incremental = dump_projection(user_id)
    stored = redis_store.checkpoint(user_id)
    assert stored is not None
    assert stored.position == store.last_position(user_id)
    assert projected_totals(user_id) == counted_totals_in_log(user_id)
    # whatever order the copies came in: a copy revised or retracted leaves no first or last
    assert projected_spans(user_id) == counted_spans_in_log(user_id)

    projector.catch_up(user_id)
    assert dump_projection(user_id) == incremental, "catching up again changed something"

    projector.rebuild_user(user_id)
    assert dump_projection(user_id) == incremental


# --- re-applying ---------------------------------------------------------------------------


def a_contribution() -> Contribution:
    """What one new message (10 input and 20 output tokens of Sonnet) adds."""
    return Contribution(
        sign=1,
        timestamp_ms=epoch_ms(NOW),
        model=SONNET,
        values=Totals(input_tokens=10, output_tokens=20, messages=1, cost_nanos=330_000),
        message_id="msg_new",
        request_id="req_new",
        owner=Owner(project_path="/home/alice/api", session_id="session-a", host="laptop"),
        unpriced=False,
    )


def some_lines() -> list[dict[str, object]]:
    """One response written twice: by the main conversation and replayed by a subagent."""
    usage = {
        "input_tokens": 9,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = Message("msg_1", "req_1", NOW, SONNET, usage, "session-a", "/home/alice/api")
    return [transcript_line(message, "full", 0), transcript_line(message, "sidechain", 1)]


@pytest.mark.django_db(transaction=True)
def test_applying_already_applied_positions_again_changes_nothing(user: User) -> None:
    ingest(user.pk, "laptop", some_lines())
    current = redis_store.checkpoint(user.pk)
    assert current is not None
    log, position = current.log, current.position
    before = dump_projection(user.pk)
    messages = redis_store.totals(user.pk)[0].messages

    again = redis_store.apply(
        user.pk,
        [(position, [a_contribution()])],
        after=Checkpoint(log, position - 1, "earlier"),
        last_event=current.event,
    )
    replayed = redis_store.apply(
        user.pk,
        [(p, [a_contribution()]) for p in range(1, position + 1)],
        after=Checkpoint(log, 0, ""),
        last_event=current.event,
    )

    assert again == replayed == current
    assert dump_projection(user.pk) == before
    # the very same call with the next position does change the projection
    applied = redis_store.apply(
        user.pk, [(position + 1, [a_contribution()])], after=current, last_event="next"
    )
    assert applied == Checkpoint(log, position + 1, "next")
    assert redis_store.totals(user.pk)[0].messages == messages + 1


@pytest.mark.django_db(transaction=True)
def test_an_apply_to_another_logs_projection_is_refused(user: User) -> None:
    ingest(user.pk, "laptop", some_lines())
    current = redis_store.checkpoint(user.pk)
    assert current is not None
    before = dump_projection(user.pk)

    refused = redis_store.apply(
        user.pk,
        [(current.position + 1, [a_contribution()])],
        after=current._replace(log="another-log"),
        last_event="next",
    )

    assert refused is None
    assert dump_projection(user.pk) == before


@pytest.mark.django_db(transaction=True)
def test_a_script_that_fails_half_way_leaves_a_projection_that_is_rebuilt(user: User) -> None:
    """Redis keeps what a failing script already wrote: the checkpoint says "being written"
    until the end, so what is left half-applied is never served nor added to."""
    ingest(user.pk, "laptop", some_lines())
    built = dump_projection(user.pk)
    current = redis_store.checkpoint(user.pk)
    assert current is not None
    # A field that HINCRBY refuses, in a hash the batch below adds to after other writes.
    redis_store.client().hset(redis_store.user_prefix(user.pk) + "tot", "o", "not a number")

    with pytest.raises(redis.ResponseError):
        redis_store.apply(
            user.pk, [(current.position + 1, [a_contribution()])], after=current, last_event="x"
        )

    assert redis_store.checkpoint(user.pk) is None
    projector.ensure_current(user.pk)
    assert dump_projection(user.pk) == built


@pytest.mark.django_db(transaction=True)
def test_catching_up_twice_applies_each_event_once(user: User) -> None:
    ingest(user.pk, "laptop", some_lines())
    redis_store.drop_user(user.pk)

    first = projector.catch_up(user.pk)
    once = dump_projection(user.pk)
    second = projector.catch_up(user.pk)

    assert first == second == store.last_position(user.pk)
    assert dump_projection(user.pk) == once
    assert projected_totals(user.pk)["n"] == 1


@pytest.mark.django_db(transaction=True)
def test_catching_up_reads_the_log_batch_after_batch_to_its_end(user: User) -> None:
    usage = dict.fromkeys(COUNT_FIELDS, 1)
    first = NOW - timedelta(hours=3)
    sent = [
        Message(f"msg_{i}", "req", first + timedelta(seconds=i), SONNET, usage, "s", "/p")
        for i in range(2 * projector.CATCH_UP_BATCH + 3)
    ]
    ingest(user.pk, "laptop", [transcript_line(message, "full", 0) for message in sent])
    built = dump_projection(user.pk)
    redis_store.drop_user(user.pk)  # Redis lost it: the whole log is read back

    assert projector.catch_up(user.pk) == store.last_position(user.pk)
    assert projected_totals(user.pk)["n"] == len(sent)
    assert dump_projection(user.pk) == built


# --- Redis forgetting --------------------------------------------------------------------

READ_ENDPOINTS = ["dashboard/", "stats/", "timeseries/?interval=1hour", "projects/"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("endpoint", READ_ENDPOINTS)
def test_a_read_after_redis_lost_the_projection_rebuilds_it_before_answering(
    api: APIClient, clock: Clock, user: User, endpoint: str
) -> None:
    posted = api.post("/app/claude-usage/events/", {"records": some_lines()}, format="json")
    assert posted.status_code == 200
    url = f"/app/claude-usage/{endpoint}"
    answer = api.get(url).json()
    projected = dump_projection(user.pk)

    redis_store.drop_user(user.pk)
    assert redis_store.checkpoint(user.pk) is None

    assert api.get(url).json() == answer
    assert dump_projection(user.pk) == projected


@pytest.mark.django_db(transaction=True)
def test_a_projection_that_lost_only_its_checkpoint_is_rebuilt_not_added_to(
    api: APIClient, clock: Clock, user: User
) -> None:
    posted = api.post("/app/claude-usage/events/", {"records": some_lines()}, format="json")
    assert posted.status_code == 200
    stats = api.get("/app/claude-usage/stats/").json()
    projected = dump_projection(user.pk)

    redis_store.client().delete(redis_store.user_prefix(user.pk) + "cp")

    assert api.get("/app/claude-usage/stats/").json() == stats
    assert dump_projection(user.pk) == projected


@pytest.mark.django_db(transaction=True)
def test_a_user_without_events_gets_zeros_and_a_checkpoint(
    api: APIClient, clock: Clock, user: User
) -> None:
    stats = api.get("/app/claude-usage/stats/").json()

    assert stats["total_tokens"] == 0
    assert stats["total_messages"] == 0
    stored = redis_store.checkpoint(user.pk)
    assert stored is not None
    assert stored.position == 0


@pytest.mark.django_db(transaction=True)
def test_an_apply_to_a_projection_without_checkpoint_is_refused(user: User) -> None:
    ingest(user.pk, "laptop", some_lines())
    checkpoint = store.last_position(user.pk)
    redis_store.client().delete(redis_store.user_prefix(user.pk) + "cp")  # a drop under way
    before = dump_projection(user.pk)

    refused = redis_store.apply(
        user.pk,
        [(checkpoint + 1, [a_contribution()])],
        after=Checkpoint(projector.binding(), 0, ""),
        last_event="x",
    )

    assert refused is None
    assert dump_projection(user.pk) == before


class SlowDeletes:
    """The shared Redis client, except that DEL takes 20 ms: it widens the gap between the
    scan and the delete of a projection drop, so that races with it happen on every run."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def delete(self, *keys: str) -> Any:
        time.sleep(0.02)
        return self._real.delete(*keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def slow_deletes(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowDeletes(redis_store.client())
    monkeypatch.setattr(redis_store, "client", lambda: slow)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("slow_deletes")
def test_readers_that_find_the_projection_gone_at_once_rebuild_it_once(user: User) -> None:
    """Six dashboard reads after a Redis flush: each sees no checkpoint and wants to drop and
    rebuild. Without the rebuild lock one reader's drop (a scan, then a delete) straddled
    another's first apply, and the keys created in between were counted twice."""
    usage = dict.fromkeys(COUNT_FIELDS, 5)
    sent = [
        Message(
            f"msg_{i}",
            "req",
            START + timedelta(minutes=7 * i),
            SONNET,
            usage,
            SESSIONS[i % 3],
            PROJECT_PATHS[i % 3],
        )
        for i in range(80)
    ]
    ingest(user.pk, "laptop", [transcript_line(message, "full", 0) for message in sent])
    built = dump_projection(user.pk)

    def ensure_current() -> None:
        projector.ensure_current(user.pk)

    for _ in range(5):
        redis_store.drop_user(user.pk)
        run_concurrently([lambda: waiting_for_locks(ensure_current)] * 6)

        assert dump_projection(user.pk) == built


# --- layout --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_every_key_carries_the_layout_version_and_its_users_hash_tag(
    user: User, other_user: User, settings: Settings
) -> None:
    ingest(user.pk, "laptop", some_lines())
    ingest(other_user.pk, "desktop", some_lines())
    prefix = re.escape(settings.USAGE_REDIS_PREFIX)
    layout = re.compile(rf"^{prefix}:{redis_store.LAYOUT_VERSION}:\{{u:(\d+)\}}:.+")

    keys = list(redis_store.client().scan_iter(match=settings.USAGE_REDIS_PREFIX + ":*"))
    owners: dict[int, set[int]] = {}
    for key in keys:
        match = layout.match(key)
        assert match is not None, f"{key!r} does not follow the layout"
        owners.setdefault(int(match.group(1)), set()).add(key_slot(key.encode()))

    assert set(owners) == {user.pk, other_user.pk}
    # one Redis Cluster slot per user: the Lua scripts may touch all of a user's keys
    assert all(len(slots) == 1 for slots in owners.values())


@pytest.mark.django_db(transaction=True)
def test_the_first_read_after_an_upgrade_clears_the_earlier_layouts_keys(user: User) -> None:
    ingest(user.pk, "laptop", some_lines())
    projected = dump_projection(user.pk)
    redis_store.drop_user(user.pk)  # as a new layout version finds it: nothing of its own
    old = redis_store.user_prefix(user.pk, redis_store.OLD_LAYOUT_VERSIONS[-1])
    redis_store.client().set(old + "cp", 5)
    redis_store.client().hset(old + "tot", mapping={"n": 3})

    projector.ensure_current(user.pk)

    assert list(redis_store.client().scan_iter(match=old + "*")) == []
    assert dump_projection(user.pk) == projected


@pytest.mark.django_db(transaction=True)
def test_one_users_ingest_leaves_another_users_projection_alone(
    user: User, other_user: User
) -> None:
    ingest(other_user.pk, "desktop", some_lines())
    theirs = dump_projection(other_user.pk)

    ingest(user.pk, "laptop", some_lines())
    projector.rebuild_user(user.pk)

    assert dump_projection(other_user.pk) == theirs
    assert projected_totals(user.pk) == projected_totals(other_user.pk)


@pytest.mark.django_db(transaction=True)
@override_settings(USAGE_RETENTION_HOURS=0)
def test_messages_whose_ids_join_alike_are_two_in_the_timestamp_index(user: User) -> None:
    """("a|b", "c") and ("a", "b|c") joined with a separator are one string."""
    usage = dict.fromkeys(COUNT_FIELDS, 1)
    first = Message("a|b", "c", START, SONNET, usage, "s", "/p")
    second = Message("a", "b|c", START + timedelta(hours=1), SONNET, usage, "s", "/p")
    ingest(
        user.pk, "laptop", [transcript_line(first, "full", 0), transcript_line(second, "full", 0)]
    )

    whole_day = (epoch_ms(START - timedelta(days=1)), epoch_ms(START + timedelta(days=1)))
    assert redis_store.messages_between(user.pk, *whole_day) == 2
    [session] = redis_store.sessions(user.pk, redis_store.project_id("/p"))
    assert (session.first_ms, session.last_ms) == (epoch_ms(first.at), epoch_ms(second.at))


@pytest.mark.django_db(transaction=True)
def test_a_new_bucket_of_thousands_of_fields_is_written_whole(user: User) -> None:
    """1,500 models in one new minute: 18,000 field/amount items for one new hash, more
    than Lua's unpack() takes at once."""
    log = projector.binding()
    redis_store.reset_checkpoint(user.pk, log)
    contributions = [
        a_contribution()._replace(model=f"model-{i}", message_id=f"m{i}") for i in range(1500)
    ]

    applied = redis_store.apply(
        user.pk, [(1, contributions)], after=Checkpoint(log, 0, ""), last_event="x"
    )

    assert applied == Checkpoint(log, 1, "x")
    totals, models = redis_store.totals(user.pk)
    assert (totals.messages, totals.input_tokens, len(models)) == (1500, 15_000, 1500)


@pytest.mark.django_db(transaction=True)
def test_amounts_past_what_a_double_holds_are_stored_exactly(user: User) -> None:
    """Lua's cjson reads numbers as doubles; 2**53 + 1 of them would arrive as 2**53."""
    log = projector.binding()
    redis_store.reset_checkpoint(user.pk, log)
    huge = 2**53 + 1
    first = a_contribution()
    values = Totals._make(first.values)._replace(input_tokens=huge)
    contribution = first._replace(values=values)

    redis_store.apply(user.pk, [(1, [contribution])], after=Checkpoint(log, 0, ""), last_event="x")

    totals, _ = redis_store.totals(user.pk)
    assert totals.input_tokens == huge
