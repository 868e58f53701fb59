"""`claude-usage-agent statusline`: one line for Claude Code's status bar, fast.

Claude Code runs the command on every refresh and waits for it, so nothing here touches the
network: the line comes from stdin and a cached copy of the server's dashboard, and a detached
worker (statusline_worker) forwards the official limits and refreshes that copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claude_usage_agent.config import (
    ConfigError,
    Overrides,
    Settings,
    default_cache_file,
    resolve_settings,
)

WINDOWS = ("five_hour", "seven_day")
WINDOW_FIELDS = ("used_percentage", "resets_at")
REFRESH_AFTER = 10.0  # seconds before the dashboard copy is refreshed
SHOW_UNTIL = 600.0  # an older copy is not shown: its window figures would mislead
LIMITS_RESEND_AFTER = 60.0  # unchanged limits are re-sent this often, to say "still true"
# At most one worker per this many seconds, however often Claude Code refreshes (it can be
# several times a second while streaming), also while the server is down.
SPAWN_GAP = 5.0


@dataclass
class Cache:
    server: str | None = None
    dashboard: dict[str, Any] | None = None
    fetched_at: float = 0.0
    limits_sent: dict[str, Any] | None = None
    limits_sent_at: float = 0.0


def load_cache(path: Path) -> Cache:
    try:
        raw = json.loads(path.read_bytes())
        return Cache(**{key: raw[key] for key in asdict(Cache()) if key in raw})
    except (OSError, ValueError, TypeError):
        return Cache()


def parse_status(raw: bytes) -> dict[str, Any]:
    """Claude Code's statusline JSON; anything unreadable is an empty status, never an error."""
    try:
        status = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def limit_windows(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The official rate-limit windows present in the status (either may be missing)."""
    limits = status.get("rate_limits")
    if not isinstance(limits, dict):
        return {}
    windows = {}
    for name in WINDOWS:
        window = limits.get(name)
        if isinstance(window, dict):
            windows[name] = {key: window[key] for key in WINDOW_FIELDS if key in window}
    return windows


def limits_payload(status: Mapping[str, Any], host: str, now: float) -> dict[str, Any] | None:
    windows = limit_windows(status)
    if not windows:
        return None
    observed_at = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
    return {**windows, "observed_at": observed_at, "host": host}


def format_tokens(count: float) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 1_000:
        return f"{count / 1_000:.1f}k"
    return f"{count:.0f}"


def format_remaining(seconds: float) -> str:
    minutes = max(0, int(seconds)) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else "<1m"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _model_part(status: Mapping[str, Any]) -> str:
    model = status.get("model")
    name = ""
    if isinstance(model, dict):
        name = str(model.get("display_name") or model.get("id") or "")
    cost = status.get("cost")
    dollars = _number(cost.get("total_cost_usd")) if isinstance(cost, dict) else None
    return f"{name} ${dollars:.2f}".strip() if dollars is not None else name


def _reset_text(
    windows: Mapping[str, Any], dashboard: Mapping[str, Any] | None, now: float, age: float
) -> str | None:
    # The official reset time wins: the server only sees this agent's machines, not claude.ai.
    resets_at = _number(windows.get("five_hour", {}).get("resets_at"))
    if resets_at is not None:
        return format_remaining(resets_at - now)
    rate_limit = (dashboard or {}).get("rate_limit") or {}
    seconds = _number(rate_limit.get("time_until_reset_seconds"))
    if seconds is not None:
        return format_remaining(seconds - age)
    human = rate_limit.get("time_until_reset_human")
    return str(human) if human else None


def _usage_part(dashboard: Mapping[str, Any] | None, reset: str | None) -> str:
    parts = []
    if dashboard:
        tokens = _number((dashboard.get("rate_limit") or {}).get("current_window_tokens"))
        rate = _number((dashboard.get("burn_rate") or {}).get("tokens_per_minute"))
        if tokens is not None:
            parts.append(f"{format_tokens(tokens)} tok")
        if rate is not None:
            parts.append(f"{format_tokens(rate)} tok/min")
    if reset:
        parts.append(f"reset {reset}")
    return " · ".join(parts)


def _limits_part(windows: Mapping[str, Any]) -> str:
    labels = {"five_hour": "5h", "seven_day": "7d"}
    parts = []
    for name, label in labels.items():
        used = _number(windows.get(name, {}).get("used_percentage"))
        if used is not None:
            parts.append(f"{label} {used:.0f}%")
    return " · ".join(parts)


def render_line(
    status: Mapping[str, Any], dashboard: Mapping[str, Any] | None, now: float, age: float
) -> str:
    """`Sonnet 4.5 $0.42 | 1.2M tok · 1.1k tok/min · reset 4h 6m | 5h 22% · 7d 3%`."""
    windows = limit_windows(status)
    groups = [
        _model_part(status),
        _usage_part(dashboard, _reset_text(windows, dashboard, now, age)),
        _limits_part(windows),
    ]
    return " | ".join(group for group in groups if group) or "claude-usage"


def shown_dashboard(cache: Cache, settings: Settings | None, now: float) -> dict[str, Any] | None:
    if settings is None or cache.server != settings.server:
        return None
    return cache.dashboard if now - cache.fetched_at <= SHOW_UNTIL else None


def plan_work(
    cache: Cache, settings: Settings, limits: dict[str, Any] | None, now: float
) -> dict[str, Any] | None:
    """The worker's job, or None when the cache is fresh and the limits already forwarded."""
    same_server = cache.server == settings.server
    refresh = not same_server or now - cache.fetched_at >= REFRESH_AFTER
    windows = {key: value for key, value in (limits or {}).items() if key in WINDOWS}
    resend = (
        not same_server
        or windows != cache.limits_sent
        or now - cache.limits_sent_at >= LIMITS_RESEND_AFTER
    )
    send = limits if limits is not None and resend else None
    if not refresh and send is None:
        return None
    return {"refresh": refresh, "limits": send}


def claim_spawn(marker: Path, now: float) -> bool:
    """True (and the marker touched) when no worker started in the last SPAWN_GAP seconds."""
    try:
        if now - marker.stat().st_mtime < SPAWN_GAP:
            return False
    except FileNotFoundError:
        marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    os.utime(marker, (now, now))
    return True


def spawn_worker(job: Mapping[str, Any]) -> None:
    """Start the worker detached and do not wait: its stdout must not be Claude Code's pipe."""
    command = [sys.executable, "-m", "claude_usage_agent", "statusline-worker"]
    streams: dict[str, Any] = {
        "stdin": subprocess.PIPE,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "close_fds": True,
    }
    if sys.platform == "win32":
        flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
        process = subprocess.Popen(command, creationflags=flags, **streams)
    else:
        process = subprocess.Popen(command, start_new_session=True, **streams)
    assert process.stdin is not None
    # The job is far below a pipe's buffer: this write never blocks.
    process.stdin.write(json.dumps(job).encode())
    process.stdin.close()


def statusline(
    raw_input: bytes, overrides: Overrides, env: Mapping[str, str], home: Path
) -> tuple[str, dict[str, Any] | None]:
    """The line to print, and the background job to start (if any)."""
    now = time.time()
    status = parse_status(raw_input)
    cache_file = default_cache_file(env, home)
    cache = load_cache(cache_file)
    try:
        settings: Settings | None = resolve_settings(overrides, env, home)
    except ConfigError:
        settings = None  # no server configured: a line from stdin alone
    line = render_line(status, shown_dashboard(cache, settings, now), now, now - cache.fetched_at)
    if settings is None:
        return line, None
    limits = limits_payload(status, settings.host_name, now)
    job = plan_work(cache, settings, limits, now)
    if job is None or not claim_spawn(cache_file.with_suffix(".spawned"), now):
        return line, None
    job.update(
        server=settings.server,
        token=settings.token,
        host_name=settings.host_name,
        cache_file=str(cache_file),
    )
    return line, job
