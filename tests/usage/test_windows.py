"""Tests for the five-hour window rules in usage.windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usage.windows import (
    PLAN_LIMITS,
    WINDOW_LENGTH,
    BurnRate,
    Prediction,
    Window,
    WindowAlign,
    burn_rate,
    format_duration,
    percentile_90,
    predict,
    rate_limit_state,
    resolve_token_limit,
    split_into_windows,
    window_start_for,
)

HOUR = WindowAlign.HOUR
EXACT = WindowAlign.EXACT


def utc(text: str) -> datetime:
    """Parse an ISO-8601 timestamp written in UTC, e.g. '2025-10-05T16:12:00Z'."""
    return datetime.fromisoformat(text).astimezone(UTC)


def starts_and_ends(windows: list[Window]) -> list[tuple[datetime, datetime]]:
    return [(window.start, window.end) for window in windows]


def window_at(start: str, last_message: str | None = None) -> Window:
    """A HOUR-aligned window starting at ``start`` whose last message is ``last_message``."""
    window_start = utc(start)
    last_message_at = utc(last_message) if last_message else window_start
    return Window(
        start=window_start,
        end=window_start + WINDOW_LENGTH,
        first_message_at=window_start,
        last_message_at=last_message_at,
    )


# --- window_start_for ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_message_at", "align", "expected_start"),
    [
        ("2025-10-05T18:26:39.936Z", HOUR, "2025-10-05T18:00:00Z"),
        ("2025-10-05T18:26:39.936Z", EXACT, "2025-10-05T18:26:39.936Z"),
        ("2025-10-05T18:00:00Z", HOUR, "2025-10-05T18:00:00Z"),
        ("2025-10-05T23:59:59.999999Z", HOUR, "2025-10-05T23:00:00Z"),
        # a non-UTC offset is floored to the *UTC* hour, not the local one
        ("2025-10-05T20:26:39+05:30", HOUR, "2025-10-05T14:00:00Z"),
    ],
)
def test_the_window_start_is_the_first_message_floored_to_the_utc_hour_or_taken_exactly(
    first_message_at: str, align: WindowAlign, expected_start: str
) -> None:
    start = window_start_for(datetime.fromisoformat(first_message_at), align)

    assert start == utc(expected_start)
    assert start.tzinfo is UTC


def test_a_naive_timestamp_is_rejected_rather_than_guessed() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window_start_for(datetime(2025, 10, 5, 18, 26), HOUR)  # noqa: DTZ001


def test_exact_alignment_resets_exactly_five_hours_after_the_first_message() -> None:
    [window] = split_into_windows([utc("2025-10-05T18:26:39.936Z")], EXACT)

    assert window.start == utc("2025-10-05T18:26:39.936Z")
    assert window.end == utc("2025-10-05T23:26:39.936Z")


# --- split_into_windows: boundaries -------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "timestamps", "align", "expected"),
    [
        (
            "a message exactly five hours after the start joins the window",
            ["2025-10-05T16:00:00Z", "2025-10-05T21:00:00Z"],
            HOUR,
            [("2025-10-05T16:00:00Z", "2025-10-05T21:00:00Z")],
        ),
        (
            "a message exactly at the window end joins the window (hour-floored start)",
            ["2025-10-05T16:45:00Z", "2025-10-05T21:00:00Z"],
            HOUR,
            [("2025-10-05T16:00:00Z", "2025-10-05T21:00:00Z")],
        ),
        (
            "a message five hours and one millisecond after the start opens a new window",
            ["2025-10-05T16:00:00Z", "2025-10-05T21:00:00.001Z"],
            HOUR,
            [
                ("2025-10-05T16:00:00Z", "2025-10-05T21:00:00Z"),
                ("2025-10-05T21:00:00Z", "2025-10-06T02:00:00Z"),
            ],
        ),
        (
            "with exact alignment, exactly five hours after the first message still joins",
            ["2025-10-05T18:26:39.936Z", "2025-10-05T23:26:39.936Z"],
            EXACT,
            [("2025-10-05T18:26:39.936Z", "2025-10-05T23:26:39.936Z")],
        ),
        (
            "with exact alignment, one millisecond later opens a new window at that message",
            ["2025-10-05T18:26:39.936Z", "2025-10-05T23:26:39.937Z"],
            EXACT,
            [
                ("2025-10-05T18:26:39.936Z", "2025-10-05T23:26:39.936Z"),
                ("2025-10-05T23:26:39.937Z", "2025-10-06T04:26:39.937Z"),
            ],
        ),
        (
            "a gap of more than five hours opens a window floored to the later message's hour",
            ["2025-10-05T16:10:00Z", "2025-10-05T21:10:00.001Z"],
            HOUR,
            [
                ("2025-10-05T16:00:00Z", "2025-10-05T21:00:00Z"),
                ("2025-10-05T21:00:00Z", "2025-10-06T02:00:00Z"),
            ],
        ),
        (
            "a gap of more than five hours after a quiet day opens a window at the new hour",
            ["2025-10-05T09:59:00Z", "2025-10-05T17:42:13Z", "2025-10-05T18:05:00Z"],
            HOUR,
            [
                ("2025-10-05T09:00:00Z", "2025-10-05T14:00:00Z"),
                ("2025-10-05T17:00:00Z", "2025-10-05T22:00:00Z"),
            ],
        ),
        (
            "messages one minute apart for six hours roll into a second window",
            [
                "2025-10-05T16:30:00Z",
                "2025-10-05T20:59:00Z",
                "2025-10-05T21:00:00Z",
                "2025-10-05T21:01:00Z",
                "2025-10-05T22:30:00Z",
            ],
            HOUR,
            [
                ("2025-10-05T16:00:00Z", "2025-10-05T21:00:00Z"),
                ("2025-10-05T21:00:00Z", "2025-10-06T02:00:00Z"),
            ],
        ),
        (
            "a single message makes a single window",
            ["2025-10-05T16:30:00Z"],
            HOUR,
            [("2025-10-05T16:00:00Z", "2025-10-05T21:00:00Z")],
        ),
    ],
)
def test_messages_are_split_into_five_hour_windows(
    case: str, timestamps: list[str], align: WindowAlign, expected: list[tuple[str, str]]
) -> None:
    windows = split_into_windows([utc(text) for text in timestamps], align)

    assert starts_and_ends(windows) == [(utc(start), utc(end)) for start, end in expected], case


def test_a_gap_of_more_than_five_hours_between_messages_opens_a_new_window() -> None:
    # Kept explicit although implied by the start rule: the previous message is never before
    # the window start, so a >5 h gap from it is always >5 h from the start too.
    first, second = utc("2025-10-05T10:00:00Z"), utc("2025-10-05T15:00:00.001Z")

    windows = split_into_windows([first, second], EXACT)

    assert [window.first_message_at for window in windows] == [first, second]
    assert windows[1].start == second


def test_no_messages_give_no_windows() -> None:
    assert split_into_windows([], HOUR) == []
    assert split_into_windows(iter(()), EXACT) == []


def test_each_window_remembers_its_first_and_last_message() -> None:
    timestamps = [
        utc("2025-10-05T16:12:00Z"),
        utc("2025-10-05T17:00:00Z"),
        utc("2025-10-05T20:59:58.258Z"),
    ]

    [window] = split_into_windows(timestamps, HOUR)

    assert window.first_message_at == utc("2025-10-05T16:12:00Z")
    assert window.last_message_at == utc("2025-10-05T20:59:58.258Z")


def test_unsorted_messages_give_the_same_windows_as_sorted_ones() -> None:
    timestamps = [
        utc("2025-10-05T21:30:00Z"),
        utc("2025-10-05T16:12:00Z"),
        utc("2025-10-06T09:00:00Z"),
        utc("2025-10-05T20:59:58.258Z"),
    ]

    assert split_into_windows(timestamps, HOUR) == split_into_windows(sorted(timestamps), HOUR)


def test_ccusage_reference_sample_gives_two_hour_aligned_windows() -> None:
    # ccusage on a real sample tree: activity from 16:xx to 20:59:58.258Z, then 21:00:xx to
    # 21:58:24.560Z, reported as blocks 16:00-21:00 and 21:00-02:00 (UTC).
    timestamps = [
        "2025-10-05T16:07:11.402Z",
        "2025-10-05T17:45:03.118Z",
        "2025-10-05T19:30:27.004Z",
        "2025-10-05T20:59:58.258Z",
        "2025-10-05T21:00:04.871Z",
        "2025-10-05T21:24:40.090Z",
        "2025-10-05T21:58:24.560Z",
    ]

    windows = split_into_windows([utc(text) for text in timestamps], HOUR)

    assert starts_and_ends(windows) == [
        (utc("2025-10-05T16:00:00Z"), utc("2025-10-05T21:00:00Z")),
        (utc("2025-10-05T21:00:00Z"), utc("2025-10-06T02:00:00Z")),
    ]
    assert windows[0].last_message_at == utc("2025-10-05T20:59:58.258Z")
    assert windows[1].first_message_at == utc("2025-10-05T21:00:04.871Z")
    assert windows[1].last_message_at == utc("2025-10-05T21:58:24.560Z")


# --- DST ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local_first_message", "expected_start", "expected_end", "wall_clock_hours"),
    [
        # Europe/Berlin springs forward 02:00 -> 03:00 local (01:00 UTC) on 2025-03-30
        ("2025-03-30T01:30:00+01:00", "2025-03-30T00:00:00Z", "2025-03-30T05:00:00Z", 6),
        # and falls back 03:00 -> 02:00 local (01:00 UTC) on 2025-10-26
        ("2025-10-26T02:30:00+02:00", "2025-10-26T00:00:00Z", "2025-10-26T05:00:00Z", 4),
    ],
)
def test_windows_across_a_european_dst_change_are_plain_utc_arithmetic(
    local_first_message: str, expected_start: str, expected_end: str, wall_clock_hours: int
) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    first_message_at = datetime.fromisoformat(local_first_message).astimezone(berlin)

    [window] = split_into_windows([first_message_at], HOUR)

    assert (window.start, window.end) == (utc(expected_start), utc(expected_end))
    assert window.end - window.start == timedelta(hours=5)
    assert window.first_message_at.tzinfo is UTC
    # on the local wall clock the same five hours read as six (spring) or four (autumn)
    local_hours = window.end.astimezone(berlin).hour - window.start.astimezone(berlin).hour
    assert local_hours == wall_clock_hours


# --- activity -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "last_message", "now", "expected"),
    [
        (
            "a fresh message keeps the window active",
            "2025-10-05T17:00:00Z",
            "2025-10-05T17:30:00Z",
            True,
        ),
        (
            "one microsecond before the end it is still active",
            "2025-10-05T20:00:00Z",
            "2025-10-05T20:59:59.999999Z",
            True,
        ),
        ("now equal to the end is inactive", "2025-10-05T20:00:00Z", "2025-10-05T21:00:00Z", False),
        ("now after the end is inactive", "2025-10-05T20:00:00Z", "2025-10-05T22:00:00Z", False),
        (
            "a last message just under five hours old keeps it active",
            "2025-10-05T16:00:00Z",
            "2025-10-05T20:59:59Z",
            True,
        ),
    ],
)
def test_a_window_is_active_until_its_end_while_messages_are_recent(
    case: str, last_message: str, now: str, expected: bool
) -> None:
    window = window_at("2025-10-05T16:00:00Z", last_message)

    assert window.is_active(utc(now)) is expected, case


def test_a_window_whose_last_message_is_five_hours_old_is_inactive_before_its_end() -> None:
    # split_into_windows never builds such a window (its end is at most five hours after any
    # of its messages), so build one by hand: the idle rule must hold on its own.
    start = utc("2025-10-05T16:00:00Z")
    window = Window(
        start=start, end=start + timedelta(hours=6), first_message_at=start, last_message_at=start
    )

    assert window.is_active(start + timedelta(hours=4, minutes=59)) is True
    assert window.is_active(start + WINDOW_LENGTH) is False


# --- burn rate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("input_output", "all_tokens", "cost", "expected"),
    [
        (6_000, 120_000, 1.2, BurnRate(100.0, 2_000.0, 0.02)),
        (100, 1_000, 0.1, BurnRate(1.7, 16.7, 0.001667)),
        (0, 0, 0.0, BurnRate(0.0, 0.0, 0.0)),
        (1, 59, 0.000_001, BurnRate(0.0, 1.0, 0.0)),
    ],
)
def test_burn_rate_is_the_last_hour_averaged_per_minute_and_rounded(
    input_output: int, all_tokens: int, cost: float, expected: BurnRate
) -> None:
    rate = burn_rate(
        input_output_tokens_last_hour=input_output,
        all_tokens_last_hour=all_tokens,
        cost_last_hour_usd=cost,
    )

    assert rate == expected


# --- format_duration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (14_818, "4h 6m"),
        (59, "0h 0m"),
        (60, "0h 1m"),
        (300, "0h 5m"),
        (3_599.999, "0h 59m"),
        (3_600, "1h 0m"),
        (7_200, "2h 0m"),
        (18_000, "5h 0m"),
        (90_061, "25h 1m"),
        (0, "0h 0m"),
        (-1, "0h 0m"),
        (-3_600, "0h 0m"),
        (float("nan"), "0h 0m"),
    ],
)
def test_durations_are_rendered_as_whole_hours_and_floored_minutes(
    seconds: float, expected: str
) -> None:
    assert format_duration(seconds) == expected


# --- predict ------------------------------------------------------------------------------

NOW = utc("2025-10-05T18:00:00Z")
RESET = utc("2025-10-05T21:00:00Z")


@pytest.mark.parametrize(
    ("case", "used", "limit", "per_minute", "next_reset_at", "expected"),
    [
        (
            "at the limit the limit is reached now",
            1_000,
            1_000,
            10.0,
            RESET,
            Prediction(True, "Limit reached", NOW),
        ),
        (
            "over the limit the limit is reached now",
            1_500,
            1_000,
            0.0,
            None,
            Prediction(True, "Limit reached", NOW),
        ),
        (
            "reaching the limit before the reset",
            0,
            1_000,
            10.0,
            RESET,
            Prediction(True, "1h 40m", NOW + timedelta(minutes=100)),
        ),
        (
            "reaching the limit one minute before the reset",
            0,
            1_790,
            10.0,
            RESET,
            Prediction(True, "2h 59m", NOW + timedelta(minutes=179)),
        ),
        (
            "reaching it exactly at the reset is not reaching it",
            0,
            1_800,
            10.0,
            RESET,
            Prediction(False, "Not reaching limit", None),
        ),
        (
            "a slow burn does not reach the limit before the reset",
            0,
            100_000,
            10.0,
            RESET,
            Prediction(False, "Not reaching limit", None),
        ),
        (
            "a zero burn rate never reaches the limit",
            500,
            1_000,
            0.0,
            RESET,
            Prediction(False, "Not reaching limit", None),
        ),
        (
            "a negative burn rate never reaches the limit",
            500,
            1_000,
            -5.0,
            RESET,
            Prediction(False, "Not reaching limit", None),
        ),
        (
            "without an active window there is nothing to reach",
            500,
            1_000,
            10.0,
            None,
            Prediction(False, "Not reaching limit", None),
        ),
        (
            "a vanishing burn rate does not overflow",
            0,
            1_000,
            1e-300,
            RESET,
            Prediction(False, "Not reaching limit", None),
        ),
    ],
)
def test_prediction_extrapolates_the_burn_rate_to_the_reset(
    case: str,
    used: int,
    limit: int,
    per_minute: float,
    next_reset_at: datetime | None,
    expected: Prediction,
) -> None:
    prediction = predict(
        limit_tokens_used=used,
        token_limit=limit,
        tokens_per_minute=per_minute,
        now=NOW,
        next_reset_at=next_reset_at,
    )

    assert prediction == expected, case


# --- percentile_90 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        ([42], 42),
        ([1, 2], 2),
        ([5, 1, 4, 2, 3], 5),
        (list(range(1, 11)), 9),
        (list(range(10, 0, -1)), 9),
        (list(range(1, 12)), 10),
        (list(range(1, 21)), 18),
        (list(range(1, 31)), 27),
        (list(range(1, 101)), 90),
        ([7, 7, 7], 7),
    ],
)
def test_percentile_90_is_the_nearest_rank_value(values: list[int], expected: int | None) -> None:
    assert percentile_90(values) == expected


# --- resolve_token_limit ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "plan", "token_limit", "history", "expected"),
    [
        ("pro uses its plan limit", "pro", None, [], 65_459),
        ("max5 uses its plan limit", "max5", None, [1], 88_000),
        ("max20 uses its plan limit", "max20", None, [], 220_000),
        ("an explicit limit wins over the plan", "max20", 50_000, [], 50_000),
        ("an explicit limit wins over custom history", "custom", 12_345, [1, 2], 12_345),
        (
            "custom learns the 90th percentile of completed windows",
            "custom",
            None,
            list(range(1_000, 11_000, 1_000)),
            9_000,
        ),
        ("custom without history falls back to pro", "custom", None, [], PLAN_LIMITS["pro"]),
        (
            "custom with only empty windows falls back to pro",
            "custom",
            None,
            [0, 0],
            PLAN_LIMITS["pro"],
        ),
    ],
)
def test_the_token_limit_comes_from_the_request_the_plan_or_the_history(
    case: str, plan: str, token_limit: int | None, history: list[int], expected: int
) -> None:
    resolved = resolve_token_limit(
        plan=plan, token_limit=token_limit, completed_window_totals=history
    )

    assert resolved == expected, case


@pytest.mark.parametrize(
    ("plan", "token_limit", "message"),
    [
        ("enterprise", None, "unknown plan"),
        ("Pro", None, "unknown plan"),
        ("", 10_000, "unknown plan"),
        ("pro", 0, "must be positive"),
        ("custom", -1, "must be positive"),
    ],
)
def test_an_unknown_plan_or_a_non_positive_limit_is_rejected(
    plan: str, token_limit: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_token_limit(plan=plan, token_limit=token_limit, completed_window_totals=[])


# --- rate_limit_state ---------------------------------------------------------------------


def test_the_rate_limit_state_describes_the_active_window() -> None:
    window = window_at("2025-10-05T16:00:00Z", "2025-10-05T17:55:00Z")
    now = utc("2025-10-05T18:00:00Z")

    state = rate_limit_state(
        window=window,
        window_tokens=2_000_000,
        window_input_output_tokens=32_729,
        plan="pro",
        token_limit=65_459,
        tokens_per_minute=200.0,
        now=now,
    )

    assert state.current_window_tokens == 2_000_000
    assert state.current_window_start == utc("2025-10-05T16:00:00Z")
    assert state.next_reset_at == utc("2025-10-05T21:00:00Z")
    assert state.time_until_reset_seconds == 3 * 3600
    assert state.time_until_reset_human == "3h 0m"
    assert state.is_within_active_window is True
    assert state.token_limit == 65_459
    assert state.limit_tokens_used == 32_729
    assert state.used_percentage == 50.0
    assert state.plan == "pro"
    assert state.prediction == Prediction(True, "2h 43m", now + timedelta(minutes=163.65))


def test_the_time_until_reset_is_floored_to_whole_seconds() -> None:
    window = window_at("2025-10-05T16:00:00Z", "2025-10-05T17:55:00Z")

    state = rate_limit_state(
        window=window,
        window_tokens=0,
        window_input_output_tokens=0,
        plan="pro",
        token_limit=1_000,
        tokens_per_minute=0.0,
        now=utc("2025-10-05T20:58:00.900Z"),
    )

    assert state.time_until_reset_seconds == 119
    assert state.time_until_reset_human == "0h 1m"


@pytest.mark.parametrize(
    "window",
    [None, window_at("2025-10-05T10:00:00Z", "2025-10-05T11:00:00Z")],
    ids=["no window", "an ended window"],
)
def test_without_an_active_window_the_state_is_idle(window: Window | None) -> None:
    state = rate_limit_state(
        window=window,
        window_tokens=999,
        window_input_output_tokens=999,
        plan="max5",
        token_limit=88_000,
        tokens_per_minute=50.0,
        now=utc("2025-10-05T18:00:00Z"),
    )

    assert state.current_window_tokens == 0
    assert state.current_window_start is None
    assert state.next_reset_at is None
    assert state.time_until_reset_seconds == 0
    assert state.time_until_reset_human == "0h 0m"
    assert state.is_within_active_window is False
    assert state.token_limit == 88_000
    assert state.limit_tokens_used == 0
    assert state.used_percentage == 0.0
    assert state.plan == "max5"
    assert state.prediction == Prediction(False, "Not reaching limit", None)


def test_the_used_percentage_is_rounded_to_one_decimal_and_may_exceed_100() -> None:
    window = window_at("2025-10-05T16:00:00Z", "2025-10-05T17:55:00Z")

    state = rate_limit_state(
        window=window,
        window_tokens=0,
        window_input_output_tokens=2_001,
        plan="custom",
        token_limit=1_500,
        tokens_per_minute=1.0,
        now=utc("2025-10-05T18:00:00Z"),
    )

    assert state.used_percentage == 133.4
    assert state.prediction.estimated_time_to_limit == "Limit reached"


def test_a_non_positive_token_limit_is_rejected_by_the_rate_limit_state() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        rate_limit_state(
            window=None,
            window_tokens=0,
            window_input_output_tokens=0,
            plan="pro",
            token_limit=0,
            tokens_per_minute=0.0,
            now=utc("2025-10-05T18:00:00Z"),
        )


# --- properties ---------------------------------------------------------------------------

# hypothesis takes naive bounds and attaches the timezone itself
EARLIEST_MESSAGE = datetime(2025, 1, 1)  # noqa: DTZ001
LATEST_MESSAGE = datetime(2025, 1, 4)  # noqa: DTZ001
message_times = st.lists(
    st.datetimes(min_value=EARLIEST_MESSAGE, max_value=LATEST_MESSAGE, timezones=st.just(UTC)),
    max_size=60,
)


@given(timestamps=message_times, align=st.sampled_from(WindowAlign))
def test_every_message_lands_in_exactly_one_window_that_contains_it(
    timestamps: list[datetime], align: WindowAlign
) -> None:
    windows = split_into_windows(timestamps, align)

    for message_at in timestamps:
        containing = [
            window
            for window in windows
            if window.first_message_at <= message_at <= window.last_message_at
        ]
        assert len(containing) == 1
        assert containing[0].start <= message_at <= containing[0].end
    for window in windows:
        assert window.end - window.start == WINDOW_LENGTH
        assert window.start == window_start_for(window.first_message_at, align)
    for earlier, later in pairwise(windows):
        assert later.first_message_at - earlier.start > WINDOW_LENGTH
        assert earlier.end <= later.start


@given(timestamps=message_times, align=st.sampled_from(WindowAlign))
def test_the_order_of_messages_never_changes_the_windows(
    timestamps: list[datetime], align: WindowAlign
) -> None:
    assert split_into_windows(timestamps, align) == split_into_windows(
        list(reversed(timestamps)), align
    )


@given(values=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=200))
def test_percentile_90_has_at_least_ninety_percent_of_values_at_or_below_it(
    values: list[int],
) -> None:
    p90 = percentile_90(values)

    assert p90 in values
    at_or_below = sum(value <= p90 for value in values)
    below = sum(value < p90 for value in values)
    assert at_or_below * 10 >= 9 * len(values)
    assert below * 10 < 9 * len(values)


@given(seconds=st.floats(min_value=0, max_value=10**7, allow_nan=False))
def test_format_duration_round_trips_to_the_floored_minute(seconds: float) -> None:
    hours_text, minutes_text = format_duration(seconds).split()
    hours, minutes = int(hours_text.removesuffix("h")), int(minutes_text.removesuffix("m"))

    assert 0 <= minutes < 60
    assert hours * 60 + minutes == int(seconds // 60)
