"""The seed's read API, end to end: records go in through the ingest endpoint at known times,
the views read a fake clock, and the answers are checked field by field."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from tests.conftest import Clock, client_for
from usage.models import CompletedWindow

pytestmark = [pytest.mark.django_db(transaction=True)]

API = "/app/claude-usage/"
SONNET = "claude-sonnet-4-5-20250929"
OPUS = "claude-opus-4-1-20250805"
PRO, MAX5, MAX20 = 65_459, 88_000, 220_000  # the seed's token limits per 5-hour window


def at(hour: int, minute: int = 0, second: int = 0, millisecond: int = 0) -> datetime:
    """A moment on the clock fixture's day, 2025-10-05 (UTC)."""
    return datetime(2025, 10, 5, hour, minute, second, millisecond * 1000, tzinfo=UTC)


def assistant_record(
    message_id: str,
    moment: datetime,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_creation: int = 0,
    cache_read: int = 0,
    model: str = SONNET,
    session: str = "session-1",
    cwd: str = "/home/alice/rest-api",
) -> dict[str, object]:
    """One usage line of a Claude Code transcript."""
    return {
        "type": "assistant",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "sessionId": session,
        "cwd": cwd,
        "requestId": f"req_{message_id}",
        "message": {
            "id": message_id,
            "model": model,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": cache_creation,
                "cache_read_input_tokens": cache_read,
            },
        },
    }


def sonnet_usd(
    input_tokens: int, output_tokens: int, cache_creation: int, cache_read: int
) -> float:
    """Anthropic's list prices for Sonnet 4.5, USD per million tokens: 3 / 15 / 3.75 / 0.30."""
    return (3 * input_tokens + 15 * output_tokens + 3.75 * cache_creation + 0.3 * cache_read) / 1e6


def send(api: APIClient, *records: dict[str, object]) -> None:
    response = api.post(f"{API}events/", {"records": list(records)}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == len(records), response.json()


def get(api: APIClient, path: str, **params: str | float) -> Any:
    response = api.get(f"{API}{path}", params)
    assert response.status_code == 200, response.content
    return response.json()


# --- dashboard: summary --------------------------------------------------------------------


def test_the_summary_adds_up_every_token_type_of_the_requested_hours(
    api: APIClient, clock: Clock
) -> None:
    send(
        api,
        assistant_record("recent", at(21, 30), input_tokens=1000, output_tokens=500,
                         cache_creation=2000, cache_read=30_000),
        assistant_record("two_hours_ago", at(20, 0), input_tokens=100, output_tokens=50),
        assistant_record("five_hours_ago", at(17, 0), input_tokens=7, output_tokens=3),
    )  # fmt: skip

    two_hours = get(api, "dashboard/", hours=2)["summary"]
    six_hours = get(api, "dashboard/")["summary"]

    assert two_hours["total_tokens"] == 1000 + 500 + 2000 + 30_000 + 100 + 50
    assert two_hours["input_tokens"] == 1100
    assert two_hours["output_tokens"] == 550
    assert two_hours["cache_creation_tokens"] == 2000
    assert two_hours["cache_read_tokens"] == 30_000
    assert two_hours["total_messages"] == 2
    assert two_hours["time_range_hours"] == 2
    assert two_hours["total_cost_usd"] == pytest.approx(
        sonnet_usd(1100, 550, 2000, 30_000), abs=1e-6
    )
    assert six_hours["total_messages"] == 3
    assert six_hours["time_range_hours"] == 6
    assert six_hours["total_tokens"] == two_hours["total_tokens"] + 10


# --- dashboard: burn rate ------------------------------------------------------------------


def test_the_burn_rate_is_the_last_sixty_minutes_per_minute(api: APIClient, clock: Clock) -> None:
    send(
        api,
        assistant_record("early_in_the_hour", at(21, 10), input_tokens=600, output_tokens=1200,
                         cache_creation=6000),
        assistant_record("just_now", at(21, 59, 30), input_tokens=300, output_tokens=900,
                         cache_read=12_000),
        assistant_record("before_the_hour", at(20, 30), input_tokens=50_000, output_tokens=50_000),
    )  # fmt: skip

    burn = get(api, "dashboard/")["burn_rate"]

    assert burn["tokens_per_minute"] == (600 + 1200 + 300 + 900) / 60
    assert burn["all_tokens_per_minute"] == (3000 + 6000 + 12_000) / 60
    assert burn["cost_per_minute_usd"] == pytest.approx(
        round(sonnet_usd(900, 2100, 6000, 12_000) / 60, 6), abs=1e-9
    )


def test_with_nothing_in_the_last_hour_the_burn_rate_is_zero(api: APIClient, clock: Clock) -> None:
    send(api, assistant_record("old", at(19, 0), input_tokens=10, output_tokens=10))

    burn = get(api, "dashboard/")["burn_rate"]

    assert burn == {"tokens_per_minute": 0, "cost_per_minute_usd": 0, "all_tokens_per_minute": 0}


# --- dashboard: model distribution ---------------------------------------------------------


def test_the_model_distribution_shares_the_tokens_and_leaves_out_synthetic_records(
    api: APIClient, clock: Clock
) -> None:
    send(
        api,
        assistant_record("s1", at(21, 0), input_tokens=3000, output_tokens=3000),
        assistant_record("s2", at(21, 5), input_tokens=1000, output_tokens=0),
        assistant_record("o1", at(21, 10), input_tokens=2000, output_tokens=1000, model=OPUS),
        assistant_record("synthetic", at(21, 15), model="<synthetic>"),
    )

    dashboard = get(api, "dashboard/")
    shares = dashboard["model_distribution"]

    assert [share["model"] for share in shares] == [SONNET, OPUS]  # largest first
    sonnet, opus = shares
    assert (sonnet["tokens"], sonnet["messages"], sonnet["percentage"]) == (7000, 2, 70.0)
    assert (opus["tokens"], opus["messages"], opus["percentage"]) == (3000, 1, 30.0)
    assert opus["cost_usd"] == pytest.approx((15 * 2000 + 75 * 1000) / 1e6, abs=1e-6)
    assert dashboard["summary"]["total_messages"] == 4  # the synthetic record still counts


def test_percentages_are_rounded_to_one_decimal(api: APIClient, clock: Clock) -> None:
    send(
        api,
        assistant_record("a", at(21, 0), input_tokens=1),
        assistant_record("b", at(21, 0), input_tokens=2, model=OPUS),
    )

    shares = get(api, "dashboard/")["model_distribution"]

    assert [share["percentage"] for share in shares] == [66.7, 33.3]


# --- dashboard: rate limit -----------------------------------------------------------------


def test_the_window_starts_at_the_first_message_floored_to_the_hour(
    api: APIClient, clock: Clock
) -> None:
    send(
        api,
        assistant_record("first", at(18, 26, 39, 936), input_tokens=100, output_tokens=200,
                         cache_read=5000),
        assistant_record("later", at(21, 0), input_tokens=10, output_tokens=20, cache_creation=7),
    )  # fmt: skip

    rate_limit = get(api, "dashboard/")["rate_limit"]

    assert rate_limit["is_within_active_window"] is True
    assert rate_limit["current_window_start"] == "2025-10-05T18:00:00+00:00"
    assert rate_limit["next_reset_at"] == "2025-10-05T23:00:00+00:00"
    assert rate_limit["time_until_reset_seconds"] == 3600
    assert rate_limit["time_until_reset_human"] == "1h 0m"
    assert rate_limit["current_window_tokens"] == 100 + 200 + 5000 + 10 + 20 + 7
    assert rate_limit["limit_tokens_used"] == 330  # the plan limit counts input + output


def test_window_align_exact_starts_the_window_at_the_first_message(
    api: APIClient, clock: Clock
) -> None:
    clock.now = at(19, 20)
    send(api, assistant_record("first", at(18, 26, 39, 936), input_tokens=5, output_tokens=5))

    rate_limit = get(api, "dashboard/", window_align="exact")["rate_limit"]

    assert rate_limit["current_window_start"] == "2025-10-05T18:26:39.936000+00:00"
    assert rate_limit["next_reset_at"] == "2025-10-05T23:26:39.936000+00:00"
    assert rate_limit["time_until_reset_seconds"] == 4 * 3600 + 6 * 60 + 39
    assert rate_limit["time_until_reset_human"] == "4h 6m"


def test_a_gap_of_more_than_five_hours_opens_a_new_window(api: APIClient, clock: Clock) -> None:
    clock.now = at(23, 30)
    send(
        api,
        assistant_record("old_window", at(17, 40), input_tokens=1000),
        assistant_record("new_window", at(22, 50), input_tokens=1),
    )

    rate_limit = get(api, "dashboard/")["rate_limit"]

    assert rate_limit["current_window_start"] == "2025-10-05T22:00:00+00:00"
    assert rate_limit["current_window_tokens"] == 1


@pytest.mark.parametrize(
    ("align", "earlier_window", "start"),
    [
        # the previous window (10:00:10-15:00:10) still holds 15:00:05; 15:00:40 opens one
        ("exact", [at(10, 0, 10), at(15, 0, 5)], "2025-10-05T15:00:40+00:00"),
        # a message at exactly the previous window's end (15:00) belongs to that window
        ("hour", [at(10, 20), at(15, 0)], "2025-10-05T15:00:00+00:00"),
    ],
)
def test_a_window_does_not_count_an_earlier_windows_message_in_its_first_minute(
    api: APIClient, clock: Clock, align: str, earlier_window: list[datetime], start: str
) -> None:
    clock.now = at(15, 45)
    earlier = [
        assistant_record(f"earlier_{i}", moment, input_tokens=1000, output_tokens=100)
        for i, moment in enumerate(earlier_window)
    ]
    send(api, *earlier, assistant_record("current", at(15, 0, 40), input_tokens=7, cache_read=3))

    rate_limit = get(api, "dashboard/", window_align=align)["rate_limit"]

    assert rate_limit["current_window_start"] == start
    assert rate_limit["current_window_tokens"] == 10
    assert rate_limit["limit_tokens_used"] == 7


def test_without_an_active_window_nothing_is_metered(api: APIClient, clock: Clock) -> None:
    send(api, assistant_record("long_ago", at(16, 30), input_tokens=10))
    clock.now = at(21, 31)  # the window 16:00-21:00 has ended

    rate_limit = get(api, "dashboard/")["rate_limit"]

    assert rate_limit["is_within_active_window"] is False
    assert rate_limit["current_window_tokens"] == 0
    assert rate_limit["current_window_start"] is None
    assert rate_limit["next_reset_at"] is None
    assert rate_limit["time_until_reset_seconds"] == 0
    assert rate_limit["predictions"]["tokens_will_run_out"] is False


@pytest.mark.parametrize(
    ("query", "plan", "limit"),
    [
        ({}, "pro", PRO),  # the default plan
        ({"plan": "pro"}, "pro", PRO),
        ({"plan": "max5"}, "max5", MAX5),
        ({"plan": "max20"}, "max20", MAX20),
        ({"plan": "max20", "token_limit": 1000}, "max20", 1000),
        ({"token_limit": 40_000}, "pro", 40_000),
    ],
)
def test_the_token_limit_follows_the_plan_unless_overridden(
    api: APIClient, clock: Clock, query: dict[str, str | int], plan: str, limit: int
) -> None:
    send(api, assistant_record("m", at(21, 30), input_tokens=300, output_tokens=200))

    rate_limit = get(api, "dashboard/", **query)["rate_limit"]

    assert rate_limit["plan"] == plan
    assert rate_limit["token_limit"] == limit
    assert rate_limit["limit_tokens_used"] == 500
    assert rate_limit["used_percentage"] == round(100 * 500 / limit, 1)


def test_a_burn_rate_that_hits_the_limit_before_the_reset_predicts_running_out(
    api: APIClient, clock: Clock
) -> None:
    # Window 21:00-02:00; 30,000 input + output tokens in the last hour: 500 per minute;
    # the remaining 35,459 of the pro limit last 70.9 minutes, long before the reset.
    send(api, assistant_record("busy", at(21, 30), input_tokens=10_000, output_tokens=20_000))

    rate_limit = get(api, "dashboard/", plan="pro")["rate_limit"]

    predictions = rate_limit["predictions"]
    assert rate_limit["used_percentage"] == round(100 * 30_000 / PRO, 1)
    assert predictions["tokens_will_run_out"] is True
    assert predictions["estimated_time_to_limit"] == "1h 10m"
    limit_at = datetime.fromisoformat(predictions["estimated_limit_at"])
    assert limit_at == at(22, 0) + timedelta(minutes=(PRO - 30_000) / 500)


def test_a_slow_burn_rate_does_not_reach_the_limit(api: APIClient, clock: Clock) -> None:
    send(api, assistant_record("calm", at(21, 30), input_tokens=100, output_tokens=100))

    predictions = get(api, "dashboard/", plan="max20")["rate_limit"]["predictions"]

    assert predictions == {
        "tokens_will_run_out": False,
        "estimated_time_to_limit": "Not reaching limit",
        "estimated_limit_at": None,
    }


def test_usage_over_the_limit_reports_the_limit_reached(api: APIClient, clock: Clock) -> None:
    send(api, assistant_record("heavy", at(21, 30), input_tokens=1500, output_tokens=500))

    rate_limit = get(api, "dashboard/", token_limit=1000)["rate_limit"]

    assert rate_limit["used_percentage"] == 200.0
    assert rate_limit["predictions"]["tokens_will_run_out"] is True
    assert rate_limit["predictions"]["estimated_time_to_limit"] == "Limit reached"


def test_the_custom_plan_uses_the_90th_percentile_of_completed_windows(
    api: APIClient, clock: Clock, user: User
) -> None:
    send(api, assistant_record("m", at(21, 30), input_tokens=10, output_tokens=10))
    for day in range(1, 11):  # ten earlier windows of 1,000 ... 10,000 tokens
        completed_window(user, clock.now - timedelta(days=day), input_output_tokens=1000 * day)
    completed_window(user, clock.now - timedelta(days=31), input_output_tokens=10**9)  # too old
    completed_window(user, clock.now - timedelta(days=2), input_output_tokens=10**9, align="exact")

    rate_limit = get(api, "dashboard/", plan="custom")["rate_limit"]
    overridden = get(api, "dashboard/", plan="custom", token_limit=123)["rate_limit"]

    assert rate_limit["plan"] == "custom"
    assert rate_limit["token_limit"] == 9000  # nearest rank: the 9th of 10
    assert overridden["token_limit"] == 123


def test_the_custom_plan_without_history_assumes_the_smallest_plan(
    api: APIClient, clock: Clock
) -> None:
    rate_limit = get(api, "dashboard/", plan="custom")["rate_limit"]

    assert rate_limit["token_limit"] == PRO


def completed_window(
    user: User, start: datetime, *, input_output_tokens: int, align: str = "hour"
) -> None:
    CompletedWindow.objects.create(
        user=user,
        align=align,
        start=start,
        end=start + timedelta(hours=5),
        input_output_tokens=input_output_tokens,
        total_tokens=input_output_tokens,
        cost_nanos=0,
        messages=1,
    )


def test_the_dashboard_has_every_field_of_the_seed(api: APIClient, clock: Clock) -> None:
    send(api, assistant_record("m", at(21, 30), input_tokens=10, output_tokens=10))

    dashboard = get(api, "dashboard/")

    assert set(dashboard) == {"summary", "burn_rate", "model_distribution", "rate_limit"}
    assert {"total_tokens", "total_cost_usd", "total_messages", "time_range_hours"} <= set(
        dashboard["summary"]
    )
    assert {"tokens_per_minute", "cost_per_minute_usd"} <= set(dashboard["burn_rate"])
    assert {"model", "tokens", "messages", "cost_usd", "percentage"} <= set(
        dashboard["model_distribution"][0]
    )
    assert {
        "current_window_tokens",
        "current_window_start",
        "next_reset_at",
        "time_until_reset_seconds",
        "time_until_reset_human",
        "is_within_active_window",
        "predictions",
    } <= set(dashboard["rate_limit"])
    assert {"tokens_will_run_out", "estimated_time_to_limit"} <= set(
        dashboard["rate_limit"]["predictions"]
    )


# --- timeseries ----------------------------------------------------------------------------

TIMESERIES_CASES = [
    # (interval, seconds, hours)
    ("1min", 60, 1),
    ("5min", 300, 1),
    ("15min", 900, 3),
    ("1hour", 3600, 6),
]
POINT_FIELDS = [
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "message_count",
]


@pytest.mark.parametrize(("interval", "step", "hours"), TIMESERIES_CASES)
def test_every_bucket_is_present_aligned_and_zero_filled_oldest_first(
    api: APIClient, clock: Clock, interval: str, step: int, hours: int
) -> None:
    clock.now = at(22, 7, 30)
    send(
        api,
        assistant_record("a", at(21, 31, 59), input_tokens=10, output_tokens=1, cache_read=100),
        assistant_record("b", at(21, 32), input_tokens=20, output_tokens=2, cache_creation=200),
        assistant_record("c", at(22, 7, 29), input_tokens=40, output_tokens=4),
    )

    series = get(api, "timeseries/", hours=hours, interval=interval)

    start = datetime.fromisoformat(series["start_time"])
    end = datetime.fromisoformat(series["end_time"])
    stamps = [datetime.fromisoformat(point["timestamp"]) for point in series["data_points"]]
    assert series["interval"] == interval
    assert start.timestamp() % step == 0
    assert start <= clock.now - timedelta(hours=hours) < start + timedelta(seconds=step)
    assert end - timedelta(seconds=step) <= clock.now < end
    assert stamps == [start + timedelta(seconds=step * i) for i in range(len(stamps))]
    assert stamps[-1] + timedelta(seconds=step) == end
    totals = {field: sum(p[field] for p in series["data_points"]) for field in POINT_FIELDS}
    assert totals == {
        "total_tokens": 111 + 222 + 44,
        "input_tokens": 70,
        "output_tokens": 7,
        "cache_creation_tokens": 200,
        "cache_read_tokens": 100,
        "message_count": 3,
    }
    busy = {at(21, 31, 59), at(21, 32), at(22, 7, 29)}
    for stamp, point in zip(stamps, series["data_points"], strict=True):
        inside = any(stamp <= moment < stamp + timedelta(seconds=step) for moment in busy)
        assert (point["message_count"] > 0) == inside
        if not inside:
            assert all(point[field] == 0 for field in POINT_FIELDS)
            assert point["cost_usd"] == 0


def test_a_five_minute_series_puts_each_record_in_its_own_bucket(
    api: APIClient, clock: Clock
) -> None:
    clock.now = at(22, 7, 30)
    send(
        api,
        assistant_record("a", at(21, 34, 59, 999), input_tokens=1),
        assistant_record("b", at(21, 35), input_tokens=2),
    )

    points = get(api, "timeseries/", hours=1)["data_points"]

    by_time = {point["timestamp"]: point["input_tokens"] for point in points}
    assert by_time["2025-10-05T21:30:00+00:00"] == 1
    assert by_time["2025-10-05T21:35:00+00:00"] == 2
    assert len(points) == 13  # 21:05 ... 22:05, the default interval is 5min


# --- stats ---------------------------------------------------------------------------------

SEED_STATS_FIELDS = {
    "total_tokens",
    "total_input_tokens",
    "total_output_tokens",
    "total_cache_creation_tokens",
    "total_cache_read_tokens",
    "total_sessions",
    "total_messages",
    "projects",
    "current_window_tokens",
    "next_reset_at",
    "time_until_reset_seconds",
    "time_until_reset_human",
    "is_within_active_window",
}
STATS_EXTRAS = {
    "total_cost_usd",
    "unpriced_models",
    "hosts",
    "rate_limit",
    "total_web_search_requests",
    "total_web_search_cost_usd",
}


def test_stats_has_the_seeds_fields_over_everything_retained(api: APIClient, clock: Clock) -> None:
    clock.now = at(19, 20)
    send(
        api,
        assistant_record("a", at(18, 26, 39, 936), input_tokens=1, output_tokens=2,
                         cache_creation=3, cache_read=4, session="s1", cwd="/w/api"),
        assistant_record("b", at(15, 0), input_tokens=10, output_tokens=20, session="s2",
                         cwd="/w/api"),
        assistant_record("c", at(19, 0), input_tokens=100, session="s3", cwd="/w/web"),
    )  # fmt: skip

    stats = get(api, "stats/", window_align="exact")

    assert set(stats) == SEED_STATS_FIELDS | STATS_EXTRAS
    assert stats["total_tokens"] == 1 + 2 + 3 + 4 + 10 + 20 + 100
    assert stats["total_input_tokens"] == 111
    assert stats["total_output_tokens"] == 22
    assert stats["total_cache_creation_tokens"] == 3
    assert stats["total_cache_read_tokens"] == 4
    assert stats["total_sessions"] == 3
    assert stats["total_messages"] == 3
    assert stats["projects"] == 2
    assert stats["current_window_tokens"] == 140  # one window, opened at 15:00
    assert stats["next_reset_at"] == "2025-10-05T20:00:00+00:00"
    assert stats["is_within_active_window"] is True


def test_stats_says_how_long_until_the_reset_in_words(api: APIClient, clock: Clock) -> None:
    clock.now = at(19, 20)
    send(api, assistant_record("first", at(18, 26, 39, 936), input_tokens=5))

    exact = get(api, "stats/", window_align="exact")
    hourly = get(api, "stats/")

    assert exact["next_reset_at"] == "2025-10-05T23:26:39.936000+00:00"
    assert exact["time_until_reset_seconds"] == 14_799
    assert exact["time_until_reset_human"] == "4h 6m remaining"
    assert hourly["time_until_reset_human"] == "3h 40m remaining"
    assert hourly["current_window_tokens"] == 5


def test_stats_without_an_active_window(api: APIClient, clock: Clock) -> None:
    send(api, assistant_record("m", at(16, 30), input_tokens=5))
    clock.now = at(21, 31)

    stats = get(api, "stats/")

    assert stats["is_within_active_window"] is False
    assert stats["current_window_tokens"] == 0
    assert stats["next_reset_at"] is None
    assert stats["time_until_reset_seconds"] == 0
    assert stats["time_until_reset_human"] == "No active window"
    assert stats["total_tokens"] == 5  # the totals still count every retained record


def test_one_users_records_never_appear_in_another_users_results(
    api: APIClient, clock: Clock, other_user: User
) -> None:
    send(client_for(other_user), assistant_record("theirs", at(21, 0), input_tokens=99,
                                                  cwd="/home/bob/secret"))  # fmt: skip

    stats = get(api, "stats/")
    listed = get(api, "projects/")

    assert stats["total_tokens"] == 0
    assert listed == {"projects": [], "count": 0}
    assert api.get(f"{API}projects/secret/").status_code == 404


# --- projects ------------------------------------------------------------------------------


@pytest.fixture
def two_projects(api: APIClient, clock: Clock) -> None:
    send(
        api,
        assistant_record("a1", at(18, 0), input_tokens=100, output_tokens=10, session="s1",
                         cwd="/home/alice/rest-api"),
        assistant_record("a2", at(19, 30), input_tokens=200, output_tokens=20, session="s1",
                         cwd="/home/alice/rest-api"),
        assistant_record("a3", at(21, 0), input_tokens=300, output_tokens=30, session="s2",
                         cwd="/home/alice/rest-api"),
        assistant_record("b1", at(20, 0), input_tokens=5, session="s3", cwd="/home/alice/web"),
    )  # fmt: skip


@pytest.mark.usefixtures("two_projects")
def test_the_project_list_has_the_seeds_fields(api: APIClient) -> None:
    listed = get(api, "projects/")

    assert listed["count"] == 2
    by_name = {project["name"]: project for project in listed["projects"]}
    rest = by_name["rest-api"]
    assert {
        "id",
        "name",
        "path",
        "total_tokens",
        "total_sessions",
        "total_cost",
        "created_at",
        "updated_at",
    } <= set(rest)
    assert isinstance(rest["id"], int)
    assert rest["path"] == "/home/alice/rest-api"
    assert rest["total_tokens"] == 660
    assert rest["total_sessions"] == 2
    assert rest["total_cost"] == pytest.approx(sonnet_usd(600, 60, 0, 0), abs=1e-6)
    assert rest["created_at"] == "2025-10-05T18:00:00+00:00"
    assert rest["updated_at"] == "2025-10-05T21:00:00+00:00"
    assert by_name["web"]["total_sessions"] == 1


@pytest.mark.usefixtures("two_projects")
def test_a_project_detail_has_the_project_and_its_sessions(api: APIClient) -> None:
    detail = get(api, "projects/rest-api/")

    assert detail["name"] == "rest-api"
    assert detail["total_tokens"] == 660
    sessions = {session["session_id"]: session for session in detail["sessions"]}
    assert set(sessions) == {"s1", "s2"}
    assert sessions["s1"]["total_tokens"] == 330
    assert sessions["s1"]["total_messages"] == 2
    assert sessions["s1"]["first_activity"] == "2025-10-05T18:00:00+00:00"
    assert sessions["s1"]["last_activity"] == "2025-10-05T19:30:00+00:00"
    assert [s["session_id"] for s in detail["sessions"]] == ["s2", "s1"]  # latest first
    assert get(api, f"projects/{detail['id']}/")["name"] == "rest-api"  # by id as well


@pytest.mark.usefixtures("two_projects")
def test_the_sessions_endpoint_lists_the_projects_sessions(api: APIClient) -> None:
    sessions = get(api, "projects/web/sessions/")

    assert sessions["project"] == "web"
    assert sessions["count"] == 1
    assert sessions["sessions"][0]["session_id"] == "s3"
    assert sessions["sessions"][0]["total_tokens"] == 5


def test_projects_whose_paths_share_a_last_component_get_unique_names(
    api: APIClient, clock: Clock
) -> None:
    send(
        api,
        assistant_record("a", at(18, 0), input_tokens=1, cwd="/home/alice/api"),
        assistant_record("b", at(19, 0), input_tokens=2, cwd="/srv/api"),
        assistant_record("c", at(20, 0), input_tokens=3, cwd="/home/alice/api-2"),
        assistant_record("d", at(21, 0), input_tokens=4, cwd="/tmp/api/"),
    )

    listed = get(api, "projects/")["projects"]

    names = [project["name"] for project in listed]
    assert len(set(names)) == len(names) == 4, names
    by_path = {project["path"]: project["name"] for project in listed}
    assert by_path["/home/alice/api"] == "api"  # the first seen keeps the plain name
    assert by_path["/home/alice/api-2"] == "api-2"  # a real name is never taken by a suffix
    for project in listed:  # and every name leads to its own project
        assert get(api, f"projects/{project['name']}/")["path"] == project["path"]


@pytest.mark.parametrize("path", ["projects/nope/", "projects/nope/sessions/"])
@pytest.mark.usefixtures("two_projects")
def test_an_unknown_project_is_a_not_found_envelope(api: APIClient, path: str) -> None:
    response = api.get(f"{API}{path}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
    assert set(response.json()) == {"error"}
    assert set(response.json()["error"]) == {"code", "message"}


# --- errors --------------------------------------------------------------------------------

BAD_PARAMETERS = [
    ("dashboard/", "hours=abc"),
    ("dashboard/", "hours=-1"),
    ("dashboard/", "hours=0"),
    ("dashboard/", "hours=nan"),
    ("dashboard/", "hours=inf"),
    ("dashboard/", "hours=-inf"),
    ("dashboard/", "hours=1e309"),
    ("dashboard/", "hours=100000"),
    ("dashboard/", "token_limit=x"),
    ("dashboard/", "token_limit=0"),
    ("dashboard/", "token_limit=1.5"),
    ("dashboard/", "plan=gold"),
    ("dashboard/", "window_align=sideways"),
    ("timeseries/", "interval=7min"),
    ("timeseries/", "hours=abc"),
    ("timeseries/", "hours=nan"),
    ("timeseries/", "hours=inf"),
    ("stats/", "plan=gold"),
    ("stats/", "token_limit=x"),
]


@pytest.mark.parametrize(("path", "query"), BAD_PARAMETERS)
def test_a_bad_parameter_is_a_validation_error_envelope(
    api: APIClient, clock: Clock, path: str, query: str
) -> None:
    response = api.get(f"{API}{path}?{query}")

    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


READ_PATHS = [
    "dashboard/",
    "timeseries/",
    "stats/",
    "projects/",
    "projects/rest-api/",
    "projects/rest-api/sessions/",
]


@pytest.mark.parametrize("path", READ_PATHS)
@pytest.mark.parametrize("authorization", [None, "Token not-a-real-token", "Bearer abc"])
def test_a_request_without_a_valid_token_is_an_authentication_envelope(
    path: str, authorization: str | None, clock: Clock
) -> None:
    client = APIClient()
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)

    response = client.get(f"{API}{path}")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
    assert set(response.json()["error"]) == {"code", "message"}
    assert response["WWW-Authenticate"] == "Token"


def test_an_unknown_endpoint_is_a_not_found_envelope(api: APIClient) -> None:
    response = api.get(f"{API}no-such-thing/")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


# --- CORS ----------------------------------------------------------------------------------

DASHBOARD_ORIGIN = "http://localhost:3000"


@pytest.fixture
def cors(settings: Settings) -> None:
    settings.CORS_ALLOWED_ORIGINS = [DASHBOARD_ORIGIN]


def preflight(origin: str) -> Any:
    return APIClient().options(
        f"{API}dashboard/",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )


@pytest.mark.usefixtures("cors")
def test_a_preflight_from_an_allowed_origin_may_send_the_authorization_header() -> None:
    response = preflight(DASHBOARD_ORIGIN)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == DASHBOARD_ORIGIN
    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert "authorization" in allowed
    assert "GET" in response["Access-Control-Allow-Methods"]


@pytest.mark.usefixtures("cors")
def test_a_preflight_from_another_origin_is_not_allowed() -> None:
    response = preflight("http://evil.example")

    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.usefixtures("cors")
def test_answers_and_errors_to_an_allowed_origin_carry_the_cors_header(
    api: APIClient, clock: Clock
) -> None:
    answer = api.get(f"{API}stats/", HTTP_ORIGIN=DASHBOARD_ORIGIN)
    refused = APIClient().get(f"{API}stats/", HTTP_ORIGIN=DASHBOARD_ORIGIN)

    assert answer.status_code == 200
    assert answer["Access-Control-Allow-Origin"] == DASHBOARD_ORIGIN
    assert refused.status_code == 401
    assert refused["Access-Control-Allow-Origin"] == DASHBOARD_ORIGIN  # the app can read why


# --- OpenAPI -------------------------------------------------------------------------------


def openapi() -> Any:
    response = APIClient().get(f"{API}schema/?format=json")
    assert response.status_code == 200, response.content
    return response.json()


def test_the_schema_is_an_openapi_3_document_describing_every_endpoint() -> None:
    schema = openapi()

    assert schema["openapi"].startswith("3.")
    assert {
        f"{API}events/",
        f"{API}dashboard/",
        f"{API}timeseries/",
        f"{API}stats/",
        f"{API}projects/",
        f"{API}projects/{{project_name}}/",
        f"{API}projects/{{project_name}}/sessions/",
        f"{API}pricing/",
    } <= set(schema["paths"])
    assert "post" in schema["paths"][f"{API}events/"]
    dashboard_parameters = {
        p["name"] for p in schema["paths"][f"{API}dashboard/"]["get"]["parameters"]
    }
    assert {"hours", "plan", "token_limit", "window_align"} <= dashboard_parameters
    timeseries_parameters = {
        p["name"] for p in schema["paths"][f"{API}timeseries/"]["get"]["parameters"]
    }
    assert {"hours", "interval"} <= timeseries_parameters


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref`` (and drf-spectacular's single-element ``allOf``) to the real schema."""
    while True:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            node = schema["components"]["schemas"][name]
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = node["allOf"][0]
        else:
            return node


def undocumented(
    schema: dict[str, Any], node: dict[str, Any], value: Any, where: str
) -> Iterator[str]:
    """Every place where ``value`` (a real answer) and ``node`` (its schema) disagree on keys."""
    node = resolve(schema, node)
    if isinstance(value, dict):
        properties = node.get("properties", {})
        for key in set(value) - set(properties):
            yield f"{where}.{key} is returned but not described"
        for key in set(properties) - set(value):
            yield f"{where}.{key} is described but never returned"
        for key in set(value) & set(properties):
            yield from undocumented(schema, properties[key], value[key], f"{where}.{key}")
    elif isinstance(value, list):
        assert node.get("type") == "array", f"{where} is a list but described as {node}"
        for item in value:
            yield from undocumented(schema, node["items"], item, f"{where}[]")


def response_schema(schema: dict[str, Any], path: str) -> dict[str, Any]:
    operation = schema["paths"][f"{API}{path}"]["get"]
    return operation["responses"]["200"]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


@pytest.mark.usefixtures("two_projects")
def test_every_field_the_read_endpoints_return_is_described_in_the_schema(
    api: APIClient, clock: Clock
) -> None:
    send(api, assistant_record("unpriced", at(21, 40), input_tokens=1, model="claude-x-unknown"))
    schema = openapi()
    answers = {
        "dashboard/": get(api, "dashboard/"),
        "timeseries/": get(api, "timeseries/"),
        "stats/": get(api, "stats/"),
        "projects/": get(api, "projects/"),
        "projects/{project_name}/": get(api, "projects/rest-api/"),
        "projects/{project_name}/sessions/": get(api, "projects/rest-api/sessions/"),
        "pricing/": get(api, "pricing/"),
    }

    problems = [
        problem
        for path, answer in answers.items()
        for problem in undocumented(schema, response_schema(schema, path), answer, path)
    ]

    assert problems == []
    assert answers["dashboard/"]["model_distribution"]  # the lists were not empty
    assert answers["stats/"]["hosts"]
    assert answers["stats/"]["unpriced_models"] == ["claude-x-unknown"]


def test_hours_may_be_a_fraction(api: APIClient, clock: Clock) -> None:
    send(api, assistant_record("m", at(21, 45), input_tokens=8))

    summary = get(api, "dashboard/", hours=0.5)["summary"]

    assert summary["time_range_hours"] == 0.5
    assert summary["total_tokens"] == 8
