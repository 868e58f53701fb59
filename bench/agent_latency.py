"""How soon the agent's two live paths answer: the statusline command, and ``watch``.

    .venv/bin/python -m bench.agent_latency
    .venv/bin/python -m bench.agent_latency --runs 50 --lines 20

The tests prove what these paths must never do (the statusline never waits on the network,
a watch scan reads only what changed: tests/agent/test_statusline.py, test_cli.py,
test_live_server.py); how fast they are is measured here, against the targets:

1. ``claude-usage-agent statusline``, run as Claude Code runs it (a new process, the status
   JSON on stdin, every ``--gap`` seconds; some runs start the background worker), from start
   to exit, interpreter start-up included. Target: 100 ms.
2. ``claude-usage-agent watch`` (default poll interval, 1 s) against the real server on
   PostgreSQL + Redis: from appending one line to a transcript to ``stats/`` counting it,
   at random moments of the poll cycle. Target: within 2 s (the agent's README: "~2 s").

Only 127.0.0.1 is contacted; every wait is bounded; every process started here is stopped.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    API,
    PYTHON,
    REPO,
    BenchEnv,
    Client,
    RecordFactory,
    percentile,
    prepare,
    print_machine,
    servers,
    stop_on_sigterm,
)
from tests.support import ProcessLog, wait_until

STATUSLINE_TARGET_SECONDS = 0.100
WATCH_TARGET_SECONDS = 2.0
WATCH_POLL_SECONDS = 1.0  # the agent's default
POLL_SECONDS = 0.01  # how often stats/ is read while a line is on its way
STATUS = {
    "model": {"id": "claude-sonnet-4-5", "display_name": "Sonnet 4.5"},
    "cost": {"total_cost_usd": 0.42},
    "rate_limits": {"five_hour": {"used_percentage": 22.4, "resets_at": 4_102_444_800}},
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    stop_on_sigterm()
    env = BenchEnv(database=args.database, redis_url=args.redis_url, redis_prefix="latency")
    work = Path(tempfile.mkdtemp(prefix="agent-latency-"))
    try:
        print_machine()
        token = prepare(env, flush_redis=False)
        with servers(env, 1, workers=1) as (server,):
            url = f"http://127.0.0.1:{server.port}"
            statusline = _statusline_seconds(url, token, work / "statusline", args)
            watch = _watch_seconds(url, token, server.port, work / "watch", args)
        _report("statusline command", statusline, STATUSLINE_TARGET_SECONDS)
        _report("watch: line appended -> counted by the server", watch, WATCH_TARGET_SECONDS)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        env.cleanup()


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=30, help="statusline runs measured")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between statuslines")
    parser.add_argument("--lines", type=int, default=10, help="lines appended under watch")
    parser.add_argument("--database", default="agent_latency")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def _agent(*args: str) -> list[str]:
    return [str(PYTHON), "-m", "claude_usage_agent", *args]


def _agent_env(home: Path, **extra: str) -> dict[str, str]:
    """An empty home: no configuration of the person running this leaks in."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": str(REPO / "agent" / "src"),
    } | extra


# --- 1. the statusline -----------------------------------------------------------------------


def _statusline_seconds(url: str, token: str, home: Path, args: argparse.Namespace) -> list[float]:
    env = _agent_env(home, CLAUDE_USAGE_SERVER=url, CLAUDE_USAGE_TOKEN=token)
    status = json.dumps(STATUS).encode()
    _run_statusline(env, status)  # the first run, as after a restart of Claude Code: not counted
    seconds = []
    for _ in range(args.runs):
        time.sleep(args.gap)
        seconds.append(_run_statusline(env, status))
    return seconds


def _run_statusline(env: dict[str, str], status: bytes) -> float:
    started = time.monotonic()
    subprocess.run(
        _agent("statusline"), input=status, env=env, capture_output=True, check=True, timeout=60
    )
    return time.monotonic() - started


# --- 2. watch ----------------------------------------------------------------------------------


def _watch_seconds(
    url: str, token: str, port: int, work: Path, args: argparse.Namespace
) -> list[float]:
    transcript = work / "claude" / "projects" / "-home-dev-latency" / "session.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.touch()
    rng = random.Random(args.seed)
    records = RecordFactory(seed=args.seed).records(
        args.lines, end=datetime.now(tz=UTC), span=timedelta(minutes=args.lines)
    )
    client = Client(port, token)
    try:
        with _watching(url, token, work) as poll_interval:
            seconds = []
            for record in records:
                time.sleep(rng.uniform(0, poll_interval))  # anywhere in the poll cycle
                seconds.append(_one_line(client, transcript, record))
            return seconds
    finally:
        client.close()


@contextmanager
def _watching(url: str, token: str, work: Path) -> Iterator[float]:
    """``watch`` running, past its first scan; yields its poll interval."""
    command = _agent(
        "watch",
        "--server",
        url,
        "--token",
        token,
        "--state-file",
        str(work / "state.json"),
        "--poll-interval",
        str(WATCH_POLL_SECONDS),
    )
    env = _agent_env(work / "home", CLAUDE_CONFIG_DIR=str(work / "claude"))
    watcher = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    log = ProcessLog(watcher)
    try:
        wait_until(lambda: "watching for new records" in "".join(log.lines()), "watch start")
        yield WATCH_POLL_SECONDS
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=60)


def _one_line(client: Client, transcript: Path, record: dict[str, Any]) -> float:
    before = _messages(client)
    with transcript.open("ab") as handle:
        handle.write(orjson.dumps(record) + b"\n")
    written = time.monotonic()
    deadline = written + 60
    while _messages(client) == before:
        if time.monotonic() > deadline:
            raise TimeoutError("a line appended under watch never reached the server")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - written


def _messages(client: Client) -> int:
    status, body = client.get(API + "stats/")
    if status != 200:
        raise RuntimeError(f"stats/ answered {status}: {body[:300]!r}")
    return int(orjson.loads(body)["total_messages"])


# --- report ------------------------------------------------------------------------------------


def _report(what: str, seconds: list[float], target: float) -> None:
    p50, p95, worst = (percentile(seconds, f) for f in (0.50, 0.95, 1.0))
    verdict = "within" if p95 <= target else "OVER"
    print(
        f"{what}: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
        f" over {len(seconds)}; p95 {verdict} the target of {target * 1000:.0f} ms"
    )


if __name__ == "__main__":
    raise SystemExit(main())
