"""The ingest's fast path decides every line exactly as the general path does: the same record,
the same skip, the same rejection message. Pure: no database, no Redis."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from tests.conftest import sample_lines
from tests.usage.test_events import SECRET_TEXT, assistant_line
from usage import wire
from usage.events import (
    MAX_ID_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_TOKENS_PER_FIELD,
    InvalidRecord,
    MalformedLine,
    UsageRecord,
    parse_record,
)

NOW = datetime(2025, 11, 1, 12, 0, tzinfo=UTC)
Outcome = UsageRecord | None | tuple[str, str]


def by_the_general_path(line: bytes) -> Outcome:
    """What the server did before the fast path: orjson, then ``events.parse_record``."""
    try:
        raw: object = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raw = MalformedLine(f"Line is not valid JSON: {error}")
    return decided(lambda: parse_record(raw, host="laptop", now=NOW))


def by_the_server(line: bytes) -> Outcome:
    return decided(lambda: wire.parse(wire.read_line(line), host="laptop", now=NOW))


def decided(parse: Any) -> Outcome:
    try:
        record: UsageRecord | None = parse()
    except InvalidRecord as error:
        return ("rejected", error.message)
    return record


def edited(path: str, value: object) -> bytes:
    """The reference assistant line with the dotted ``path`` set to ``value`` (or removed,
    for ``REMOVED``)."""
    line = assistant_line()
    *parents, last = path.split(".")
    container = line
    for key in parents:
        container = container[key]
    if value is REMOVED:
        container.pop(last, None)
    else:
        container[last] = value
    return orjson.dumps(line)


REMOVED = object()
PATHS = (
    "message",
    "message.id",
    "message.model",
    "message.usage",
    "message.usage.input_tokens",
    "message.usage.output_tokens",
    "message.usage.cache_creation_input_tokens",
    "message.usage.cache_read_input_tokens",
    "message.usage.cache_creation",
    "message.usage.cache_creation.ephemeral_1h_input_tokens",
    "message.usage.speed",
    "message.usage.service_tier",
    "message.usage.server_tool_use",
    "message.usage.server_tool_use.web_search_requests",
    "timestamp",
    "requestId",
    "sessionId",
    "cwd",
    "isSidechain",
)
VALUES: tuple[object, ...] = (
    REMOVED,
    None,
    "",
    0,
    -1,
    1.5,
    7.0,
    True,
    False,
    "12",
    [],
    {},
    {"ephemeral_1h_input_tokens": 5000},
    {"web_search_requests": 3, "web_fetch_requests": 1},
    "fast",
    "x" * 32,
    "x" * 33,
    "fa\x00st",
    2**63,
    MAX_TOKENS_PER_FIELD,
    MAX_TOKENS_PER_FIELD + 1,
    "x" * MAX_ID_LENGTH,
    "x" * (MAX_ID_LENGTH + 1),
    "é" * MAX_TEXT_LENGTH,
    "é" * (MAX_TEXT_LENGTH + 1),
    "2025-11-01T09:12:09Z",
    "2025-11-01T09:12:09.115+02:00",
    "2025-11-01 09:12:09",
    "2025-11-02T12:00:01Z",
    "yesterday",
)


@pytest.mark.parametrize("path", PATHS)
def test_every_odd_value_in_every_kept_field_gets_the_general_paths_answer(path: str) -> None:
    for value in VALUES:
        line = edited(path, value)
        assert by_the_server(line) == by_the_general_path(line), (path, value)


def test_every_sample_line_gets_the_general_paths_answer() -> None:
    for line in sample_lines():
        assert by_the_server(line) == by_the_general_path(line), line[:200]


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="cut short"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b'"text"', id="string"),
        pytest.param(b"{}", id="empty object"),
        pytest.param(b'{"type": "summary", "summary": "s", "leafUuid": "u"}', id="summary"),
        pytest.param(b'{"message": {"role": "user", "content": "hi"}}', id="user prompt"),
        pytest.param(b'{"message": "hello"}', id="message as text"),
        pytest.param(orjson.dumps(assistant_line())[:-1] + b', "cwd": 5}', id="duplicate key"),
        pytest.param(b'{"timestamp": NaN}', id="NaN"),
        pytest.param(b'{"message": {"id": "\\ud800"}}', id="lone surrogate"),
    ],
)
def test_odd_lines_get_the_general_paths_answer(line: bytes) -> None:
    assert by_the_server(line) == by_the_general_path(line)


def test_the_usual_assistant_line_takes_the_fast_path() -> None:
    """Without this the tests above would pass with the fast path never taken."""
    line = orjson.dumps(assistant_line())

    assert type(wire.read_line(line)) is wire.WireLine
    assert isinstance(by_the_server(line), UsageRecord)


def test_a_line_as_the_agent_sends_it_takes_the_fast_path() -> None:
    line = assistant_line()
    del line["message"]["content"]

    assert type(wire.read_line(orjson.dumps(line))) is wire.WireLine


def test_bytes_that_are_not_utf8_in_the_dropped_text_no_longer_lose_the_usage() -> None:
    """The one deliberate difference: the general path rejected the whole line."""
    line = orjson.dumps(assistant_line()).replace(SECRET_TEXT.encode(), b"caf\xe9 \xff")

    general = by_the_general_path(line)
    assert isinstance(general, tuple)
    assert "not valid JSON" in general[1]
    record = by_the_server(line)
    assert isinstance(record, UsageRecord)
    assert record == by_the_general_path(orjson.dumps(assistant_line()))


def test_bytes_that_are_not_utf8_in_a_kept_field_still_reject_the_line() -> None:
    line = orjson.dumps(assistant_line()).replace(b"msg_01Rws28Xg2tB", b"msg_\xff")

    outcome = by_the_server(line)

    assert outcome == by_the_general_path(line)
    assert isinstance(outcome, tuple)
    assert "not valid JSON" in outcome[1]


def test_pairs_of_odd_values_get_the_general_paths_answer() -> None:
    """Two fields wrong at once: the general path reports the first it checks, and so must
    the server."""
    odd = (REMOVED, None, -1, "12", "x" * (MAX_ID_LENGTH + 1), "yesterday")
    for (first, second), (a, b) in itertools.product(
        itertools.combinations(PATHS[1:], 2), itertools.product(odd, odd)
    ):
        line = orjson.loads(edited(first, a))
        container: dict[str, Any] = line
        *parents, last = second.split(".")
        for key in parents:
            if not isinstance(container.get(key), dict):
                break
            container = container[key]
        else:
            if b is REMOVED:
                container.pop(last, None)
            else:
                container[last] = b
        raw = orjson.dumps(line)
        assert by_the_server(raw) == by_the_general_path(raw), (first, a, second, b)
