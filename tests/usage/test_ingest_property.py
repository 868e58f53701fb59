"""The whole ingest path against anything a client can send: any bytes, any gzip, any JSON,
transcript lines with any field broken. The answer is always one of the ingest's answers in
the error envelope, never a 5xx, and the log and its projection still agree with a rebuild.

Unlike tests/usage/test_projections.py (well-formed copies of a few messages), the inputs
here are hostile: the cases of issue 12 are pinned as examples, hypothesis looks for more.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.conftest import Clock, client_for
from tests.usage.projection_dump import dump_projection
from usage import store
from usage.projection import projector, redis_store

EVENTS = "/app/claude-usage/events/"
ANSWERS = {200, 400, 413, 415, 429}
NOW = datetime(2025, 10, 5, 22, 0, tzinfo=UTC)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# Values a field of a transcript line may hold, the awkward ones well represented.
awkward_strings = st.sampled_from(
    ["", "a\x00b", "\ud800", "x" * 300, "../../etc", "claude-sonnet-4-5", "msg_1", "/p"]
) | st.text(max_size=12)
awkward_numbers = st.sampled_from([0, -1, 2**31, 2**53 + 1, 2**63, 10**30, 1.5]) | st.integers(
    0, 10**6
)
awkward_times = st.sampled_from(
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2025-10-05T21:59:00Z",
        "2025-10-06T21:00:00Z",  # most of a day ahead of the clock
        "1999-12-31T23:59:59Z",
        "not a time",
        "",
    ]
) | st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001 (hypothesis wants naive bounds)
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.just(UTC),
).map(lambda moment: moment.isoformat())


@st.composite
def transcript_lines(draw: st.DrawFn) -> dict[str, Any]:
    """An assistant line whose every field may be broken, or missing."""
    usage = {
        name: draw(awkward_numbers | json_values)
        for name in draw(
            st.lists(
                st.sampled_from(
                    [
                        "input_tokens",
                        "output_tokens",
                        "cache_creation_input_tokens",
                        "cache_read_input_tokens",
                    ]
                ),
                unique=True,
            )
        )
    }
    line: dict[str, Any] = {
        "type": draw(st.sampled_from(["assistant", "user", "summary", ""])),
        "timestamp": draw(awkward_times),
        "sessionId": draw(awkward_strings),
        "cwd": draw(awkward_strings),
        "requestId": draw(awkward_strings),
        "message": {"id": draw(awkward_strings), "model": draw(awkward_strings), "usage": usage},
    }
    for name in draw(st.lists(st.sampled_from(sorted(line)), unique=True, max_size=2)):
        line[name] = draw(json_values)  # a field of the wrong type, or (None) empty
    return line


def dumps(value: Any) -> bytes:
    # Not orjson: it refuses integers past 64 bits and lone surrogates, which a client may
    # well send (as JSON escapes).
    return json.dumps(value).encode()


def ndjson(values: list[Any]) -> bytes:
    return b"".join(dumps(value) + b"\n" for value in values)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str, dict[str, str]]:
    """(body, content type, extra headers)."""
    kind = draw(st.sampled_from(["bytes", "ndjson", "json", "gzip", "gzip members"]))
    lines = draw(st.lists(transcript_lines() | json_values, max_size=6))
    if kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "json":
        body = dumps(draw(st.sampled_from([{"records": lines}, lines, draw(json_values)])))
    else:
        body = ndjson(lines)
    headers = {}
    if kind.startswith("gzip"):
        members = draw(st.integers(1, 40)) if kind == "gzip members" else 1
        body = gzip.compress(body) + gzip.compress(b"") * (members - 1)
        if draw(st.booleans()):
            body = body[: draw(st.integers(0, len(body)))]  # cut short
        headers["HTTP_CONTENT_ENCODING"] = "gzip"
    content_type = draw(
        st.sampled_from(["application/x-ndjson", "application/json", "text/plain", ""])
    )
    if draw(st.booleans()):
        headers["HTTP_X_USAGE_HOST"] = draw(awkward_strings)
    return body, content_type, headers


def line(**fields: Any) -> bytes:
    record = {
        "type": "assistant",
        "timestamp": "2025-10-05T21:00:00Z",
        "sessionId": "s",
        "cwd": "/p",
        "requestId": "req_1",
        "message": {
            "id": "msg_1",
            "model": "claude-sonnet-4-5",
            "usage": {"input_tokens": 1, "output_tokens": 2},
        },
    }
    record.update(fields)
    return dumps(record) + b"\n"


def assert_an_answer(response: Any) -> None:
    assert response.status_code in ANSWERS, (response.status_code, response.content[:300])
    body = orjson.loads(response.content)
    if response.status_code != 200:
        assert isinstance(body["error"]["code"], str)
        assert body["error"]["message"]
        return
    for rejection in body["rejected"]:
        assert isinstance(rejection["index"], int)
        assert rejection["error"]["code"]


@pytest.mark.django_db(transaction=True)
@override_settings(USAGE_RETENTION_HOURS=0)
@hypothesis_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=st.lists(bodies(), min_size=1, max_size=4))
@example(sent=[(line(timestamp="0001-01-01T00:00:00+01:00") + line(), "application/x-ndjson", {})])
@example(sent=[(line(timestamp="9999-12-31T23:59:59-01:00"), "application/x-ndjson", {})])
@example(sent=[(line(sessionId="a\u0000b") + line(), "application/x-ndjson", {})])
@example(sent=[(line(cwd="\ud800"), "application/x-ndjson", {})])
@example(sent=[(line(timestamp="2025-10-06T21:00:00Z"), "application/x-ndjson", {})])
@example(
    sent=[
        (
            line(message={"id": "m", "model": "x", "usage": {"input_tokens": 2**63}}),
            "application/x-ndjson",
            {},
        )
    ]
)
@example(
    sent=[(gzip.compress(b"") * 2000, "application/x-ndjson", {"HTTP_CONTENT_ENCODING": "gzip"})]
)
def test_any_body_gets_an_answer_and_leaves_the_projection_equal_to_a_rebuild(
    user: User, clock: Clock, sent: list[tuple[bytes, str, dict[str, str]]]
) -> None:
    clock.now = NOW
    client: APIClient = client_for(user)
    for body, content_type, headers in sent:
        # generic(), not post(): post() renders a body that comes without a content type.
        extra: dict[str, Any] = headers
        response = client.generic("POST", EVENTS, body, content_type=content_type, **extra)  # type: ignore[arg-type]  # Django takes bytes; the stubs say str
        assert_an_answer(response)

    assert_projection_follows_the_log(user.pk)


def assert_projection_follows_the_log(user_id: int) -> None:
    projector.ensure_current(user_id)
    checkpoint = redis_store.checkpoint(user_id)
    assert checkpoint is not None
    assert checkpoint.position == store.last_position(user_id)
    incremental = dump_projection(user_id)
    projector.rebuild_user(user_id)
    assert dump_projection(user_id) == incremental
