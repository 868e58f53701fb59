"""The command line, end to end against a local stand-in for the server (no Django needed)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_usage_agent.checkpoints import load_state
from claude_usage_agent.cli import EXIT_AUTH, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, main
from tests.support import WAIT_SECONDS, ProcessLog, wait_until

from .fake_server import TOKEN, FakeUsageServer
from .processes import agent_command, agent_env
from .transcripts import append, assistant_line, line, user_record


@pytest.fixture
def server() -> Iterator[FakeUsageServer]:
    with FakeUsageServer() as running:
        yield running


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with one Claude Code session and no agent configuration."""
    for name in ("CLAUDE_USAGE_SERVER", "CLAUDE_USAGE_TOKEN", "CLAUDE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    session = tmp_path / ".claude" / "projects" / "-home-dev-api" / "s1.jsonl"
    append(session, line(user_record()) + assistant_line("m1", "r1") + assistant_line("m2", "r2"))
    return tmp_path


def sync(server: FakeUsageServer, *extra: str, token: str = TOKEN) -> int:
    return main(["sync", "--server", server.url, "--token", token, "--host-name", "box", *extra])


def test_sync_ships_and_prints_a_json_summary(
    server: FakeUsageServer, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(server, "--json") == EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert (summary["records_sent"], summary["accepted"]) == (2, 2)
    assert server.requests[-1].headers["X-Usage-Host"] == "box"
    state_file = home / ".local" / "state" / "claude-usage" / "agent-state.json"
    assert load_state(state_file, server.url).files


def test_a_second_sync_sends_nothing(server: FakeUsageServer, home: Path) -> None:
    sync(server)
    sync(server)
    assert len(server.batches) == 1


def test_server_and_token_can_come_from_the_environment(
    server: FakeUsageServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_USAGE_SERVER", server.url)
    monkeypatch.setenv("CLAUDE_USAGE_TOKEN", TOKEN)
    assert main(["sync", "--state-file", str(home / "elsewhere.json")]) == EXIT_OK
    assert (home / "elsewhere.json").exists()


def test_a_refused_token_exits_non_zero_with_a_clear_message(
    server: FakeUsageServer, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(server, token="wrong") == EXIT_AUTH
    assert "the server refused the token (HTTP 401" in capsys.readouterr().err


def test_a_missing_server_is_a_configuration_error(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sync", "--token", "k"]) == EXIT_CONFIG
    assert "no server configured" in capsys.readouterr().err


def test_an_unreachable_server_gives_up_after_the_tries_allowed(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sync", "--server", "http://127.0.0.1:9", "--token", "k", "--max-tries", "2"])
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert "retry 1 in" in err
    assert "giving up after 2 tries" in err
    assert "nothing was lost" in err


def test_a_busy_server_is_retried_after_retry_after(
    server: FakeUsageServer, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script.append(429)
    server.retry_after = "0"
    assert sync(server) == EXIT_OK
    assert len(server.records) == 2
    assert "HTTP 429" in capsys.readouterr().err


def test_since_must_be_a_date(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["sync", "--since", "last week"])
    assert raised.value.code == 2
    assert "use YYYY-MM-DD" in capsys.readouterr().err


def test_since_leaves_older_records_out(server: FakeUsageServer, home: Path) -> None:
    assert sync(server, "--since", "2999-01-01") == EXIT_OK
    assert server.records == {}


def test_watch_ships_an_appended_line_reading_only_the_new_file_and_stops_on_sigterm(
    server: FakeUsageServer, home: Path
) -> None:
    command = agent_command("watch", "--server", server.url)
    env = agent_env(CLAUDE_USAGE_TOKEN=TOKEN, HOME=str(home))
    watcher = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    log = ProcessLog(watcher)
    try:
        wait_until(lambda: len(shipped(log)) == 1, "the backfill")
        session = home / ".claude" / "projects" / "-home-dev-api" / "s2.jsonl"
        append(session, assistant_line("m3", "r3"))
        # Logged once the server has answered for it.
        wait_until(lambda: len(shipped(log)) == 2, "the appended line")
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=WAIT_SECONDS)
    assert watcher.returncode == 0, log.text()
    assert "stopped" in log.text()
    # The poll that found the line opened one file (the unchanged s1.jsonl only had a stat)
    # and sent one record: it resumed from the checkpoints instead of reading everything.
    # How soon the line arrives is measured in bench/agent_latency.py.
    assert shipped(log)[1].startswith("sent 1 records from 1 files: 1 new,"), log.text()
    assert [[record["message"]["id"] for record in batch] for batch in server.batches] == [
        ["m1", "m2"],
        ["m3"],
    ]


def shipped(log: ProcessLog) -> list[str]:
    """The watch's "sent N records from M files" summaries, one per scan that sent something."""
    return [logged.split(" INFO ", 1)[1] for logged in log.lines() if " INFO sent " in logged]
