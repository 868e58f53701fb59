"""One bad record costs only itself: every record the log cannot store is that record's
rejection, by index, and the rest of its batch goes in. Run on SQLite and on PostgreSQL
(``DATABASE_URL``): NUL characters, for one, are refused by PostgreSQL alone."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from pytest_django import Settings
from rest_framework.test import APIClient

from tests.conftest import Clock
from tests.usage.test_ingest_api import (
    assert_error,
    ingest,
    line,
    ndjson,
    post,
    stats,
    tokens_of,
)
from usage import events
from usage.models import LoggedEvent

pytestmark = [pytest.mark.django_db(transaction=True)]

# The clock fixture's now is 2025-10-05T22:00Z.


def at(timestamp: str) -> dict[str, Any]:
    return line("msg_bad", at=timestamp)


def with_text(field: str, value: str) -> dict[str, Any]:
    record = line("msg_bad")
    if field.startswith("message."):
        record["message"][field.removeprefix("message.")] = value
    else:
        record[field] = value
    return record


def with_request_id_null(record: dict[str, Any]) -> dict[str, Any]:
    """The same record by the general parser: msgspec's fast path refuses a ``null``."""
    return {**record, "requestId": None}


POISON = [
    pytest.param(at("0001-01-01T00:00:00+01:00"), "timestamp", id="before year 1 in UTC"),
    pytest.param(at("9999-12-31T23:59:59-01:00"), "timestamp", id="after year 9999 in UTC"),
    pytest.param(at("1999-12-31T23:59:59Z"), "timestamp", id="before 2000"),
    pytest.param(at("2025-10-06T22:00:01Z"), "timestamp", id="more than a day ahead"),
    pytest.param(with_text("message.id", "msg\x00bad"), "NUL", id="NUL in the message id"),
    pytest.param(with_text("message.model", "claude\x00"), "NUL", id="NUL in the model"),
    pytest.param(with_text("requestId", "req\x00"), "NUL", id="NUL in the request id"),
    pytest.param(with_text("sessionId", "\x00"), "NUL", id="NUL in the session id"),
    pytest.param(with_text("cwd", "/home/\x00/x"), "NUL", id="NUL in the cwd"),
    pytest.param(with_request_id_null(with_text("cwd", "/a\x00")), "NUL", id="NUL, general parser"),
    pytest.param(
        with_request_id_null(at("0001-01-01T00:00:00+01:00")),
        "timestamp",
        id="overflow, general parser",
    ),
    pytest.param(line("msg_bad", output_tokens=2**63), "output_tokens", id="past bigint"),
]


@pytest.mark.parametrize(("poison", "reason"), POISON)
def test_a_record_the_log_cannot_store_is_rejected_by_index_and_the_rest_go_in(
    api: APIClient, clock: Clock, settings: Settings, poison: dict[str, Any], reason: str
) -> None:
    settings.USAGE_RETENTION_HOURS = 0  # so that no old timestamp is merely "expired"

    answer = ingest(api, line("msg_01"), poison, line("msg_02"))

    assert answer["accepted"] == 2
    [rejection] = answer["rejected"]
    assert rejection["index"] == 1
    assert rejection["error"]["code"] == "VALIDATION_ERROR"
    assert reason in rejection["error"]["message"]
    assert tokens_of(stats(api)) == (20, 200, 2000, 10000, 2)
    assert LoggedEvent.objects.count() == 2


def test_a_nul_in_the_host_the_body_names_rejects_each_record_not_the_request(
    api: APIClient, clock: Clock
) -> None:
    body = b'{"host": "lap\\u0000top", "records": [' + ndjson(line()).strip() + b"]}"

    response = post(api, body, content_type="application/json")

    assert response.status_code == 200, response.content
    assert [r["index"] for r in response.json()["rejected"]] == [0]
    assert LoggedEvent.objects.count() == 0


def test_a_count_past_64_bits_is_rejected_by_index(api: APIClient, clock: Clock) -> None:
    bad = ndjson(line("msg_bad", input_tokens=123456789)).replace(b"123456789", b"9" * 30)

    answer = ingest_bytes(api, ndjson(line("msg_01")) + bad + ndjson(line("msg_02")))

    assert answer["accepted"] == 2
    assert [r["index"] for r in answer["rejected"]] == [1]


def test_a_lone_surrogate_is_refused_as_broken_json_never_stored(
    api: APIClient, clock: Clock
) -> None:
    good = ndjson(line("msg_01"))
    bad = ndjson(line("msg_bad")).replace(b"msg_bad", b"msg_\\ud800")

    answer = ingest_bytes(api, good + bad)

    assert answer["accepted"] == 1
    assert [r["index"] for r in answer["rejected"]] == [1]


def ingest_bytes(api: APIClient, body: bytes) -> dict[str, Any]:
    response = post(api, body)
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


# --- The second layer: what the parse-time check missed, the append isolates -------------


@pytest.fixture
def without_the_parse_time_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switches off the first layer (``events.check_storable``), so that the records below
    reach the database as a check with a gap would let them: the second layer is tested on
    what the database itself refuses."""
    monkeypatch.setattr(events, "check_storable", lambda record: None)
    monkeypatch.setattr("usage.wire.check_storable", lambda record: None)


@pytest.fixture
def surrogate_in_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON decoders refuse lone surrogates, so none can arrive; to give SQLite a value
    it refuses, every model named ``surrogate`` is parsed as a lone surrogate."""
    parse = events.parse_record

    def parse_with_surrogate(raw: object, **kwargs: Any) -> events.UsageRecord | None:
        record = parse(raw, **kwargs)
        if record is not None and record.model == "surrogate":
            return record._replace(model="\ud800")
        return record

    monkeypatch.setattr("usage.wire.parse_record", parse_with_surrogate)


def poisoned(message_id: str) -> dict[str, Any]:
    """A record the database refuses: a NUL on PostgreSQL, a lone surrogate on SQLite (which
    stores NULs). By the general parser, which ``surrogate_in_the_model`` wraps."""
    if connection.vendor == "postgresql":
        return with_request_id_null(line(message_id, cwd="/home/\x00"))
    return with_request_id_null(line(message_id, model="surrogate"))


@pytest.mark.usefixtures("without_the_parse_time_check", "surrogate_in_the_model")
@pytest.mark.parametrize("bad", [[0], [5], [9], [2, 3, 7], list(range(10))])
def test_records_the_database_refuses_are_found_by_halving_and_the_rest_go_in(
    api: APIClient, clock: Clock, bad: list[int]
) -> None:
    records = [
        poisoned(f"msg_{index}") if index in bad else line(f"msg_{index}") for index in range(10)
    ]

    answer = ingest(api, *records)

    assert answer["accepted"] == 10 - len(bad)
    assert [r["index"] for r in answer["rejected"]] == bad
    assert {r["error"]["code"] for r in answer["rejected"]} == {"VALIDATION_ERROR"}
    assert LoggedEvent.objects.count() == 10 - len(bad)
    assert stats(api)["total_messages"] == 10 - len(bad)
    positions = list(LoggedEvent.objects.values_list("position", flat=True))
    assert answer["position"] == (max(positions) if positions else None)


@pytest.mark.usefixtures("without_the_parse_time_check", "surrogate_in_the_model")
def test_a_copy_that_revises_a_refused_record_is_decided_again_without_it(
    api: APIClient, clock: Clock
) -> None:
    """The refused record is left out and the batch decided again: its larger copy, which
    would have been a revision of it, is the message's first copy."""
    bad = poisoned("msg_1")
    larger = line("msg_1", output_tokens=500)

    answer = ingest(api, line("msg_0"), bad, larger)

    assert (answer["accepted"], [r["index"] for r in answer["rejected"]]) == (2, [1])
    revisions = LoggedEvent.objects.filter(message_id="msg_1").values_list("revision", flat=True)
    assert list(revisions) == [0]
    assert stats(api)["total_output_tokens"] == 600


# --- The log unavailable: 503 in the envelope, never 500 -----------------------------------


@pytest.fixture
def log_locked_by_another_process(api: APIClient) -> Iterator[None]:
    """Another connection holds the log's write lock, and this one waits only briefly for it:
    the ingest finds the database locked, as it would a database that is down. (After the
    user and its token exist.)"""
    settings_dict = connection.settings_dict
    if connection.vendor == "postgresql":
        other = psycopg.connect(
            host=settings_dict["HOST"] or "127.0.0.1",
            port=settings_dict["PORT"] or 5432,
            user=settings_dict["USER"],
            password=settings_dict["PASSWORD"] or None,
            dbname=settings_dict["NAME"],
        )
        other.execute("LOCK TABLE usage_event IN ACCESS EXCLUSIVE MODE")
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        try:
            yield
        finally:
            other.rollback()
            other.close()
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
        return
    with connection.cursor() as cursor:  # first: opening the connection writes a pragma
        cursor.execute("PRAGMA busy_timeout = 200")
    holder = sqlite3.connect(settings_dict["NAME"], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.rollback()
        holder.close()
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 30000")


@pytest.mark.usefixtures("log_locked_by_another_process")
def test_a_locked_or_unreachable_log_answers_503_log_unavailable(
    api: APIClient, clock: Clock
) -> None:
    response = post(api, ndjson(line()))

    assert_error(response, 503, "LOG_UNAVAILABLE")
    assert response["Retry-After"].isdigit()
