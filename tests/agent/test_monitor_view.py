"""The monitor's pure half: formatting, colour thresholds and the rendered view, each at an
explicit moment and time zone."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

pytest.importorskip("rich", reason="the [monitor] extra is not installed")

from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.text import Text

from claude_usage_agent.monitor import formatting as fmt
from claude_usage_agent.monitor import view
from claude_usage_agent.monitor.state import LIVE, RECONNECTING, LinkState, Snapshot

NOW = datetime(2025, 10, 5, 18, 0, tzinfo=UTC)
LIVE_LINK = LinkState(LIVE)
OSLO = ZoneInfo("Europe/Oslo")  # UTC+2 in October


@pytest.mark.parametrize(
    ("fraction", "colour"),
    [
        (0.0, "green"),
        (0.5, "green"),  # "yellow if > 50 %": exactly half is not yet
        (0.5001, "yellow"),
        (0.8, "yellow"),  # "red if > 80 %"
        (0.8001, "red"),
        (1.5, "red"),
    ],
)
def test_a_usage_bar_turns_yellow_above_half_and_red_above_80_percent(
    fraction: float, colour: str
) -> None:
    assert fmt.usage_colour(fraction) == colour


@pytest.mark.parametrize(
    ("seconds", "colour"),
    [(0, "red"), (29 * 60 + 59, "red"), (30 * 60, "green"), (4 * 3600, "green")],
)
def test_the_time_to_reset_is_red_under_30_minutes(seconds: float, colour: str) -> None:
    assert fmt.reset_colour(seconds) == colour


@pytest.mark.parametrize(
    ("function", "value", "text"),
    [
        (fmt.count, 56_869_556, "56,869,556"),
        (fmt.count, 999, "999"),
        (fmt.count, 1234.6, "1,235"),
        (fmt.short_count, 56_869_556, "56.9M"),
        (fmt.short_count, 1_234_567, "1.2M"),
        (fmt.short_count, 45_300, "45.3k"),
        (fmt.short_count, 999, "999"),
        (fmt.short_count, 2_500_000_000, "2.5B"),
        (fmt.money, 1.234, "$1.23"),
        (fmt.money, 1234.567, "$1,234.57"),
        (fmt.money, 0, "$0.00"),
        (fmt.money_rate, 0.0348, "$0.03/min ($2.09/h)"),
        (fmt.tokens_rate, 105.84, "105.8 tokens/min"),
        (fmt.tokens_rate, 12_345.6, "12,345.6 tokens/min"),
        (fmt.countdown, 14_818, "4h 06m 58s"),
        (fmt.countdown, 1_799.9, "29m 59s"),
        (fmt.countdown, -5, "0m 00s"),
    ],
)
def test_numbers_are_readable(function: Any, value: float, text: str) -> None:
    assert function(value) == text


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (NOW + timedelta(hours=4, minutes=6), "Mon 00:06"),  # in Oslo, tomorrow already
        (NOW + timedelta(hours=1), "21:00"),
        (NOW - timedelta(days=3), "Thu 20:00"),
        (NOW - timedelta(days=30), "2025-09-05 20:00"),
    ],
)
def test_times_are_shown_in_the_local_zone(moment: datetime, text: str) -> None:
    assert fmt.local_time(moment, NOW, OSLO) == text


def dashboard(**rate_limit: Any) -> dict[str, Any]:
    reset = NOW + timedelta(hours=4, minutes=6, seconds=58)
    return {
        "summary": {
            "total_tokens": 56_869_556,
            "total_cost_usd": 12.345,
            "total_messages": 639,
            "time_range_hours": 6,
        },
        "burn_rate": {"tokens_per_minute": 105.8, "cost_per_minute_usd": 0.0348},
        "model_distribution": [
            {
                "model": "claude-sonnet-4-5",
                "tokens": 50_000_000,
                "messages": 500,
                "cost_usd": 11.1,
                "percentage": 87.9,
            },
            {
                "model": "claude-opus-4-1",
                "tokens": 6_869_556,
                "messages": 139,
                "cost_usd": 1.245,
                "percentage": 12.1,
            },
        ],
        "rate_limit": {
            "current_window_tokens": 10_946_569,
            "next_reset_at": reset.isoformat(),
            "time_until_reset_seconds": 14_818,
            "is_within_active_window": True,
            "token_limit": 88_000,
            "limit_tokens_used": 44_000,
            "used_percentage": 50.0,
            "plan": "max5",
            "source": "estimate",
            "predictions": {
                "tokens_will_run_out": False,
                "estimated_time_to_limit": "Not reaching limit",
                "estimated_limit_at": None,
            },
            **rate_limit,
        },
    }


def screen(
    data: dict[str, Any] | None,
    now: datetime = NOW,
    link: LinkState = LIVE_LINK,
    **options: Any,
) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    snapshot = None if data is None else Snapshot(data, NOW)
    console.print(
        view.render(
            snapshot, link, now, view.ViewOptions("https://u.example", zone=OSLO, **options)
        )
    )
    return console.export_text()


def test_the_view_shows_every_component_of_the_dashboard() -> None:
    text = screen(dashboard(), budget=20.0)

    assert "44,000 / 88,000 (50.0%)" in text
    assert "source: estimate" in text
    assert "plan max5" in text
    assert "window 10.9M tokens (all kinds)" in text
    assert "$12.35 / $20.00 (61.7%)" in text
    assert "639" in text
    assert "4h 06m 58s" in text
    assert "at Mon 00:06 CEST" in text
    assert "105.8 tokens/min" in text
    assert "$0.03/min ($2.09/h)" in text
    assert "claude-sonnet-4-5" in text
    assert "87.9%" in text
    assert "50,000,000" in text
    assert "Last 6 h: 56,869,556 tokens (56.9M)" in text
    assert "⚠" not in text


def test_the_countdown_runs_on_between_snapshots() -> None:
    assert "4h 06m 55s" in screen(dashboard(), now=NOW + timedelta(seconds=3))


def test_without_a_budget_the_cost_has_no_percentage() -> None:
    text = screen(dashboard())
    assert "$12.35  (no budget: --budget USD)" in text
    assert "$20.00" not in text


def test_a_message_limit_adds_a_messages_bar() -> None:
    assert "639 / 1,000 (63.9%)" in screen(dashboard(), message_limit=1000)


def test_the_prediction_warns_when_tokens_will_run_out() -> None:
    at = (NOW + timedelta(minutes=65)).isoformat()
    prediction = {
        "tokens_will_run_out": True,
        "estimated_time_to_limit": "1h 5m",
        "estimated_limit_at": at,
    }
    text = screen(dashboard(predictions=prediction))
    assert "⚠ Tokens will run out in 1h 5m (at 21:05)" in text


def test_an_official_limit_says_so_with_claudes_reading() -> None:
    official = {
        "five_hour": {"used_percentage": 22.4, "resets_at": (NOW + timedelta(hours=1)).isoformat()},
        "seven_day": {"used_percentage": 3.0, "resets_at": (NOW + timedelta(days=3)).isoformat()},
        "observed_at": (NOW - timedelta(minutes=2)).isoformat(),
        "host": "it-laptop",
    }
    text = screen(dashboard(source="official", official=official))
    assert "source: official" in text
    assert "Claude says" in text
    assert "5h 22% · 7d 3% · read 19:58 on it-laptop" in text


def test_without_a_reading_from_claude_there_is_no_official_row() -> None:
    assert "Claude says" not in screen(dashboard(official=None))


def test_outside_a_window_there_is_no_countdown() -> None:
    text = screen(dashboard(is_within_active_window=False, next_reset_at=None))
    assert "no active window" in text


def test_while_reconnecting_the_header_says_when_it_tries_again() -> None:
    link = LinkState(RECONNECTING, NOW + timedelta(seconds=4), 2, "connection refused")
    text = screen(dashboard(), link=link)
    assert "reconnecting in 0m 04s, attempt 2 (connection refused)" in text


def test_before_the_first_snapshot_it_says_it_is_waiting() -> None:
    assert "Waiting for the first snapshot" in screen(None, link=LinkState())


@pytest.mark.parametrize(("seconds_left", "style"), [(1799, "bold red"), (1800, "bold green")])
def test_the_countdown_is_drawn_red_under_30_minutes(seconds_left: int, style: str) -> None:
    data = dashboard(time_until_reset_seconds=seconds_left)
    _, countdown, _ = view.reset_row(data["rate_limit"], Snapshot(data, NOW), NOW, OSLO)
    assert isinstance(countdown, Text)
    assert countdown.style == style


@pytest.mark.parametrize(
    ("used_percentage", "colour"), [(50.0, "green"), (50.1, "yellow"), (80.1, "red")]
)
def test_the_token_bar_takes_the_threshold_colour(used_percentage: float, colour: str) -> None:
    _, bar, label = view.token_row(dashboard(used_percentage=used_percentage)["rate_limit"])
    assert isinstance(bar, ProgressBar)
    assert bar.complete_style == colour
    assert label.spans[0].style == colour


@pytest.mark.parametrize(("budget", "colour"), [(100.0, "green"), (20.0, "yellow"), (13.0, "red")])
def test_the_cost_bar_takes_the_threshold_colour(budget: float, colour: str) -> None:
    _, bar, _ = view.cost_row(dashboard()["summary"], budget)
    assert isinstance(bar, ProgressBar)
    assert bar.complete_style == colour


def test_the_plain_summary_has_the_essentials() -> None:
    text = fmt.summary_text(dashboard(), NOW, OSLO, budget=20.0)
    assert text.splitlines() == [
        "Claude usage, last 6 h, at 20:00 CEST",
        "Tokens:     56,869,556 (56.9M) in 639 messages",
        "Cost:       $12.35 of $20.00 (61.7%)",
        "Window:     44,000 of 88,000 limit tokens (50.0%, plan max5, estimate);"
        " 10,946,569 tokens in all",
        "Reset:      in 4h 06m 58s, at Mon 00:06 CEST",
        "Burn rate:  105.8 tokens/min, $0.03/min ($2.09/h)",
        "Model:      claude-sonnet-4-5 87.9% (50,000,000 tokens, $11.10)",
        "Model:      claude-opus-4-1 12.1% (6,869,556 tokens, $1.25)",
    ]
