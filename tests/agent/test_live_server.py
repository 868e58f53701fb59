"""The real agent against the real server: sync, watch, partial lines, rotation, kill -9, outages.

These start the repository's Django server with daphne (see conftest.py) and run the agent as a
subprocess, as a user would. They are skipped when the repo's `.venv` does not exist yet.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from claude_usage_agent.checkpoints import Checkpoint, load_state
from tests.support import WAIT_SECONDS, ProcessLog, samples, wait_until

from . import conftest as fixtures
from .conftest import ServerProcess, UsageServer, requires_live_server
from .processes import agent_command, agent_env
from .transcripts import (
    append,
    assistant_line,
    assistant_record,
    line,
    user_record,
)

# Imported rather than found in conftest.py, so this module also runs under --noconftest.
migrated_database = fixtures.migrated_database
usage_server_process = fixtures.usage_server_process
usage_server = fixtures.usage_server

pytestmark = [requires_live_server, pytest.mark.slow]

STAT_FIELDS = (
    "total_tokens",
    "total_messages",
    "total_input_tokens",
    "total_output_tokens",
    "total_cache_creation_tokens",
    "total_cache_read_tokens",
)
# What ccusage 20.0.24 reports on the sample tree (/work/shared/samples/README.md).
CCUSAGE_SAMPLE_TOTALS = {
    "total_tokens": 17_664_746,
    "total_input_tokens": 37_815,
    "total_output_tokens": 141_860,
    "total_cache_creation_tokens": 864_577,
    "total_cache_read_tokens": 16_620_494,
}


def stats(server: UsageServer) -> dict[str, Any] | None:
    """The server's totals, or None while GET /stats/ does not exist."""
    request = urllib.request.Request(
        f"{server.url}/app/claude-usage/stats/", headers={"Authorization": f"Token {server.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def totals(server: UsageServer) -> dict[str, Any] | None:
    answer = stats(server)
    return None if answer is None else {name: answer[name] for name in STAT_FIELDS}


@dataclass
class Agent:
    """Runs `claude-usage-agent` like a user would, on one Claude config dir."""

    server: UsageServer
    config_dir: Path
    state_file: Path

    def command(self, *args: str, state_file: Path | None = None) -> list[str]:
        state = str(state_file or self.state_file)
        connection = ["--server", self.server.url, "--token", self.server.token]
        return agent_command(*args, *connection, "--host-name", "it-host", "--state-file", state)

    def env(self) -> dict[str, str]:
        return agent_env(CLAUDE_CONFIG_DIR=str(self.config_dir))

    def run(self, *args: str, state_file: Path | None = None) -> subprocess.CompletedProcess[str]:
        command = self.command(*args, state_file=state_file)
        return subprocess.run(
            command, env=self.env(), capture_output=True, text=True, timeout=300, check=False
        )

    def sync(self, *args: str, state_file: Path | None = None) -> dict[str, int]:
        done = self.run("sync", "--json", *args, state_file=state_file)
        assert done.returncode == 0, done.stderr
        summary: dict[str, int] = json.loads(done.stdout)
        return summary

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args), env=self.env(), stderr=subprocess.PIPE, text=True
        )

    def checkpoint(self, path: Path) -> Checkpoint | None:
        """Where the agent's state file says it is in `path`."""
        return load_state(self.state_file, self.server.url).files.get(str(path))

    def everything_is_on_the_server(self, tmp_path: Path) -> None:
        """Re-send every record from scratch: the server must already have each one."""
        resent = self.sync(state_file=tmp_path / f"fresh-{time.monotonic_ns()}.json")
        assert resent["records_sent"] > 0
        assert resent["accepted"] == 0, resent


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    path = tmp_path / "claude" / "projects"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def agent(usage_server: UsageServer, projects: Path, tmp_path: Path) -> Agent:
    return Agent(usage_server, projects.parent, tmp_path / "state" / "agent-state.json")


@dataclass
class Generated:
    """Expected server totals for a generated tree."""

    totals: dict[str, int]

    def add(self, record: dict[str, Any]) -> None:
        usage = record["message"]["usage"]
        parts = {
            "total_input_tokens": usage["input_tokens"],
            "total_output_tokens": usage["output_tokens"],
            "total_cache_creation_tokens": usage["cache_creation_input_tokens"],
            "total_cache_read_tokens": usage["cache_read_input_tokens"],
        }
        for name, value in parts.items():
            self.totals[name] += value
        self.totals["total_tokens"] += sum(parts.values())
        self.totals["total_messages"] += 1


def generate_tree(projects: Path, files: int, messages: int, seed: int) -> Generated:
    """Sessions in real shapes: each response written as two content-block lines, the first
    with a partial output count (the server keeps the larger copy), between user prompts."""
    rng = random.Random(seed)
    expected = Generated(dict.fromkeys(STAT_FIELDS, 0))
    start = datetime.now(UTC) - timedelta(hours=2)
    for number in range(files):
        chunks: list[bytes] = []
        for index in range(messages):
            stamp = start + timedelta(seconds=rng.randint(0, 7000))
            record = assistant_record(
                f"msg_{seed}_{number}_{index}",
                f"req_{seed}_{number}_{index}",
                input_tokens=rng.randint(1, 50),
                output_tokens=rng.randint(2, 900),
                cache_creation=rng.randint(0, 5000),
                cache_read=rng.randint(0, 50000),
                timestamp=stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                session_id=f"session-{seed}-{number}",
            )
            partial = json.loads(json.dumps(record))
            partial["message"]["usage"]["output_tokens"] = 1
            chunks += [line(user_record()), line(partial), line(record)]
            expected.add(record)
        path = projects / f"-home-dev-project{number % 4}" / f"session-{seed}-{number}.jsonl"
        append(path, b"".join(chunks))
    return expected


def assert_totals(server: UsageServer, expected: dict[str, int]) -> None:
    current = totals(server)
    if current is not None:  # until /stats/ exists, everything_is_on_the_server must do
        assert current == expected


def test_sync_ships_the_sample_tree_and_matches_ccusage(agent: Agent, tmp_path: Path) -> None:
    sample_projects = samples("claude-config", "projects")
    shutil.copytree(sample_projects, agent.config_dir / "projects", dirs_exist_ok=True)
    first = agent.sync()
    # Every usage line is sent, or merged into a better copy of its message sent with it.
    assert (first["records_sent"] + first["copies_merged"], first["rejected"]) == (541, 0)
    assert first["copies_merged"] > 0
    assert agent.sync()["records_sent"] == 0
    current = stats(agent.server)
    assert current is not None
    assert {name: current[name] for name in CCUSAGE_SAMPLE_TOTALS} == CCUSAGE_SAMPLE_TOTALS
    agent.everything_is_on_the_server(tmp_path)


def test_a_wrong_token_stops_sync_with_a_clear_message(
    usage_server: UsageServer, projects: Path, tmp_path: Path
) -> None:
    generate_tree(projects, files=1, messages=2, seed=1)
    wrong = Agent(
        UsageServer(usage_server.url, "not-a-token"), projects.parent, tmp_path / "s.json"
    )
    done = wrong.run("sync")
    assert done.returncode == 3
    assert "the server refused the token (HTTP 401" in done.stderr


def test_watch_ships_new_lines_reading_only_them_and_waits_for_partial_ones(
    agent: Agent, projects: Path
) -> None:
    expected = generate_tree(projects, files=2, messages=5, seed=2)
    watcher = agent.start("watch")
    log = ProcessLog(watcher)
    try:
        wait_until(lambda: len(shipped(log)) == 1, "the backfill")
        session = projects / "-home-dev-live" / "live.jsonl"
        record = assistant_record("msg_live_1", "req_live_1", input_tokens=7, output_tokens=11)
        append(session, line(user_record()) + line(record))
        expected.add(record)
        wait_until(lambda: len(shipped(log)) == 2, "the new line")  # the answer is in
        assert totals(agent.server) == expected.totals

        late = assistant_record("msg_live_2", "req_live_2", input_tokens=3, output_tokens=5)
        complete = session.stat().st_size
        append(session, line(late)[:50])  # Claude Code is half-way through writing it
        # A scan saw the half line (the size it noted includes it), sent nothing of it, and
        # left it to be read again once complete.
        wait_until(lambda: seen(agent, session).size == complete + 50, "a scan of the half line")
        assert seen(agent, session).offset == complete
        assert totals(agent.server) == expected.totals
        append(session, line(late)[50:])
        expected.add(late)
        wait_until(lambda: len(shipped(log)) == 3, "the completed line")
        assert totals(agent.server) == expected.totals
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=WAIT_SECONDS)
    assert watcher.returncode == 0, log.text()
    # Each scan that found a line opened only the file it was in, and sent only that line:
    # no scan read the tree again. How soon lines arrive is measured in bench/agent_latency.py.
    assert shipped(log)[1:] == ["sent 1 records from 1 files: 1 new"] * 2, log.text()


def seen(agent: Agent, path: Path) -> Checkpoint:
    """The agent's checkpoint of `path`; before it has one, one that matches no file."""
    return agent.checkpoint(path) or Checkpoint(inode=0, size=-1, offset=-1)


def shipped(log: ProcessLog) -> list[str]:
    """The watch's "sent N records from M files: ..." summaries up to the first comma, one
    per scan that sent something."""
    return [
        text.split(" INFO ", 1)[1].split(",")[0] for text in log.lines() if " INFO sent " in text
    ]


def test_rotated_and_truncated_files_are_read_again_without_double_counting(
    agent: Agent, projects: Path, tmp_path: Path
) -> None:
    session = projects / "-home-dev-api" / "s.jsonl"
    old = [assistant_record(f"msg_old_{n}", f"req_old_{n}", input_tokens=n + 1) for n in range(4)]
    append(session, b"".join(line(record) for record in old))
    agent.sync()
    # Replaced (new inode) by a copy that repeats the old records and adds new ones, like a
    # resumed session does.
    new = [assistant_record(f"msg_new_{n}", f"req_new_{n}", input_tokens=n + 9) for n in range(3)]
    replacement = session.with_suffix(".tmp")
    append(replacement, b"".join(line(record) for record in old + new))
    os.replace(replacement, session)
    assert agent.sync()["records_sent"] == 7
    # Truncated and rewritten shorter.
    session.write_bytes(line(assistant_record("msg_cut", "req_cut", input_tokens=2)))
    assert agent.sync()["records_sent"] == 1
    expected = Generated(dict.fromkeys(STAT_FIELDS, 0))
    for record in [*old, *new, assistant_record("msg_cut", "req_cut", input_tokens=2)]:
        expected.add(record)
    assert_totals(agent.server, expected.totals)
    agent.everything_is_on_the_server(tmp_path)


def kill_during_sync(agent: Agent, after_progress: bool, delay: float) -> bool:
    """Start a sync, SIGKILL it `delay` s after start (or after its next checkpoint save), and
    tell whether it was still running then."""

    def saved_at() -> int:
        return agent.state_file.stat().st_mtime_ns if agent.state_file.exists() else 0

    before = saved_at()
    running = agent.start("sync", "--batch-size", "10")
    if after_progress:
        wait_until(lambda: running.poll() is not None or saved_at() != before, "progress")
    time.sleep(delay)
    still_running = running.poll() is None
    running.send_signal(signal.SIGKILL)
    running.communicate(timeout=10)
    return still_running


def test_kill_9_at_any_moment_then_restart_gives_the_clean_totals(
    agent: Agent, projects: Path, tmp_path: Path
) -> None:
    expected = generate_tree(projects, files=24, messages=60, seed=3)  # 2,880 usage lines
    rng = random.Random(3)
    # The first kill lands around the first request; the others once a checkpoint has moved,
    # at a random point of the batches that follow.
    killed_mid_run = [kill_during_sync(agent, after_progress=False, delay=0.3)]
    for _kill in range(3):
        delay = rng.uniform(0.0, 0.3)
        killed_mid_run.append(kill_during_sync(agent, after_progress=True, delay=delay))
    assert killed_mid_run.count(True) >= 3, "the runs finished before the kills"
    assert agent.sync("--batch-size", "10")["rejected"] == 0
    assert_totals(agent.server, expected.totals)
    agent.everything_is_on_the_server(tmp_path)


def test_a_server_killed_mid_batch_and_restarted_gives_the_clean_totals(
    agent: Agent, usage_server_process: ServerProcess, projects: Path, tmp_path: Path
) -> None:
    expected = generate_tree(projects, files=16, messages=60, seed=4)
    running = agent.start("sync", "--batch-size", "10")
    wait_until(agent.state_file.exists, "first acknowledged batch")
    usage_server_process.kill()
    time.sleep(2.0)
    usage_server_process.start()
    _, err = running.communicate(timeout=180)
    assert running.returncode == 0, err
    assert "retry" in err
    assert_totals(agent.server, expected.totals)
    agent.everything_is_on_the_server(tmp_path)


def test_watch_started_while_the_server_is_down_catches_up_when_it_is_back(
    agent: Agent, usage_server_process: ServerProcess, projects: Path
) -> None:
    expected = generate_tree(projects, files=3, messages=10, seed=5)
    usage_server_process.stop()
    watcher = agent.start("watch")
    try:
        time.sleep(1.5)
        record = assistant_record("msg_down", "req_down", input_tokens=5)
        append(projects / "-home-dev-api" / "down.jsonl", line(record))
        expected.add(record)
        time.sleep(1.5)
        usage_server_process.start()
        wait_until(lambda: totals(agent.server) == expected.totals, "catch-up")
    finally:
        watcher.send_signal(signal.SIGTERM)
        _, err = watcher.communicate(timeout=20)
    assert "cannot reach" in err
    assert watcher.returncode == 0, err


def test_a_subagent_log_is_shipped_too(agent: Agent, projects: Path) -> None:
    subagent = projects / "-home-dev-api" / "session-1" / "subagents" / "agent-7.jsonl"
    append(subagent, assistant_line("msg_sub", "req_sub", sidechain=True))
    assert agent.sync()["records_sent"] == 1


def daphne_workers(launcher: ServerProcess) -> list[int]:
    """The daphne processes ``python -m backend.serve`` started (its children)."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def test_a_daphne_worker_killed_again_and_again_mid_sync_gives_the_clean_totals(
    projects: Path, tmp_path: Path, migrated_database: Path
) -> None:
    # Two daphne workers as `make run` starts them; one of them, at random, is SIGKILLed
    # while the agent streams batches of 10 (a batch is in flight nearly all the time).
    # The launcher then stops the other and exits; it is started again, the agent retries
    # what was not acknowledged, and nothing is lost or counted twice.
    expected = generate_tree(projects, files=16, messages=60, seed=7)
    rng = random.Random(7)
    base = tmp_path / "two-workers"
    base.mkdir()
    with fixtures.running_server(base, migrated_database, workers=2) as server:
        agent = Agent(UsageServer(server.url, server.token), projects.parent, base / "state.json")
        running = agent.start("sync", "--batch-size", "10")
        kills = 0
        for _ in range(3):
            wait_until(agent.state_file.exists, "an acknowledged batch")
            time.sleep(rng.uniform(0.05, 0.5))
            if running.poll() is not None:
                break
            os.kill(rng.choice(daphne_workers(server)), signal.SIGKILL)
            kills += 1
            assert server.process is not None
            server.process.wait(timeout=WAIT_SECONDS)  # the launcher gives up on its own
            server.start()
        _, err = running.communicate(timeout=180)
        assert kills >= 2, "the sync finished before the kills"
        assert running.returncode == 0, err
        assert "retry" in err
        assert_totals(agent.server, expected.totals)
        agent.everything_is_on_the_server(tmp_path)
