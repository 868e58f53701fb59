"""Rate limits: a fixed one-minute window per token (reads and writes apart) and per address
for anonymous requests, counted in the shared Redis so every daphne process sees one count.
Real Redis, real database; only the throttle's clock is fake."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.checks import Error
from django.http import HttpRequest, HttpResponse
from django.test import override_settings
from pytest_django.fixtures import Settings
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from backend.checks import check_settings
from tests.conftest import client_for
from tests.support import free_port
from usage.api import throttles
from usage.projection import redis_store

pytestmark = [pytest.mark.django_db]

API = "/app/claude-usage/"
WINDOW_START = 29_000_000 * 60.0  # a minute boundary (epoch seconds)
LIMITS = {"five_hour": {"used_percentage": 10, "resets_at": 1_760_000_000}}


class ThrottleClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def throttle_clock(monkeypatch: pytest.MonkeyPatch) -> ThrottleClock:
    fake = ThrottleClock(WINDOW_START + 15)
    monkeypatch.setattr(throttles.RequestRateThrottle, "timer", staticmethod(fake))
    return fake


def read(client: APIClient, path: str = "stats/", **extra: Any) -> Any:
    return client.get(f"{API}{path}", **extra)


def write(client: APIClient) -> Any:
    return client.post(f"{API}limits/", LIMITS, format="json")


def assert_rate_limited(response: Any, retry_after: int) -> None:
    assert response.status_code == 429, response.content
    assert response["Retry-After"] == str(retry_after)
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "RATE_LIMITED"
    assert body["error"]["message"]


def test_reads_over_the_limit_are_answered_429_with_retry_after_in_the_envelope(
    api: APIClient, settings: Settings, throttle_clock: ThrottleClock
) -> None:
    settings.USAGE_THROTTLE_READ_PER_MINUTE = 3

    answers = [read(api).status_code for _ in range(3)]
    refused = read(api)

    assert answers == [200, 200, 200]
    assert_rate_limited(refused, retry_after=45)  # the window ends 45 s after WINDOW_START + 15


def test_the_count_starts_again_in_the_next_minute(
    api: APIClient, settings: Settings, throttle_clock: ThrottleClock
) -> None:
    settings.USAGE_THROTTLE_READ_PER_MINUTE = 2
    for _ in range(2):
        read(api)
    assert read(api).status_code == 429

    throttle_clock.now = WINDOW_START + 60

    assert read(api).status_code == 200


def test_writes_have_a_count_of_their_own(
    api: APIClient, settings: Settings, throttle_clock: ThrottleClock
) -> None:
    settings.USAGE_THROTTLE_READ_PER_MINUTE = 2
    settings.USAGE_THROTTLE_WRITE_PER_MINUTE = 3
    for _ in range(2):
        read(api)

    writes = [write(api).status_code for _ in range(3)]
    refused = write(api)

    assert read(api).status_code == 429
    assert writes == [200, 200, 200]
    assert_rate_limited(refused, retry_after=45)


def test_each_token_has_its_own_count(
    api: APIClient, other_user: User, settings: Settings, throttle_clock: ThrottleClock
) -> None:
    settings.USAGE_THROTTLE_READ_PER_MINUTE = 2
    for _ in range(3):
        read(api)

    assert read(api).status_code == 429
    assert read(client_for(other_user)).status_code == 200


def test_anonymous_requests_are_counted_per_address_and_a_forwarded_for_header_is_ignored(
    settings: Settings, throttle_clock: ThrottleClock
) -> None:
    settings.USAGE_THROTTLE_ANONYMOUS_PER_MINUTE = 2
    anonymous = APIClient()
    first = [
        read(anonymous, "schema/?format=json", REMOTE_ADDR="10.0.0.1").status_code for _ in range(2)
    ]

    spoofed = read(
        anonymous, "schema/?format=json", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4"
    )
    elsewhere = read(anonymous, "schema/?format=json", REMOTE_ADDR="10.0.0.2")

    assert first == [200, 200]
    assert_rate_limited(spoofed, retry_after=45)
    assert elsewhere.status_code == 200


def test_a_limit_of_zero_is_off(
    api: APIClient, settings: Settings, throttle_clock: ThrottleClock
) -> None:
    settings.USAGE_THROTTLE_READ_PER_MINUTE = 0

    answers = {read(api).status_code for _ in range(30)}

    assert answers == {200}
    assert not throttle_keys()


def test_a_window_is_one_counter_in_the_shared_redis_however_many_requests_it_counts(
    api: APIClient, settings: Settings, throttle_clock: ThrottleClock
) -> None:
    settings.USAGE_THROTTLE_READ_PER_MINUTE = 1000

    for _ in range(40):
        read(api, "projects/")

    keys = throttle_keys()
    assert len(keys) == 1
    client = redis_store.client()
    assert client.get(keys[0]) == "40"
    assert 0 < client.ttl(keys[0]) <= 120  # it goes away on its own


def throttle_keys() -> list[str]:
    from django.conf import settings

    pattern = redis_store.glob_escape(settings.USAGE_REDIS_PREFIX) + ":*throttle*"
    return sorted(redis_store.client().scan_iter(match=pattern, count=1000))


def test_the_default_limits_leave_room_for_a_backfill_and_a_busy_dashboard() -> None:
    from django.conf import settings

    assert settings.USAGE_THROTTLE_WRITE_PER_MINUTE == 12_000
    assert settings.USAGE_THROTTLE_READ_PER_MINUTE == 1_200
    assert settings.USAGE_THROTTLE_ANONYMOUS_PER_MINUTE == 60


@pytest.mark.parametrize(
    "name",
    [
        "USAGE_THROTTLE_WRITE_PER_MINUTE",
        "USAGE_THROTTLE_READ_PER_MINUTE",
        "USAGE_THROTTLE_ANONYMOUS_PER_MINUTE",
    ],
)
@pytest.mark.parametrize("value", [-1, 2.5, True])
def test_a_limit_that_is_not_a_whole_number_from_zero_is_refused_at_start_up(
    name: str, value: object
) -> None:
    with override_settings(**{name: value}):
        errors = check_settings()

    assert [error.msg for error in errors if isinstance(error, Error)] == [
        f"{name}={value!r}: must be a whole number >= 0"
    ]


# --- requests of one token at once ---------------------------------------------------------


class WaitingClock:
    """The in-flight throttle's clock and pause: each pause moves the clock on, and may run
    something meanwhile (another request ending)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []
        self.meanwhile: list[Any] = []

    def timer(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        if self.meanwhile:
            self.meanwhile.pop(0)()


@pytest.fixture
def waiting_clock(monkeypatch: pytest.MonkeyPatch) -> WaitingClock:
    fake = WaitingClock()
    monkeypatch.setattr(throttles.InFlightThrottle, "timer", staticmethod(fake.timer))
    monkeypatch.setattr(throttles.InFlightThrottle, "sleep", staticmethod(fake.sleep))
    return fake


class Running:
    """Reads or writes of a user running in other processes, holding their slots."""

    def __init__(self, user: User, kind: str, requests: int) -> None:
        counter: Any = caches["default"]
        self.counter = counter
        self.key = throttles.in_flight_key(kind, user.pk)
        self.slots = [
            counter.take_slot(self.key, limit=requests, lease_seconds=60) for _ in range(requests)
        ]
        assert None not in self.slots

    def end_one(self) -> None:
        self.counter.give_back(self.key, self.slots.pop())

    def taken(self) -> int:
        """Slots of the key held now, by anyone."""
        return int(self.counter.slots_taken(self.key))


def running(user: User, kind: str, requests: int) -> Running:
    return Running(user, kind, requests)


def test_one_read_and_four_writes_of_a_token_run_at_once_by_default() -> None:
    # The agent sends two batches at once, and a user may have several machines.
    from django.conf import settings

    assert settings.USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN == 1
    assert settings.USAGE_MAX_WRITES_IN_FLIGHT_PER_TOKEN == 4
    assert settings.USAGE_IN_FLIGHT_WAIT_SECONDS == 2


def test_a_read_over_the_bound_waits_for_a_slot_and_runs_when_one_ends(
    api: APIClient, user: User, settings: Settings, waiting_clock: WaitingClock
) -> None:
    settings.USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN = 2
    others = running(user, "read", 2)
    waiting_clock.meanwhile = [lambda: None, others.end_one]  # one ends after 2 tries

    assert read(api).status_code == 200
    assert waiting_clock.pauses == [0.01, 0.02]
    assert others.taken() == 1  # the waiting read ran and ended; the other still runs


def test_a_read_that_waited_its_time_is_answered_429_with_retry_after(
    api: APIClient, user: User, settings: Settings, waiting_clock: WaitingClock
) -> None:
    settings.USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN = 1
    settings.USAGE_IN_FLIGHT_WAIT_SECONDS = 0.5
    others = running(user, "read", 1)

    assert_rate_limited(read(api), retry_after=1)
    # 0.01 + 0.02 + 0.04 + 8 x 0.05 = 0.47 s; one more pause would pass the 0.5 s
    assert waiting_clock.pauses == [0.01, 0.02, 0.04] + [0.05] * 8
    assert others.taken() == 1  # the refused read holds no slot


def test_eight_requests_of_a_token_wait_and_one_more_is_refused_at_once(
    api: APIClient, user: User, settings: Settings, waiting_clock: WaitingClock
) -> None:
    settings.USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN = 2
    slots = running(user, "read", 2)
    counter: Any = caches["default"]
    waiting = f"{slots.key}:waiting"
    places = [  # eight requests of this token waiting, in other processes
        counter.take_slot(waiting, limit=8, lease_seconds=60) for _ in range(8)
    ]

    assert_rate_limited(read(api), retry_after=1)
    assert waiting_clock.pauses == []
    assert counter.slots_taken(waiting) == 8

    counter.give_back(waiting, places.pop())  # seven wait: this one may wait too
    waiting_clock.meanwhile = [slots.end_one]
    assert read(api).status_code == 200
    assert waiting_clock.pauses == [0.01]
    assert counter.slots_taken(waiting) == 7  # it waited no longer


@pytest.mark.django_db(transaction=True)  # a request outside a test's transaction, as served
def test_a_waiting_request_gives_its_database_connection_back(
    api: APIClient, user: User, settings: Settings, waiting_clock: WaitingClock
) -> None:
    # Waiting users must not empty a process's pool of connections (PostgreSQL), which the
    # other users' requests need.
    from django.db import connection

    settings.USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN = 1
    other = running(user, "read", 1)
    connected_while_waiting = []

    def meanwhile() -> None:
        connected_while_waiting.append(connection.connection is not None)
        other.end_one()

    waiting_clock.meanwhile = [meanwhile]

    assert read(api).status_code == 200
    assert connected_while_waiting == [False]


def test_writes_and_reads_have_bounds_of_their_own(
    api: APIClient, user: User, settings: Settings, waiting_clock: WaitingClock
) -> None:
    settings.USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN = 1
    settings.USAGE_MAX_WRITES_IN_FLIGHT_PER_TOKEN = 2
    settings.USAGE_IN_FLIGHT_WAIT_SECONDS = 0
    running(user, "read", 1)

    assert write(api).status_code == 200
    assert_rate_limited(read(api), retry_after=1)

    running(user, "write", 2)
    assert_rate_limited(write(api), retry_after=1)


def test_a_request_that_ended_in_an_error_is_no_longer_counted(
    api: APIClient, user: User, settings: Settings
) -> None:
    settings.USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN = 1
    settings.USAGE_MAX_WRITES_IN_FLIGHT_PER_TOKEN = 1
    assert read(api, "projects/no-such-project/").status_code == 404
    assert api.post(f"{API}limits/", b"{", content_type="application/json").status_code == 400

    assert read(api).status_code == 200
    counter: Any = caches["default"]
    assert counter.slots_taken(throttles.in_flight_key("read", user.pk)) == 0
    assert counter.slots_taken(throttles.in_flight_key("write", user.pk)) == 0


def test_another_users_running_requests_do_not_count(
    api: APIClient, other_user: User, settings: Settings, waiting_clock: WaitingClock
) -> None:
    settings.USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN = 1
    running(other_user, "read", 1)

    assert read(api).status_code == 200
    assert waiting_clock.pauses == []


@pytest.mark.parametrize("value", [-1, 30.5, float("nan"), "soon"])
def test_a_wait_outside_0_to_30_seconds_is_refused_at_start_up(value: object) -> None:
    with override_settings(USAGE_IN_FLIGHT_WAIT_SECONDS=value):
        errors = check_settings()

    assert [error.msg for error in errors if isinstance(error, Error)] == [
        f"USAGE_IN_FLIGHT_WAIT_SECONDS={value!r}: must be a number from 0 to 30"
    ]


def test_a_request_whose_redis_went_away_keeps_its_answer_when_its_slot_is_not_released(
    settings: Settings,
) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # a refused connection, as after a crash
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": nobody}}
    request = HttpRequest()
    request.usage_in_flight = ("in-flight:read:user1", "a-slot")  # type: ignore[attr-defined]
    answer = HttpResponse(status=503)

    assert throttles.ReleaseInFlight(lambda request: answer)(request) is answer


@pytest.mark.django_db(transaction=True)  # requests outside a test's transaction, as served
def test_a_slot_whose_process_died_frees_itself_while_its_user_keeps_asking(
    api: APIClient, user: User, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A daphne process stopped in the middle of a read never gives its slot back. A
    # dashboard that asks again every 100 ms must get in once the slot's lease is over: a
    # refused attempt must not keep a dead slot alive.
    monkeypatch.setattr(throttles, "SLOT_LEASE_SECONDS", 1)
    settings.USAGE_MAX_READS_IN_FLIGHT_PER_TOKEN = 1
    settings.USAGE_IN_FLIGHT_WAIT_SECONDS = 0
    request = Request(APIRequestFactory().get(f"{API}stats/"))
    request.user = user
    assert throttles.InFlightThrottle().allow_request(request, view=None)  # never released

    statuses = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and 200 not in statuses:
        statuses.append(read(api).status_code)
        time.sleep(0.1)

    assert statuses[0] == 429
    assert statuses[-1] == 200
