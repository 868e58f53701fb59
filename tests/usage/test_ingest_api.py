"""POST /app/claude-usage/events/ end to end: real database, real Redis, the projections that
follow the commit, and the stats the seed's API answers with afterwards."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_django import Settings
from rest_framework.test import APIClient

from tests.conftest import Clock, client_for
from usage.models import LoggedEvent

pytestmark = [pytest.mark.django_db(transaction=True)]

EVENTS = "/app/claude-usage/events/"
STATS = "/app/claude-usage/stats/"
NDJSON = "application/x-ndjson"
SONNET_45 = "claude-sonnet-4-5-20250929"
SECRET_TEXT = "the launch code is 0000"
# The clock fixture's now is 2025-10-05T22:00Z; with 6 h of retention 16:00Z is the horizon.


def line(
    message_id: str = "msg_01",
    request_id: str | None = "req_01",
    *,
    at: str = "2025-10-05T21:00:00.000Z",
    model: str = SONNET_45,
    input_tokens: int = 10,
    output_tokens: int = 100,
    cache_write: int = 1000,
    cache_write_1h: int | None = None,
    cache_read: int = 5000,
    session: str = "session-1",
    cwd: str = "/home/alice/code/rest-api",
    sidechain: bool = False,
) -> dict[str, Any]:
    """An assistant line as Claude Code writes it, message text included."""
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    if cache_write_1h is not None:
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": cache_write - cache_write_1h,
            "ephemeral_1h_input_tokens": cache_write_1h,
        }
    record: dict[str, Any] = {
        "parentUuid": None,
        "isSidechain": sidechain,
        "userType": "external",
        "cwd": cwd,
        "sessionId": session,
        "version": "2.0.29",
        "gitBranch": "main",
        "type": "assistant",
        "uuid": str(uuid.uuid4()),
        "timestamp": at,
        "message": {
            "id": message_id,
            "model": model,
            "role": "assistant",
            "content": [
                {"type": "text", "text": SECRET_TEXT},
                {"type": "tool_use", "name": "Bash", "input": {"command": SECRET_TEXT}},
            ],
            "usage": usage,
        },
    }
    if request_id is not None:
        record["requestId"] = request_id
    return record


def user_prompt(text: str = SECRET_TEXT) -> dict[str, Any]:
    return {
        "type": "user",
        "sessionId": "session-1",
        "cwd": "/home/alice/code/rest-api",
        "timestamp": "2025-10-05T20:59:58.000Z",
        "message": {"role": "user", "content": text},
    }


def synthetic() -> dict[str, Any]:
    record = line("5c0a7f1e-aaaa-4bbb-8ccc-000000000001", None, model="<synthetic>")
    record["isApiErrorMessage"] = True
    record["message"]["usage"] = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    return record


def ndjson(*records: object) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def post(client: APIClient, body: bytes, content_type: str = NDJSON, **headers: Any) -> Any:
    return client.post(EVENTS, body, content_type=content_type, **headers)


def ingest(client: APIClient, *records: object, **headers: Any) -> dict[str, Any]:
    response = post(client, ndjson(*records), **headers)
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def stats(client: APIClient) -> dict[str, Any]:
    response = client.get(STATS)
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def tokens_of(figures: dict[str, Any]) -> tuple[int, int, int, int, int]:
    return (
        figures["total_input_tokens"],
        figures["total_output_tokens"],
        figures["total_cache_creation_tokens"],
        figures["total_cache_read_tokens"],
        figures["total_messages"],
    )


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


def fresh_client() -> APIClient:
    return client_for(get_user_model().objects.create(username=f"user-{uuid.uuid4().hex}"))


# --- Record shapes -------------------------------------------------------------------------


def test_it_counts_an_assistant_record_and_prices_it(api: APIClient, clock: Clock) -> None:
    answer = ingest(api, line())

    counts = ("accepted", "duplicates", "skipped", "expired", "rejected", "unpriced_models")
    assert {name: answer[name] for name in counts} == {
        "accepted": 1,
        "duplicates": 0,
        "skipped": 0,
        "expired": 0,
        "rejected": [],
        "unpriced_models": [],
    }
    figures = stats(api)
    assert tokens_of(figures) == (10, 100, 1000, 5000, 1)
    assert figures["total_tokens"] == 6110
    # $3, $15, $3.75 and $0.30 per million tokens.
    assert figures["total_cost_usd"] == pytest.approx(
        (10 * 3 + 100 * 15 + 1000 * 3.75 + 5000 * 0.3) / 1e6, abs=1e-9
    )
    assert (figures["total_sessions"], figures["projects"]) == (1, 1)


def test_it_skips_every_line_that_carries_no_usage(api: APIClient, clock: Clock) -> None:
    answer = ingest(
        api,
        user_prompt(),
        {"type": "system", "subtype": "compact_boundary", "timestamp": "2025-10-05T21:00:00Z"},
        {"type": "summary", "summary": "Pagination for users endpoint", "leafUuid": "u-1"},
        {"type": "file-history-snapshot", "messageId": "m-1", "snapshot": {}},
        {"type": "queue-operation", "operation": "enqueue"},
    )

    assert (answer["accepted"], answer["skipped"], answer["rejected"]) == (0, 5, [])
    assert tokens_of(stats(api)) == (0, 0, 0, 0, 0)


def test_a_synthetic_record_is_a_free_message_of_no_model(api: APIClient, clock: Clock) -> None:
    answer = ingest(api, synthetic())

    assert (answer["accepted"], answer["unpriced_models"]) == (1, [])
    figures = stats(api)
    assert (figures["total_messages"], figures["total_tokens"]) == (1, 0)
    assert figures["total_cost_usd"] == 0
    assert figures["unpriced_models"] == []
    dashboard = api.get("/app/claude-usage/dashboard/?hours=6").json()
    assert dashboard["model_distribution"] == []


def test_it_counts_a_duplicated_line_once(api: APIClient, clock: Clock) -> None:
    answer = ingest(api, line(), line(), line())

    assert (answer["accepted"], answer["duplicates"]) == (1, 2)
    assert stats(api)["total_messages"] == 1


def test_a_larger_later_copy_moves_the_totals_by_exactly_the_difference(
    api: APIClient, clock: Clock
) -> None:
    ingest(api, line(output_tokens=1, at="2025-10-05T21:00:00.000Z"))
    before = stats(api)

    answer = ingest(api, line(output_tokens=412, at="2025-10-05T21:00:00.350Z"))

    after = stats(api)
    assert answer["accepted"] == 1
    assert after["total_output_tokens"] - before["total_output_tokens"] == 411
    assert after["total_tokens"] - before["total_tokens"] == 411
    assert after["total_messages"] == before["total_messages"] == 1
    # 411 more output tokens at $15 per million.
    assert after["total_cost_usd"] - before["total_cost_usd"] == pytest.approx(
        411 * 15 / 1e6, abs=1e-9
    )


def test_a_smaller_later_copy_changes_nothing(api: APIClient, clock: Clock) -> None:
    ingest(api, line(output_tokens=412))
    before = stats(api)

    answer = ingest(api, line(output_tokens=1))

    assert (answer["accepted"], answer["duplicates"]) == (0, 1)
    assert stats(api) == before


def test_a_resumed_copy_under_a_new_session_counts_once(api: APIClient, clock: Clock) -> None:
    ingest(api, line(session="original"))

    answer = ingest(api, line(session="resumed"), line("msg_02", "req_02", session="resumed"))

    assert (answer["accepted"], answer["duplicates"]) == (1, 1)
    figures = stats(api)
    assert (figures["total_messages"], figures["total_sessions"]) == (2, 2)
    assert figures["total_output_tokens"] == 200


@pytest.mark.parametrize("parent_first", [True, False], ids=["parent first", "replay first"])
def test_a_sidechain_replay_of_a_parent_message_is_not_counted(
    api: APIClient, clock: Clock, parent_first: bool
) -> None:
    parent = line("msg_01", "req_parent", output_tokens=100)
    replay = line("msg_01", "req_replay", output_tokens=300, sidechain=True)
    first, second = (parent, replay) if parent_first else (replay, parent)

    ingest(api, first)
    ingest(api, second)

    figures = stats(api)
    assert tokens_of(figures) == (10, 100, 1000, 5000, 1)
    assert figures["total_cost_usd"] == pytest.approx(
        (10 * 3 + 100 * 15 + 1000 * 3.75 + 5000 * 0.3) / 1e6, abs=1e-9
    )


def test_a_sidechain_of_its_own_counts(api: APIClient, clock: Clock) -> None:
    ingest(api, line("msg_01", "req_01"), line("msg_sub", "req_sub", sidechain=True))

    assert stats(api)["total_messages"] == 2


def test_copies_without_a_request_id_count_once_by_message_id(api: APIClient, clock: Clock) -> None:
    answer = ingest(api, line("msg_01", None), line("msg_01", None), line("msg_02", None))

    assert (answer["accepted"], answer["duplicates"]) == (2, 1)
    assert stats(api)["total_messages"] == 2


def test_1h_cache_writes_are_priced_at_twice_the_input_price(api: APIClient, clock: Clock) -> None:
    ingest(api, line(input_tokens=0, output_tokens=0, cache_read=0, cache_write=3000))
    five_minute_only = stats(api)["total_cost_usd"]

    other = fresh_client()
    ingest(
        other,
        line(input_tokens=0, output_tokens=0, cache_read=0, cache_write=3000, cache_write_1h=2000),
    )

    figures = stats(other)
    assert figures["total_cache_creation_tokens"] == 3000
    assert five_minute_only == pytest.approx(3000 * 3.75 / 1e6, abs=1e-9)
    assert figures["total_cost_usd"] == pytest.approx((1000 * 3.75 + 2000 * 6) / 1e6, abs=1e-9)
    stored = LoggedEvent.objects.get(cache_creation_1h_tokens__gt=0)
    assert (stored.cache_creation_5m_tokens, stored.cache_creation_1h_tokens) == (1000, 2000)


def test_an_unknown_model_costs_nothing_and_is_reported(api: APIClient, clock: Clock) -> None:
    answer = ingest(api, line("msg_01", model="claude-mystery-9"), line("msg_02"))

    assert answer["accepted"] == 2
    assert answer["unpriced_models"] == ["claude-mystery-9"]
    figures = stats(api)
    assert figures["unpriced_models"] == ["claude-mystery-9"]
    assert figures["total_messages"] == 2
    assert figures["total_cost_usd"] == pytest.approx(
        (10 * 3 + 100 * 15 + 1000 * 3.75 + 5000 * 0.3) / 1e6, abs=1e-9
    )


# --- Bad input -------------------------------------------------------------------------------


def test_a_broken_line_is_rejected_by_its_index_and_the_rest_is_kept(
    api: APIClient, clock: Clock
) -> None:
    body = (
        ndjson(line("msg_01"))
        + b'{"type":"assistant","message":{"id":"msg_half\n'
        + ndjson(line("msg_02"))
        + b'"just a string"\n'
        + ndjson(line("msg_03"))
    )

    response = post(api, body)

    assert response.status_code == 200, response.content
    answer = response.json()
    assert [r["index"] for r in answer["rejected"]] == [1, 3]
    assert {r["error"]["code"] for r in answer["rejected"]} == {"VALIDATION_ERROR"}
    assert answer["accepted"] == 3
    assert stats(api)["total_messages"] == 3


def test_bytes_that_are_not_utf8_in_a_lines_text_do_not_lose_its_usage(
    api: APIClient, clock: Clock
) -> None:
    """Only the text is broken, and the server never keeps text: the usage counts (as
    ccusage counts it). The same bytes in an id still reject the line."""
    text_broken = ndjson(line("msg_01")).replace(SECRET_TEXT.encode(), b"caf\xe9 \xff", 1)
    id_broken = ndjson(line("msg_02")).replace(b"msg_02", b"msg_\xff")

    answer = post(api, text_broken + id_broken).json()

    assert (answer["accepted"], [r["index"] for r in answer["rejected"]]) == (1, [1])
    assert "not valid JSON" in answer["rejected"][0]["error"]["message"]
    assert stats(api)["total_output_tokens"] == 100


BAD_RECORDS = {
    "tokens as text": line(input_tokens="10"),  # type: ignore[arg-type]
    "fractional tokens": line(output_tokens=1.5),  # type: ignore[arg-type]
    "negative tokens": line(output_tokens=-5),
    "absurd tokens": line(cache_read=10**12),
    "missing timestamp": {k: v for k, v in line().items() if k != "timestamp"},
    "unreadable timestamp": line(at="last tuesday"),
    "timestamp a week ahead": line(at="2025-10-12T21:00:00Z"),
    "message id not text": {**line(), "message": {**line()["message"], "id": 42}},
    "sidechain flag as text": {**line(), "isSidechain": "yes"},
    "usage not an object": {**line(), "message": {**line()["message"], "usage": [1, 2]}},
    "an array": [line()],
}


@pytest.mark.parametrize("bad", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_a_malformed_record_is_rejected_and_its_batch_kept(
    api: APIClient, clock: Clock, bad: object
) -> None:
    answer = ingest(api, line("msg_01"), bad, line("msg_02"))

    assert [r["index"] for r in answer["rejected"]] == [1]
    assert answer["rejected"][0]["error"]["code"] == "VALIDATION_ERROR"
    assert answer["rejected"][0]["error"]["message"]
    assert answer["accepted"] == 2
    assert stats(api)["total_messages"] == 2


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"hello, world\nthis is not json\n", NDJSON, id="prose as NDJSON"),
        pytest.param(b"<<<<<<< HEAD\n", NDJSON, id="merge marker"),
        pytest.param(b"{not json", "application/json", id="broken JSON"),
        pytest.param(b'{"rows": []}', "application/json", id="JSON without records"),
        pytest.param(b'{"records": {"a": 1}}', "application/json", id="records not a list"),
        pytest.param(b'{"records": [], "host": 7}', "application/json", id="host not text"),
        pytest.param(b'"records"', "application/json", id="JSON string"),
    ],
)
def test_a_body_that_is_not_a_batch_is_a_400(
    api: APIClient, clock: Clock, body: bytes, content_type: str
) -> None:
    response = post(api, body, content_type)

    assert_error(response, 400, "VALIDATION_ERROR")
    assert LoggedEvent.objects.count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data"])
def test_a_wrong_content_type_is_a_415(api: APIClient, clock: Clock, content_type: str) -> None:
    response = post(api, ndjson(line()), content_type)

    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert LoggedEvent.objects.count() == 0


def test_an_unsupported_content_encoding_is_a_415(api: APIClient, clock: Clock) -> None:
    response = post(api, ndjson(line()), HTTP_CONTENT_ENCODING="br")

    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_reading_the_ingest_endpoint_is_a_405(api: APIClient, clock: Clock) -> None:
    assert_error(api.get(EVENTS), 405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no token"),
        pytest.param("Token 0123456789abcdef0123456789abcdef01234567", id="unknown token"),
        pytest.param("Token", id="empty token"),
        pytest.param("Bearer whatever", id="other scheme"),
    ],
)
def test_a_request_without_a_valid_token_is_a_401(
    user: Any, clock: Clock, authorization: str | None
) -> None:
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)

    response = post(client, ndjson(line()))

    assert_error(response, 401, "AUTHENTICATION_REQUIRED")
    assert LoggedEvent.objects.count() == 0


# --- Limits ----------------------------------------------------------------------------------


def test_a_body_over_the_size_limit_is_a_413(
    api: APIClient, clock: Clock, settings: Settings
) -> None:
    body = ndjson(line())
    settings.USAGE_MAX_BODY_BYTES = len(body) - 1

    response = post(api, body)

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert LoggedEvent.objects.count() == 0


def test_a_body_of_exactly_the_size_limit_is_accepted(
    api: APIClient,
    clock: Clock,
    settings: Settings,
) -> None:
    body = ndjson(line())
    settings.USAGE_MAX_BODY_BYTES = len(body)

    assert post(api, body).status_code == 200


def test_a_body_above_djangos_form_upload_limit_but_within_ours_is_accepted(
    api: APIClient,
    clock: Clock,
    settings: Settings,
) -> None:
    """Django refuses ``request.body`` above DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB by default);
    only USAGE_MAX_BODY_BYTES may limit an ingest body."""
    long_prompt = user_prompt("x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1))
    body = ndjson(long_prompt, line())
    assert len(body) < settings.USAGE_MAX_BODY_BYTES

    response = post(api, body)

    assert response.status_code == 200, response.content
    assert (response.json()["accepted"], response.json()["skipped"]) == (1, 1)


@pytest.mark.parametrize("content_type", [NDJSON, "application/json"])
def test_more_records_than_the_limit_is_a_413(
    api: APIClient,
    clock: Clock,
    settings: Settings,
    content_type: str,
) -> None:
    settings.USAGE_MAX_RECORDS = 3
    records = [line(f"msg_{n}") for n in range(4)]
    body = ndjson(*records) if content_type == NDJSON else orjson.dumps({"records": records})

    response = post(api, body, content_type)

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert LoggedEvent.objects.count() == 0


def test_as_many_records_as_the_limit_are_accepted(
    api: APIClient,
    clock: Clock,
    settings: Settings,
) -> None:
    settings.USAGE_MAX_RECORDS = 3

    answer = ingest(api, *(line(f"msg_{n}") for n in range(3)))

    assert answer["accepted"] == 3


def test_a_gzip_bomb_is_a_413(api: APIClient, clock: Clock, settings: Settings) -> None:
    settings.USAGE_MAX_BODY_BYTES = 64 * 1024
    bomb = gzip.compress(ndjson(line()) + b" " * (16 * 1024 * 1024))
    assert len(bomb) < settings.USAGE_MAX_BODY_BYTES

    response = post(api, bomb, HTTP_CONTENT_ENCODING="gzip")

    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert LoggedEvent.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"this was never gzip", id="not gzip"),
        pytest.param(gzip.compress(ndjson(line("msg_01"), line("msg_02")))[:-12], id="truncated"),
        pytest.param(b"", id="empty"),
    ],
)
def test_a_body_that_is_not_whole_gzip_is_a_400(api: APIClient, clock: Clock, body: bytes) -> None:
    response = post(api, body, HTTP_CONTENT_ENCODING="gzip")

    assert_error(response, 400, "VALIDATION_ERROR")
    assert LoggedEvent.objects.count() == 0


# --- Body formats and hosts -----------------------------------------------------------------


def test_it_reads_a_gzipped_ndjson_body(api: APIClient, clock: Clock) -> None:
    body = gzip.compress(ndjson(line("msg_01"), user_prompt(), line("msg_02")))

    response = post(api, body, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200, response.content
    assert (response.json()["accepted"], response.json()["skipped"]) == (2, 1)


def test_it_reads_every_member_of_a_multi_member_gzip_body(api: APIClient, clock: Clock) -> None:
    """Concatenated gzip members are one valid gzip stream (RFC 1952, ``gzip -c a b``)."""
    body = gzip.compress(ndjson(line("msg_01"))) + gzip.compress(ndjson(line("msg_02")))

    response = post(api, body, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 2
    assert stats(api)["total_messages"] == 2


def test_it_reads_a_json_body_of_records(api: APIClient, clock: Clock) -> None:
    body = orjson.dumps({"records": [line("msg_01"), user_prompt(), "oops", line("msg_02")]})

    response = post(api, body, "application/json")

    assert response.status_code == 200, response.content
    answer = response.json()
    assert (answer["accepted"], answer["skipped"]) == (2, 1)
    assert [r["index"] for r in answer["rejected"]] == [2]


def test_it_reads_a_gzipped_json_body(api: APIClient, clock: Clock) -> None:
    body = gzip.compress(orjson.dumps({"records": [line("msg_01")]}))

    response = post(api, body, "application/json; charset=utf-8", HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 1


def _hosts(client: APIClient) -> dict[str, int]:
    return {host["host"]: host["total_messages"] for host in stats(client)["hosts"]}


def test_the_host_comes_from_the_x_usage_host_header(api: APIClient, clock: Clock) -> None:
    ingest(api, line("msg_01"), HTTP_X_USAGE_HOST="laptop")
    ingest(api, line("msg_02"), line("msg_03"), HTTP_X_USAGE_HOST="desktop")

    assert _hosts(api) == {"laptop": 1, "desktop": 2}
    assert set(LoggedEvent.objects.values_list("host", flat=True)) == {"laptop", "desktop"}


def test_the_host_comes_from_a_json_bodys_host_key(api: APIClient, clock: Clock) -> None:
    body = orjson.dumps({"host": "build-box", "records": [line()]})

    assert post(api, body, "application/json").status_code == 200

    assert _hosts(api) == {"build-box": 1}


def test_a_batch_without_a_host_is_filed_under_unknown(api: APIClient, clock: Clock) -> None:
    ingest(api, line())

    assert _hosts(api) == {"unknown": 1}


def test_an_absurd_host_name_is_a_400(api: APIClient, clock: Clock) -> None:
    response = post(api, ndjson(line()), HTTP_X_USAGE_HOST="h" * 256)

    assert_error(response, 400, "VALIDATION_ERROR")


# --- Idempotency, order, isolation, retention, privacy --------------------------------------


def test_sending_the_same_batch_twice_gives_identical_totals(api: APIClient, clock: Clock) -> None:
    batch = ndjson(
        line("msg_01", output_tokens=1),
        line("msg_01", output_tokens=400, at="2025-10-05T21:00:00.300Z"),
        line("msg_02", "req_02"),
        user_prompt(),
        synthetic(),
    )
    first = post(api, batch).json()
    after_first = stats(api)

    second = post(api, batch).json()

    assert (first["accepted"], first["skipped"]) == (4, 1)
    assert (second["accepted"], second["duplicates"], second["skipped"]) == (0, 4, 1)
    assert second["position"] is None
    assert stats(api) == after_first


# One batch with every trap: partial copies, content-block copies whose timestamps straddle a
# minute, a resumed copy into a session that holds nothing else, a sidechain replay of a
# parent message, exact duplicates, no request id, a <synthetic> record and skipped lines.
TRAPS = [
    line("msg_a", "req_a", output_tokens=1, at="2025-10-05T20:59:59.900Z"),
    line("msg_a", "req_a", output_tokens=420, at="2025-10-05T21:00:00.100Z"),
    line("msg_a", "req_a", output_tokens=420, at="2025-10-05T21:00:00.400Z"),
    line("msg_b", "req_b", at="2025-10-05T21:04:59.950Z"),
    line("msg_b", "req_b", at="2025-10-05T21:05:00.020Z"),
    line("msg_b", "req_b", session="resumed", at="2025-10-05T21:04:59.950Z"),
    line("msg_c", "req_c", at="2025-10-05T21:10:00Z"),
    line("msg_c", "req_side", sidechain=True, output_tokens=999, at="2025-10-05T21:10:30Z"),
    line("msg_d", None, at="2025-10-05T21:20:00Z", model="claude-opus-4-1-20250805"),
    line("msg_d", None, at="2025-10-05T21:20:00Z", model="claude-opus-4-1-20250805"),
    synthetic(),
    user_prompt(),
    {"type": "summary", "summary": "Traps", "leafUuid": "u-1"},
]


def _everything_the_api_answers(client: APIClient) -> dict[str, Any]:
    projects = client.get("/app/claude-usage/projects/").json()["projects"]
    details = {}
    for project in projects:
        detail = client.get(f"/app/claude-usage/projects/{project['name']}/").json()
        details[project["name"]] = detail
    # First and last activity included: a copy later revised or retracted leaves no trace.
    return {
        "stats": stats(client),
        "timeseries": client.get("/app/claude-usage/timeseries/?hours=2&interval=1min").json(),
        "dashboard": client.get("/app/claude-usage/dashboard/?hours=2").json(),
        "projects": details,
    }


@pytest.fixture
def reference_answers(clock: Clock) -> dict[str, Any]:
    client = fresh_client()
    ingest(client, *TRAPS)
    return _everything_the_api_answers(client)


@hypothesis_settings(
    max_examples=25,
    deadline=None,
    # Each example ingests for a user of its own, so the shared fixtures hold no state.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(order=st.permutations(TRAPS))
def test_any_permutation_of_a_batch_gives_identical_answers(
    clock: Clock, reference_answers: dict[str, Any], order: list[dict[str, Any]]
) -> None:
    client = fresh_client()

    ingest(client, *order)

    assert _everything_the_api_answers(client) == reference_answers


def test_a_revised_copy_leaves_no_trace_in_its_sessions_first_activity(clock: Clock) -> None:
    partial = line(output_tokens=1, at="2025-10-05T20:59:59.900Z")
    full = line(output_tokens=420, at="2025-10-05T21:00:00.100Z")
    in_order, reversed_order = fresh_client(), fresh_client()

    ingest(in_order, partial, full)
    ingest(reversed_order, full, partial)

    assert [
        client.get("/app/claude-usage/projects/rest-api/").json()["sessions"][0]["first_activity"]
        for client in (in_order, reversed_order)
    ] == ["2025-10-05T21:00:00.100000+00:00"] * 2


def test_a_retracted_replay_leaves_no_trace_in_its_hosts_last_seen(clock: Clock) -> None:
    parent = line("msg_01", "req_parent", at="2025-10-05T21:00:00Z")
    replay = line("msg_01", "req_replay", sidechain=True, at="2025-10-05T21:30:00Z")
    parent_first, replay_first = fresh_client(), fresh_client()

    ingest(parent_first, parent, replay)
    ingest(replay_first, replay, parent)

    assert [stats(client)["hosts"][0]["last_seen"] for client in (parent_first, replay_first)] == [
        "2025-10-05T21:00:00+00:00"
    ] * 2


def sessions_of(client: APIClient, project: str = "rest-api") -> dict[str, dict[str, Any]]:
    answer = client.get(f"/app/claude-usage/projects/{project}/").json()
    return {session["session_id"]: session for session in answer["sessions"]}


def test_a_copy_revised_by_a_later_batch_leaves_no_trace_in_first_and_last(
    api: APIClient, clock: Clock
) -> None:
    ingest(api, line(output_tokens=1, at="2025-10-05T20:59:59.900Z"))
    ingest(api, line(output_tokens=420, at="2025-10-05T21:00:00.100Z"))

    session = sessions_of(api)["session-1"]
    project = api.get("/app/claude-usage/projects/rest-api/").json()
    counted_at = "2025-10-05T21:00:00.100000+00:00"
    assert (session["first_activity"], session["last_activity"]) == (counted_at, counted_at)
    assert (project["created_at"], project["updated_at"]) == (counted_at, counted_at)
    assert stats(api)["hosts"][0]["last_seen"] == counted_at


def busy_session(count: int = 600) -> list[dict[str, Any]]:
    """``count`` messages of another session, 15 s apart from 18:00:15: more than one page
    (256 members) of the timestamp index to walk past."""
    return [
        line(
            f"msg_{i:03}",
            f"req_{i:03}",
            session="busy",
            at=f"2025-10-05T{18 + i // 240:02}:{i // 4 % 60:02}:{i % 4 * 15:02}Z",
        )
        for i in range(1, count + 1)
    ]


def test_a_withdrawn_first_message_gives_way_to_the_sessions_next_however_far(
    api: APIClient, clock: Clock
) -> None:
    replay = line("msg_p", "req_replay", sidechain=True, session="far", at="2025-10-05T18:00:00Z")
    ingest(
        api,
        replay,
        *busy_session(),
        line("msg_y", "req_y", session="far", at="2025-10-05T21:30:00Z"),
    )

    ingest(api, line("msg_p", "req_parent", session="busy", at="2025-10-05T18:00:01Z"))

    far = sessions_of(api)["far"]
    assert far["total_messages"] == 1
    assert far["first_activity"] == far["last_activity"] == "2025-10-05T21:30:00+00:00"


def test_a_withdrawn_last_message_gives_way_to_the_sessions_previous_however_far(
    api: APIClient, clock: Clock
) -> None:
    replay = line("msg_p", "req_replay", sidechain=True, session="far", at="2025-10-05T21:30:00Z")
    first = line("msg_y", "req_y", session="far", at="2025-10-05T18:00:00Z")
    ingest(api, first, *busy_session(), replay)

    ingest(api, line("msg_p", "req_parent", session="busy", at="2025-10-05T21:29:59Z"))

    far = sessions_of(api)["far"]
    assert far["total_messages"] == 1
    assert far["first_activity"] == far["last_activity"] == "2025-10-05T18:00:00+00:00"


def test_a_session_left_without_messages_starts_afresh(api: APIClient, clock: Clock) -> None:
    replay = line(
        "msg_p", "req_replay", sidechain=True, session="lonely", at="2025-10-05T18:00:00Z"
    )
    ingest(api, replay)
    ingest(api, line("msg_p", "req_parent", at="2025-10-05T18:00:01Z"))
    assert "lonely" not in sessions_of(api)

    ingest(api, line("msg_q", "req_q", session="lonely", at="2025-10-05T21:00:00Z"))

    lonely = sessions_of(api)["lonely"]
    assert lonely["first_activity"] == lonely["last_activity"] == "2025-10-05T21:00:00+00:00"


def test_the_trap_batch_counts_each_message_once(api: APIClient, clock: Clock) -> None:
    """What the permutations above agree on is right: a 420-token msg_a, msg_b, msg_c's
    parent copy, msg_d and the synthetic record."""
    ingest(api, *TRAPS)

    figures = stats(api)
    assert figures["total_messages"] == 5
    assert figures["total_output_tokens"] == 420 + 100 + 100 + 100
    assert figures["projects"] == 1


def test_a_users_records_never_appear_in_another_users_answers(
    api: APIClient, clock: Clock, other_user: Any
) -> None:
    bob = client_for(other_user)
    ingest(api, line("msg_01"), line("msg_02"), HTTP_X_USAGE_HOST="alices-laptop")

    bobs = stats(bob)
    bobs_projects = bob.get("/app/claude-usage/projects/").json()["projects"]
    answer = ingest(bob, line("msg_01"))

    assert tokens_of(bobs) == (0, 0, 0, 0, 0)
    assert (bobs["hosts"], bobs["projects"]) == ([], 0)
    assert bobs_projects == []
    # The same message id is bob's own first copy, not a duplicate of alice's.
    assert (answer["accepted"], answer["duplicates"]) == (1, 0)
    assert stats(bob)["total_messages"] == 1
    assert stats(api)["total_messages"] == 2


def test_records_older_than_the_retention_horizon_are_expired(
    api: APIClient,
    clock: Clock,
    settings: Settings,
) -> None:
    settings.USAGE_RETENTION_HOURS = 6
    clock.now = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)

    answer = ingest(
        api,
        line("msg_old", at="2025-10-05T15:59:59.999Z"),
        line("msg_edge", at="2025-10-05T16:00:00.000Z"),
        line("msg_new", at="2025-10-05T21:59:00.000Z"),
    )

    assert (answer["accepted"], answer["expired"]) == (2, 1)
    assert stats(api)["total_messages"] == 2
    assert set(LoggedEvent.objects.values_list("message_id", flat=True)) == {
        "msg_edge",
        "msg_new",
    }


def test_with_retention_off_old_records_are_kept(
    api: APIClient,
    clock: Clock,
    settings: Settings,
) -> None:
    settings.USAGE_RETENTION_HOURS = 0

    answer = ingest(api, line(at="2025-09-01T10:00:00Z"))

    assert (answer["accepted"], answer["expired"]) == (1, 0)


@pytest.fixture
def secret_batch() -> bytes:
    return ndjson(user_prompt(), line("msg_01"), line("msg_02", sidechain=True))


def test_no_column_of_the_log_holds_message_text(
    api: APIClient, clock: Clock, secret_batch: bytes
) -> None:
    assert SECRET_TEXT.encode() in secret_batch

    answer = post(api, secret_batch).json()

    assert answer["accepted"] == 2
    rows = list(LoggedEvent.objects.values())
    assert len(rows) == 2
    for row in rows:
        for column, value in row.items():
            assert SECRET_TEXT not in str(value), column
