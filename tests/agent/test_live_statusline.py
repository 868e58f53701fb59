"""`claude-usage-agent statusline` against the real server: Claude's official limits reach it.

Claude Code runs the statusline command with its status JSON on stdin; the command prints a line
at once and a detached worker forwards `rate_limits` to `POST /limits/`. The server's dashboard
then takes the five-hour reset time and percentage from that reading (`source: "official"`) for
as long as the reset lies ahead. The server is the repository's own (see conftest.py); these are
skipped when the repo's `.venv` does not exist yet.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from . import conftest as fixtures
from .conftest import UsageServer, requires_live_server
from .processes import agent_command, agent_env

# Imported rather than found in conftest.py, so this module also runs under --noconftest.
migrated_database = fixtures.migrated_database
usage_server_process = fixtures.usage_server_process
usage_server = fixtures.usage_server

pytestmark = [requires_live_server, pytest.mark.slow]

HOST = "it-laptop"
# Bounds on waiting, never expectations of speed: on a busy machine a detached worker can
# take seconds to start. That the command does not wait on the network is test_statusline's.
POLL_LIMIT = 60.0
COMMAND_TIMEOUT = 60.0


def claude_code_status(five_hour_resets_at: int, seven_day_resets_at: int) -> dict[str, Any]:
    """What Claude Code writes to a statusline command's stdin (epoch seconds for resets)."""
    return {
        "hook_event_name": "Status",
        "session_id": "2b4f7c1e-8d3a-4e55-9a0b-6c1d2e3f4a5b",
        "transcript_path": "/home/dev/.claude/projects/-home-dev-api/2b4f7c1e.jsonl",
        "cwd": "/home/dev/api",
        "model": {"id": "claude-sonnet-4-5-20250929", "display_name": "Sonnet 4.5"},
        "workspace": {"current_dir": "/home/dev/api", "project_dir": "/home/dev/api"},
        "version": "2.1.6",
        "output_style": {"name": "default"},
        "cost": {
            "total_cost_usd": 0.4213,
            "total_duration_ms": 812_000,
            "total_api_duration_ms": 95_400,
            "total_lines_added": 156,
            "total_lines_removed": 23,
        },
        "exceeds_200k_tokens": False,
        "rate_limits": {
            "five_hour": {"used_percentage": 22.4, "resets_at": five_hour_resets_at},
            "seven_day": {"used_percentage": 3, "resets_at": seven_day_resets_at},
        },
    }


def get(server: UsageServer, path: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.url}/app/claude-usage/{path}",
        headers={"Authorization": f"Token {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def rate_limit(server: UsageServer) -> dict[str, Any]:
    block: dict[str, Any] = get(server, "dashboard/")["rate_limit"]
    return block


def stats_rate_limit(server: UsageServer) -> dict[str, Any]:
    block: dict[str, Any] = get(server, "stats/")["rate_limit"]
    return block


def poll(
    read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """`read()` until `done` holds for its answer, for at most POLL_LIMIT seconds."""
    deadline = time.monotonic() + POLL_LIMIT
    while True:
        answer = read()
        if done(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {POLL_LIMIT} s; last answer: {answer}")
        time.sleep(0.1)


def epoch(iso: str | None) -> float:
    assert iso is not None
    return datetime.fromisoformat(iso).timestamp()


@dataclass
class Statusline:
    """Runs `claude-usage-agent statusline` as Claude Code does, with a private home."""

    server: UsageServer
    home: Path

    @property
    def cache_file(self) -> Path:
        return self.home / "cache" / "claude-usage" / "statusline.json"

    def run(self, status: dict[str, Any]) -> str:
        done = subprocess.run(
            agent_command("statusline"),
            input=json.dumps(status).encode(),
            capture_output=True,
            env=agent_env(
                HOME=str(self.home),
                XDG_CACHE_HOME=str(self.home / "cache"),
                XDG_CONFIG_HOME=str(self.home / "config"),
                XDG_STATE_HOME=str(self.home / "state"),
                CLAUDE_USAGE_SERVER=self.server.url,
                CLAUDE_USAGE_TOKEN=self.server.token,
                CLAUDE_USAGE_HOST_NAME=HOST,
            ),
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        output = done.stdout.decode()
        assert output.endswith("\n"), output
        assert len(output.splitlines()) == 1, output
        return output.rstrip("\n")

    def cached_dashboard(self) -> dict[str, Any]:
        """The worker's copy of the dashboard ({} until it has written one)."""
        try:
            cache = json.loads(self.cache_file.read_bytes())
        except (OSError, ValueError):
            return {}
        dashboard = cache.get("dashboard") if isinstance(cache, dict) else None
        return dashboard if isinstance(dashboard, dict) else {}


@pytest.fixture
def statusline(usage_server: UsageServer, tmp_path: Path) -> Statusline:
    home = tmp_path / "home"
    home.mkdir()
    return Statusline(usage_server, home)


def test_before_any_reading_the_dashboard_reports_its_own_estimate(
    statusline: Statusline,
) -> None:
    server = statusline.server
    assert rate_limit(server)["source"] == "estimate"
    assert rate_limit(server)["official"] is None
    assert stats_rate_limit(server)["source"] == "estimate"
    # A status without `rate_limits` (older Claude Code, API-key users) only refreshes the copy.
    status = claude_code_status(0, 0)
    del status["rate_limits"]
    assert statusline.run(status) == "Sonnet 4.5 $0.42"
    cached = poll(statusline.cached_dashboard, bool)
    assert cached["rate_limit"]["source"] == "estimate"
    assert rate_limit(server)["source"] == "estimate"
    assert rate_limit(server)["official"] is None


def test_the_statusline_forwards_the_official_limits_to_the_dashboard(
    statusline: Statusline,
) -> None:
    server = statusline.server
    now = int(time.time())
    five_hour_reset, seven_day_reset = now + 2 * 3600, now + 5 * 86400
    line = statusline.run(claude_code_status(five_hour_reset, seven_day_reset))
    assert line.startswith("Sonnet 4.5 $0.42 | reset ")
    assert any(f"reset {left} | " in line for left in ("2h 0m", "1h 59m")), line
    assert line.endswith(" | 5h 22% · 7d 3%")

    official = poll(lambda: rate_limit(server), lambda block: block["source"] == "official")
    assert epoch(official["next_reset_at"]) == five_hour_reset
    assert official["used_percentage"] == 22.4
    assert 0 < official["time_until_reset_seconds"] <= 2 * 3600
    assert official["is_within_active_window"] is True
    reading = official["official"]
    assert reading["host"] == HOST
    assert reading["five_hour"]["used_percentage"] == 22.4
    assert epoch(reading["five_hour"]["resets_at"]) == five_hour_reset
    assert reading["seven_day"]["used_percentage"] == 3
    assert epoch(reading["seven_day"]["resets_at"]) == seven_day_reset
    assert now - 5 <= epoch(reading["observed_at"]) <= time.time()

    in_stats = stats_rate_limit(server)
    assert in_stats["source"] == "official"
    assert epoch(in_stats["next_reset_at"]) == five_hour_reset
    # The worker also refreshed the statusline's copy, which now carries the official figures.
    cached = poll(statusline.cached_dashboard, lambda copy: bool(copy.get("rate_limit")))
    assert cached["rate_limit"]["source"] == "official"


def test_a_reading_whose_reset_has_passed_leaves_the_estimate(statusline: Statusline) -> None:
    server = statusline.server
    now = int(time.time())
    past_reset = now - 10 * 60  # the window Claude reported on is already over
    statusline.run(claude_code_status(past_reset, now + 5 * 86400))

    # Wait until the reading is on the server, so "estimate" below is not merely "not yet".
    block = poll(lambda: rate_limit(server), lambda answer: answer["official"] is not None)
    assert epoch(block["official"]["five_hour"]["resets_at"]) == past_reset
    assert block["source"] == "estimate"
    assert block["used_percentage"] != 22.4
    assert block["next_reset_at"] is None or epoch(block["next_reset_at"]) != past_reset
    assert stats_rate_limit(server)["source"] == "estimate"
