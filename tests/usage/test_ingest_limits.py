"""The ingest's body reader stays within its limits however the body is built: a gzip body of
many members is read in time linear in its size, and a body of too many records is refused
before its records are built. Real database, real Redis, the real endpoint.

Two measurements stand in for timings: the bytes handed to zlib (a spy around the real
decompressor: each byte of the body must go through it a bounded number of times, where a
quadratic reader hands it every byte after each member again), and the peak of Python's
allocations while the request is served (tracemalloc), which counts the objects built.
"""

from __future__ import annotations

import gzip
import tracemalloc
import types
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from pytest_django import Settings
from rest_framework.test import APIClient

from tests.conftest import Clock
from tests.usage.test_ingest_api import (
    NDJSON,
    assert_error,
    line,
    ndjson,
    post,
    stats,
)
from usage import wire
from usage.api import ingest_body
from usage.models import LoggedEvent

pytestmark = [pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024
EMPTY_MEMBER = gzip.compress(b"")  # 20 bytes: a gzip member of nothing


class ZlibSpy:
    """The real zlib, counting the input bytes its decompressors are handed."""

    def __init__(self) -> None:
        self.bytes_in = 0
        self.module = types.SimpleNamespace(
            decompressobj=self.decompressobj, MAX_WBITS=zlib.MAX_WBITS, error=zlib.error
        )

    def decompressobj(self, wbits: int) -> Any:
        return _CountingInflater(self, zlib.decompressobj(wbits))


class _CountingInflater:
    def __init__(self, spy: ZlibSpy, inflater: Any) -> None:
        self._spy = spy
        self._inflater = inflater

    def decompress(self, data: Any, max_length: int = 0) -> bytes:
        self._spy.bytes_in += len(data)
        result: bytes = self._inflater.decompress(data, max_length)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inflater, name)


@pytest.fixture
def zlib_spy(monkeypatch: pytest.MonkeyPatch) -> ZlibSpy:
    spy = ZlibSpy()
    monkeypatch.setattr(ingest_body, "zlib", spy.module)
    return spy


@pytest.fixture
def peak_memory() -> Iterator[Callable[[], float]]:
    """The peak of Python's allocations since the test began, in MiB."""
    tracemalloc.start()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def gzip_post(api: APIClient, body: bytes, content_type: str = NDJSON) -> Any:
    return post(api, body, content_type, HTTP_CONTENT_ENCODING="gzip")


# --- defect 5: many gzip members --------------------------------------------------------------


@pytest.mark.parametrize("members", [10_000, 40_000])
def test_each_byte_of_a_many_member_body_goes_through_zlib_a_bounded_number_of_times(
    api: APIClient, clock: Clock, settings: Settings, zlib_spy: ZlibSpy, members: int
) -> None:
    settings.USAGE_MAX_RECORDS = members + 1  # as many members as records are allowed
    body = EMPTY_MEMBER * members + gzip.compress(ndjson(line()))

    response = gzip_post(api, body)

    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 1
    assert zlib_spy.bytes_in <= 8 * len(body)


def test_more_gzip_members_than_the_record_limit_is_a_413(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    settings.USAGE_MAX_RECORDS = 3
    three = EMPTY_MEMBER * 2 + gzip.compress(ndjson(line()))

    assert gzip_post(api, three).status_code == 200
    assert_error(gzip_post(api, EMPTY_MEMBER + three), 413, "PAYLOAD_TOO_LARGE")


def test_a_body_of_half_a_million_members_is_read_no_further_than_the_limit(
    api: APIClient, clock: Clock, settings: Settings, zlib_spy: ZlibSpy
) -> None:
    settings.USAGE_MAX_RECORDS = 3

    response = gzip_post(api, EMPTY_MEMBER * 500_000)

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert zlib_spy.bytes_in <= 3 * ingest_body.FIRST_GZIP_PIECE


def test_records_in_every_member_count_however_the_members_are_sized(
    api: APIClient, clock: Clock
) -> None:
    # A large member (well past any piece the reader feeds zlib at once), then small ones,
    # then a large one that does not compress: members end anywhere in a piece.
    filler = orjson.dumps({"type": "user", "text": "x" * (3 * MIB)}) + b"\n"
    noise = orjson.dumps({"type": "user", "text": zlib.compress(b"y" * 10).hex() * 40_000})
    members = [
        gzip.compress(filler + ndjson(line("msg_01"))),
        *(gzip.compress(ndjson(line(f"msg_1{n}"))) for n in range(5)),
        EMPTY_MEMBER * 3,
        gzip.compress(noise + b"\n" + ndjson(line("msg_02")), compresslevel=0),
    ]

    response = gzip_post(api, b"".join(members))

    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 7
    assert stats(api)["total_messages"] == 7


def test_a_bomb_spread_over_many_members_is_a_413_and_stays_within_the_limit(
    api: APIClient, clock: Clock, settings: Settings, peak_memory: Callable[[], float]
) -> None:
    settings.USAGE_MAX_BODY_BYTES = 4 * MIB
    body = gzip.compress(b" " * MIB, compresslevel=9) * 64  # 64 MiB once decompressed

    response = gzip_post(api, body)

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert peak_memory() < 32
    assert LoggedEvent.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(EMPTY_MEMBER * 1000 + gzip.compress(ndjson(line()))[:-4], id="last cut"),
        pytest.param(EMPTY_MEMBER * 1000 + b"not gzip", id="garbage after members"),
        pytest.param(EMPTY_MEMBER[:10], id="one member cut"),
    ],
)
def test_a_many_member_body_that_is_not_whole_gzip_is_a_400(
    api: APIClient, clock: Clock, body: bytes
) -> None:
    assert_error(gzip_post(api, body), 400, "VALIDATION_ERROR")


# --- defect 6: too many records ---------------------------------------------------------------


def test_a_10_kb_gzip_of_millions_of_lines_is_refused_before_they_are_built(
    api: APIClient, clock: Clock, peak_memory: Callable[[], float]
) -> None:
    body = gzip.compress(b"{}\n" * (3 * MIB), compresslevel=9)
    assert len(body) < 12 * 1024

    response = gzip_post(api, body)

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert "10000" in response.json()["error"]["message"]
    # The decompressed body (9 MiB) and little else: millions of parsed lines would be
    # hundreds of MiB.
    assert peak_memory() < 48


def test_a_10_kb_gzip_of_a_json_array_of_millions_is_refused_before_it_is_built(
    api: APIClient, clock: Clock, peak_memory: Callable[[], float]
) -> None:
    body = gzip.compress(b"[" + b"{}," * (3 * MIB) + b"{}]", compresslevel=9)

    response = gzip_post(api, body, "application/json")

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert peak_memory() < 48


@pytest.fixture
def json_parser_inputs(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every text the ingest hands to its JSON parser (which still parses it)."""
    parsed: list[bytes] = []

    def loads(text: bytes) -> Any:
        parsed.append(bytes(text))
        return orjson.loads(text)

    spy = types.SimpleNamespace(loads=loads, JSONDecodeError=orjson.JSONDecodeError)
    monkeypatch.setattr(ingest_body, "orjson", spy)
    return parsed


ITEMS = b",".join([b'{"a": "x,]}"}', b"[1, 2, 3]", b"{}", b'"[{,"'])  # four, commas inside


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" + ITEMS + b"]", id="a list"),
        pytest.param(b'{"host": "h", "records": [' + ITEMS + b"]}", id="records"),
    ],
)
def test_no_json_array_of_more_records_than_the_limit_is_parsed(
    api: APIClient,
    clock: Clock,
    settings: Settings,
    json_parser_inputs: list[bytes],
    body: bytes,
) -> None:
    settings.USAGE_MAX_RECORDS = 3

    response = post(api, body, "application/json")

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert json_parser_inputs == []


def test_the_other_keys_of_a_json_body_are_never_built(
    api: APIClient, clock: Clock, settings: Settings, json_parser_inputs: list[bytes]
) -> None:
    settings.USAGE_MAX_RECORDS = 3
    records = orjson.dumps([line("msg_1")])
    body = b'{"junk": [' + b"{}," * 100_000 + b'{}], "records": ' + records + b"}"

    response = post(api, body, "application/json")

    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 1
    assert json_parser_inputs == [records]


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([line("msg_1"), line("msg_2"), line("msg_3")], id="records"),
        pytest.param([{"a": [1, 2, 3, 4, 5], "b": "x,y,z,]"}, line("msg_2")], id="commas inside"),
    ],
)
def test_a_json_array_within_the_record_limit_is_read_whole(
    api: APIClient, clock: Clock, settings: Settings, items: list[Any]
) -> None:
    settings.USAGE_MAX_RECORDS = 3

    response = post(api, orjson.dumps({"records": items}), "application/json")

    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["accepted"] + answer["skipped"] + len(answer["rejected"]) == len(items)


def test_blank_lines_do_not_count_as_records(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    settings.USAGE_MAX_RECORDS = 2
    body = b"\n \t\r\n" * 50_000 + ndjson(line("msg_1")) + b"\r\n\r" + ndjson(line("msg_2"))

    response = post(api, body)

    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 2


@pytest.mark.parametrize("separator", [b"\n", b"\r\n", b"\r"])
def test_lines_end_at_any_line_break_and_keep_their_indexes(
    api: APIClient, clock: Clock, separator: bytes
) -> None:
    lines = [orjson.dumps(line("msg_1")), b"  not json", b"", orjson.dumps(line("msg_2"))]

    response = post(api, separator.join(lines))

    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["accepted"] == 2
    assert [rejection["index"] for rejection in answer["rejected"]] == [1]


def test_one_record_over_the_limit_is_refused_without_a_line_parsed(
    api: APIClient, clock: Clock, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.USAGE_MAX_RECORDS = 3
    parsed: list[bytes] = []
    monkeypatch.setattr(wire, "read_line", parsed.append)

    response = post(api, ndjson(*(line(f"msg_{n}") for n in range(4))))

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert parsed == []
