"""`claude-usage-agent monitor` against the real server, in a pseudo-terminal of 120x40.

The screen is read through a VT emulator (tests/agent/terminal.py): the test sees what a
person would. The server is the repository's own (see conftest.py); these are skipped when the
repo's `.venv` does not exist yet.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from claude_usage_agent.transport import Endpoint, post_events

from . import conftest as fixtures
from .conftest import ServerProcess, UsageServer, requires_live_server
from .processes import agent_command, agent_env
from .terminal import Terminal
from .transcripts import assistant_record, line

# Imported rather than found in conftest.py, so this module also runs under --noconftest.
migrated_database = fixtures.migrated_database
usage_server_process = fixtures.usage_server_process
usage_server = fixtures.usage_server

pytestmark = [requires_live_server, pytest.mark.slow]

COMMAND_TIMEOUT = 60.0


def ingest(server: UsageServer, *records: dict[str, Any]) -> None:
    endpoint = Endpoint(server.url, server.token, "it-host")
    result = post_events(endpoint, [line(record).rstrip(b"\n") for record in records])
    assert result.accepted == len(records), result


def record(message_id: str, input_tokens: int, output_tokens: int, **fields: Any) -> dict[str, Any]:
    return assistant_record(
        message_id,
        f"req-{message_id}",
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        **fields,
    )


def dashboard(server: UsageServer, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.url}/app/claude-usage/dashboard/?{query}",
        headers={"Authorization": f"Token {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def monitor_args(server: UsageServer, *args: str) -> list[str]:
    return agent_command("monitor", "--server", server.url, "--token", server.token, *args)


def run_monitor(server: UsageServer, *args: str) -> subprocess.CompletedProcess[str]:
    """The monitor with stdout a pipe, as in a script."""
    return subprocess.run(
        monitor_args(server, *args),
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


@pytest.fixture
def terminal_env() -> dict[str, str]:
    return agent_env(TERM="xterm-256color", TZ="UTC", COLUMNS="", LINES="")


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.stop()


def test_the_screen_shows_the_ingest_follows_the_next_and_ctrl_c_restores_the_terminal(
    usage_server: UsageServer, terminal_env: dict[str, str], terminals: list[Terminal]
) -> None:
    ingest(usage_server, record("m1", 1200, 34))
    terminal = Terminal(
        monitor_args(usage_server, "--plan", "max5", "--budget", "10"), terminal_env
    )
    terminals.append(terminal)

    screen = terminal.wait_for("● live", "1,234 / 88,000", "Last 6 h: 1,234 tokens")
    assert "source: estimate" in screen
    assert "claude-sonnet-4-5-20250929" in screen

    ingest(usage_server, record("m2", 4000, 444))
    terminal.wait_for("5,678 / 88,000", "Last 6 h: 5,678 tokens")

    terminal.child.sendintr()
    assert terminal.wait_exit() == 0
    assert terminal.restored()
    assert b"Traceback" not in terminal.output


def test_it_reconnects_after_the_server_restarts(
    usage_server_process: ServerProcess, terminal_env: dict[str, str], terminals: list[Terminal]
) -> None:
    server = UsageServer(usage_server_process.url, usage_server_process.token)
    ingest(server, record("m1", 1200, 34))
    terminal = Terminal(monitor_args(server), terminal_env)
    terminals.append(terminal)
    terminal.wait_for("● live", "Last 6 h: 1,234 tokens")

    usage_server_process.stop()
    terminal.wait_for("reconnecting")
    usage_server_process.start()  # the same port and database
    ingest(server, record("m2", 4000, 444))
    terminal.wait_for("● live", "Last 6 h: 5,678 tokens")

    terminal.child.sendintr()
    assert terminal.wait_exit() == 0


def test_a_refused_token_ends_the_monitor_with_a_message_and_no_retries(
    usage_server: UsageServer, terminal_env: dict[str, str], terminals: list[Terminal]
) -> None:
    wrong = UsageServer(usage_server.url, "0" * 40)
    terminal = Terminal(monitor_args(wrong), terminal_env)
    terminals.append(terminal)

    assert terminal.wait_exit(timeout=30) == 3
    assert b"refused the token" in terminal.output
    assert terminal.restored()


def test_once_json_prints_exactly_what_get_dashboard_answers(usage_server: UsageServer) -> None:
    # A day and a half ago: no active window and no burn rate, so both answers are the same
    # whichever second each is computed in.
    then = datetime.now(UTC) - timedelta(hours=36)
    stamp = then.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    ingest(usage_server, record("m1", 1200, 34, timestamp=stamp))

    done = run_monitor(usage_server, "--once", "--json", "--hours", "48", "--plan", "max20")

    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == dashboard(usage_server, "hours=48&plan=max20")
    assert printed["summary"]["total_tokens"] == 1234


def test_without_a_terminal_it_prints_a_summary_once(usage_server: UsageServer) -> None:
    ingest(usage_server, record("m1", 1200, 34))

    done = run_monitor(usage_server, "--budget", "10")

    assert done.returncode == 0, done.stderr
    assert "Tokens:     1,234 (1.2k) in 1 messages" in done.stdout
    assert "Cost:       $0." in done.stdout
    assert "of $10.00" in done.stdout
    assert "Reset:      in 4h" in done.stdout
    assert "Burn rate:" in done.stdout
    assert "tokens/min" in done.stdout
    assert "\x1b[" not in done.stdout  # plain text, no escape sequences


def test_settings_the_server_refuses_are_a_configuration_error(usage_server: UsageServer) -> None:
    done = run_monitor(usage_server, "--once", "--hours", "100000")

    assert done.returncode == 2
    assert "the server refused the settings" in done.stderr
    assert "hours" in done.stderr
