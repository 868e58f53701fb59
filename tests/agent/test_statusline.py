"""The statusline: a line from stdin and the cached dashboard, network work in a worker.

How fast the command is, is measured in bench/agent_latency.py, not asserted here."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from claude_usage_agent.config import Overrides, Settings
from claude_usage_agent.statusline import (
    SPAWN_GAP,
    Cache,
    claim_spawn,
    format_remaining,
    format_tokens,
    limits_payload,
    load_cache,
    parse_status,
    plan_work,
    render_line,
    statusline,
)
from claude_usage_agent.statusline_worker import run_worker
from tests.support import WAIT_SECONDS, wait_until

from .fake_server import TOKEN, FakeUsageServer
from .processes import agent_command, agent_env

NOW = 1_757_500_000.0
STATUS: dict[str, Any] = {
    "session_id": "abc",
    "model": {"id": "claude-sonnet-4-5", "display_name": "Sonnet 4.5"},
    "cost": {"total_cost_usd": 0.4213},
    "rate_limits": {
        "five_hour": {"used_percentage": 22.4, "resets_at": NOW + 3900},
        "seven_day": {"used_percentage": 3, "resets_at": NOW + 6 * 86400},
    },
}
DASHBOARD = {
    "rate_limit": {
        "current_window_tokens": 1_234_567,
        "time_until_reset_seconds": 14818,
        "time_until_reset_human": "4h 6m",
    },
    "burn_rate": {"tokens_per_minute": 1105.8},
}
SETTINGS = Settings("http://usage.test", "k", "laptop", Path("/unused"))


def test_with_the_dashboard_it_shows_window_tokens_burn_rate_and_reset() -> None:
    assert render_line(STATUS, DASHBOARD, NOW, age=5) == (
        "Sonnet 4.5 $0.42 | 1.2M tok · 1.1k tok/min · reset 1h 5m | 5h 22% · 7d 3%"
    )


def test_without_official_limits_the_reset_comes_from_the_dashboard_minus_its_age() -> None:
    status = {"model": {"display_name": "Opus 4.1"}}
    assert render_line(status, DASHBOARD, NOW, age=60) == (
        "Opus 4.1 | 1.2M tok · 1.1k tok/min · reset 4h 5m"
    )


def test_without_a_cache_it_still_says_something_useful_from_stdin() -> None:
    assert render_line(STATUS, None, NOW, age=0) == (
        "Sonnet 4.5 $0.42 | reset 1h 5m | 5h 22% · 7d 3%"
    )


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b'{"model": 3}'])
def test_unreadable_input_still_prints_a_line(raw: bytes) -> None:
    assert render_line(parse_status(raw), None, NOW, age=0) == "claude-usage"


@pytest.mark.parametrize(("count", "text"), [(950, "950"), (1_500, "1.5k"), (17_664_746, "17.7M")])
def test_token_counts_are_short(count: int, text: str) -> None:
    assert format_tokens(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "<1m"), (59, "<1m"), (61, "1m"), (3900, "1h 5m"), (2 * 86400, "2d 0h")],
)
def test_remaining_time_is_short(seconds: float, text: str) -> None:
    assert format_remaining(seconds) == text


def test_the_limits_payload_carries_the_windows_the_time_and_the_host() -> None:
    assert limits_payload(STATUS, "laptop", NOW) == {
        "five_hour": {"used_percentage": 22.4, "resets_at": NOW + 3900},
        "seven_day": {"used_percentage": 3, "resets_at": NOW + 6 * 86400},
        "observed_at": "2025-09-10T10:26:40+00:00",
        "host": "laptop",
    }


def test_a_missing_window_is_left_out_and_no_window_means_no_payload() -> None:
    only_week = {"rate_limits": {"seven_day": {"used_percentage": 3}}}
    payload = limits_payload(only_week, "h", NOW)
    assert payload is not None
    assert "five_hour" not in payload
    assert limits_payload({"model": {}}, "h", NOW) is None


def fresh_cache(**changes: Any) -> Cache:
    cache = Cache(SETTINGS.server, DASHBOARD, NOW - 1, None, 0.0)
    cache.limits_sent = {key: STATUS["rate_limits"][key] for key in ("five_hour", "seven_day")}
    cache.limits_sent_at = NOW - 1
    for name, value in changes.items():
        setattr(cache, name, value)
    return cache


def test_no_work_when_the_cache_is_fresh_and_the_limits_already_sent() -> None:
    payload = limits_payload(STATUS, "laptop", NOW)
    assert plan_work(fresh_cache(), SETTINGS, payload, NOW) is None


def test_an_old_cache_is_refreshed() -> None:
    job = plan_work(fresh_cache(fetched_at=NOW - 11), SETTINGS, None, NOW)
    assert job == {"refresh": True, "limits": None}


def test_changed_limits_are_forwarded() -> None:
    payload = limits_payload(STATUS, "laptop", NOW)
    job = plan_work(fresh_cache(limits_sent={"five_hour": {}}), SETTINGS, payload, NOW)
    assert job == {"refresh": False, "limits": payload}


def test_unchanged_limits_are_resent_after_a_minute() -> None:
    payload = limits_payload(STATUS, "laptop", NOW)
    job = plan_work(fresh_cache(limits_sent_at=NOW - 61), SETTINGS, payload, NOW)
    assert job is not None
    assert job["limits"] == payload


def test_a_cache_from_another_server_is_ignored() -> None:
    job = plan_work(fresh_cache(server="http://old.test"), SETTINGS, None, NOW)
    assert job == {"refresh": True, "limits": None}


def test_workers_are_spawned_at_most_once_per_gap(tmp_path: Path) -> None:
    marker = tmp_path / "cache" / "statusline.spawned"
    assert claim_spawn(marker, NOW)
    assert not claim_spawn(marker, NOW + SPAWN_GAP - 1)
    assert claim_spawn(marker, NOW + SPAWN_GAP)


def test_without_a_server_it_prints_from_stdin_and_starts_nothing(tmp_path: Path) -> None:
    line, job = statusline(json.dumps(STATUS).encode(), Overrides(), {}, tmp_path)
    assert line.startswith("Sonnet 4.5 $0.42 | reset")
    assert job is None


@pytest.fixture
def server() -> Iterator[FakeUsageServer]:
    with FakeUsageServer(dashboard=DASHBOARD) as running:
        yield running


def test_the_worker_forwards_limits_and_caches_the_dashboard(
    server: FakeUsageServer, tmp_path: Path
) -> None:
    cache_file = tmp_path / "statusline.json"
    payload = limits_payload(STATUS, "laptop", NOW)
    job = {"server": server.url, "token": TOKEN, "host_name": "laptop"}
    run_worker({**job, "cache_file": str(cache_file), "refresh": True, "limits": payload})
    assert server.limits == [json.loads(json.dumps(payload))]
    assert server.requests[-1].path == "/app/claude-usage/dashboard/"
    cache = load_cache(cache_file)
    assert (cache.server, cache.dashboard) == (server.url, DASHBOARD)
    assert cache.limits_sent is not None
    assert set(cache.limits_sent) == {"five_hour", "seven_day"}


def test_the_worker_keeps_the_last_copy_when_the_server_is_down(tmp_path: Path) -> None:
    cache_file = tmp_path / "statusline.json"
    cache_file.write_text(json.dumps({"server": "http://127.0.0.1:9", "dashboard": DASHBOARD}))
    job = {"server": "http://127.0.0.1:9", "token": "k", "host_name": "h"}
    run_worker({**job, "cache_file": str(cache_file), "refresh": True, "limits": None})
    assert load_cache(cache_file).dashboard == DASHBOARD


class HeldServer:
    """A server that holds every request unanswered until `release()`, then answers each one
    (the dashboard for a GET) and notes whether its client was still waiting for the answer.

    A command that waited on the network could only return once its request had ended: held
    here, that is when the client gives up (the worker's own timeout, 5 s) and hangs up."""

    def __init__(self) -> None:
        self._released = threading.Event()
        self.arrived = threading.Event()
        # One per held request, in order: was its client still connected when it was answered?
        self.client_was_waiting: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.paths: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True

    def __enter__(self) -> HeldServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def release(self) -> None:
        self._released.set()

    def hold(self, path: str, connection: socket.socket) -> bool:
        """Each request waits here until released; whether its client still waits for it."""
        self.paths.append(path)
        held = not self._released.is_set()
        self.arrived.set()
        self._released.wait(WAIT_SECONDS)
        waiting = still_connected(connection)
        if held:
            self.client_was_waiting.put(waiting)
        return waiting

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if server.hold(self.path, self.connection):
                    self._answer(200, DASHBOARD)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if server.hold(self.path, self.connection):
                    self._answer(201, {"ok": True})

            def _answer(self, status: int, payload: object) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def still_connected(connection: socket.socket) -> bool:
    """A client that gave up has closed its end: a peek finds the end of the stream."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True  # open, and nothing more to say: waiting for the answer
    except OSError:
        return False  # reset


def run_statusline(home: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        agent_command("statusline"),
        input=json.dumps(STATUS).encode(),
        capture_output=True,
        env=agent_env(HOME=str(home), XDG_CACHE_HOME="", XDG_CONFIG_HOME="", **env),
        check=True,
        timeout=WAIT_SECONDS,
    )
    return done.stdout.decode()


def test_the_command_answers_without_waiting_for_the_server_and_refreshes_in_the_background(
    tmp_path: Path,
) -> None:
    with HeldServer() as server:
        env = {"CLAUDE_USAGE_SERVER": server.url, "CLAUDE_USAGE_TOKEN": TOKEN}
        output = run_statusline(tmp_path, env)
        assert output.startswith("Sonnet 4.5 $0.42 | reset")  # no cache yet: stdin alone
        # The command has returned; its worker asks the server, which answers only now. Had
        # the command (or its pipe, held open by the worker) waited for that request, the
        # worker would have given up first and gone.
        assert server.arrived.wait(WAIT_SECONDS), "the worker never reached the server"
        server.release()
        assert server.client_was_waiting.get(timeout=WAIT_SECONDS) is True
        cache_file = tmp_path / ".cache" / "claude-usage" / "statusline.json"
        wait_until(lambda: load_cache(cache_file).dashboard is not None, "the dashboard copy")
    assert server.paths == ["/app/claude-usage/limits/", "/app/claude-usage/dashboard/"]
    assert "1.2M tok · 1.1k tok/min" in run_statusline(tmp_path, env)
