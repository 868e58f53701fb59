"""``python -m backend.serve``: several daphne workers behind one address, as `make run`
starts the server. Real processes on a fresh SQLite database and the test run's Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from backend import serve
from tests.agent.conftest import ServerProcess, migrated_database, running_server, server_env
from tests.support import REPO

__all__ = ["migrated_database"]  # the fixture, imported for this module's tests

pytestmark = [pytest.mark.slow]

API = "/app/claude-usage/"
WORKERS = 2
CLIENTS = 4
BATCHES_PER_CLIENT = 8
RECORDS_PER_BATCH = 250
TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed


@pytest.fixture
def two_workers(tmp_path: Path, migrated_database: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, migrated_database, workers=WORKERS) as server:
        yield server


# --- what the processes hold -------------------------------------------------------------


def _children(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == pid:
            children.append(int(entry.name))
    return sorted(children)


def _listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:``port``, from /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if local == f"0100007F:{port:04X}" and state == "0A":  # 0A: LISTEN
            return inode
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def _wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} within {TIMEOUT} s")


# --- records ------------------------------------------------------------------------------


def _batch(client: int, batch: int) -> bytes:
    now = datetime.now(tz=UTC)
    lines = []
    for index in range(RECORDS_PER_BATCH):
        key = f"{client}_{batch}_{index}"
        moment = now - timedelta(seconds=index)
        lines.append(
            {
                "type": "assistant",
                "timestamp": moment.isoformat().replace("+00:00", "Z"),
                "sessionId": f"serve-session-{client}",
                "cwd": "/home/dev/serve",
                "requestId": f"req_{key}",
                "message": {
                    "id": f"msg_{key}",
                    "model": "claude-sonnet-4-20250514",
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            }
        )
    return b"\n".join(orjson.dumps(line) for line in lines)


def _post_batches(server: ServerProcess, client: int) -> int:
    accepted = 0
    for batch in range(BATCHES_PER_CLIENT):
        # httpx.post opens a connection for each request, as the agent does.
        answer = httpx.post(
            f"{server.url}{API}events/",
            content=_batch(client, batch),
            headers={
                "Authorization": f"Token {server.token}",
                "Content-Type": "application/x-ndjson",
            },
            timeout=TIMEOUT,
        )
        assert answer.status_code == 200, answer.text
        accepted += answer.json()["accepted"]
    return accepted


# --- the tests ----------------------------------------------------------------------------


def test_every_worker_accepts_on_the_one_listening_socket(two_workers: ServerProcess) -> None:
    assert two_workers.process is not None
    workers = _children(two_workers.process.pid)
    listening = _listening_inode(two_workers.port)

    assert len(workers) == WORKERS
    assert all(listening in _socket_inodes(worker) for worker in workers)
    # The launcher let go of it: only the workers keep the port open.
    assert listening not in _socket_inodes(two_workers.process.pid)


def test_the_workers_share_the_batches_of_several_clients(two_workers: ServerProcess) -> None:
    assert two_workers.process is not None
    workers = _children(two_workers.process.pid)
    before = {worker: _cpu_ticks(worker) for worker in workers}

    with ThreadPoolExecutor(CLIENTS) as pool:
        accepted = sum(pool.map(lambda client: _post_batches(two_workers, client), range(CLIENTS)))
    stats = httpx.get(
        f"{two_workers.url}{API}stats/",
        headers={"Authorization": f"Token {two_workers.token}"},
        timeout=TIMEOUT,
    ).json()

    expected = CLIENTS * BATCHES_PER_CLIENT * RECORDS_PER_BATCH
    assert accepted == expected
    assert stats["total_messages"] == expected
    # Each worker worked: a worker that took no batch would have spent next to no CPU.
    busy = {worker: _cpu_ticks(worker) - before[worker] for worker in workers}
    assert all(ticks >= 5 for ticks in busy.values()), busy


def test_stopping_the_launcher_stops_every_worker(two_workers: ServerProcess) -> None:
    assert two_workers.process is not None
    workers = _children(two_workers.process.pid)

    two_workers.process.send_signal(signal.SIGTERM)
    status = two_workers.process.wait(timeout=TIMEOUT)

    assert status == 0
    _wait_until(lambda: all(_gone(worker) for worker in workers), "the workers did not exit")


def test_a_worker_that_dies_stops_the_launcher_and_the_other_workers(
    two_workers: ServerProcess,
) -> None:
    assert two_workers.process is not None
    first, *others = _children(two_workers.process.pid)

    os.kill(first, signal.SIGKILL)
    status = two_workers.process.wait(timeout=TIMEOUT)

    assert status != 0
    _wait_until(lambda: all(_gone(worker) for worker in others), "the workers did not exit")
    assert "exited with -9" in two_workers.log_path.read_text()


@pytest.mark.parametrize(
    ("web_concurrency", "cpus", "expected"),
    [
        ("3", 2, 3),  # said explicitly: taken as said
        ("", 2, 2),  # one per CPU
        ("", 1, 1),
        ("", 16, serve.DEFAULT_MAX_WORKERS),  # at most a few unless said explicitly
    ],
)
def test_the_default_number_of_workers(
    monkeypatch: pytest.MonkeyPatch, web_concurrency: str, cpus: int, expected: int
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", web_concurrency)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))

    assert serve.default_workers() == expected


def test_without_cpu_affinity_the_cpu_count_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # macOS has no os.sched_getaffinity.
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)

    assert serve.default_workers() == 3


@pytest.mark.parametrize("web_concurrency", ["two", "0"])
def test_a_bad_number_of_workers_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], web_concurrency: str
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", web_concurrency)

    with pytest.raises(SystemExit) as stopped:
        serve.main(["--port", "0"])

    assert stopped.value.code == 2
    assert "WEB_CONCURRENCY" in capsys.readouterr().err


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with serve.listen("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        taken.listen()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "backend.serve",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=REPO,
            env=server_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "text", "line"),
    [
        (
            "USAGE_WINDOW_ALIGN",
            "sideways",
            "USAGE_WINDOW_ALIGN='sideways': must be one of 'hour', 'exact'",
        ),
        (
            "USAGE_RETENTION_HOURS",
            "abc",
            "USAGE_RETENTION_HOURS='abc': must be a number from 0 (keep everything) to 876000",
        ),
    ],
)
def test_a_bad_setting_stops_the_launcher_before_anything_starts(
    tmp_path: Path, variable: str, text: str, line: str
) -> None:
    env = {key: value for key, value in server_env(tmp_path).items() if key != "REDIS_URL"}
    env[variable] = text
    launcher = subprocess.Popen(
        [sys.executable, "-m", "backend.serve", "--port", "0", "--workers", "1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = launcher.communicate(timeout=TIMEOUT)
    finally:
        if launcher.poll() is None:  # it served after all: stop it and its workers
            os.killpg(launcher.pid, signal.SIGTERM)
            launcher.wait(timeout=TIMEOUT)

    assert launcher.returncode != 0
    # Just the line: a worker would have been logged, and would have said it again.
    assert stderr == f"{line}\n"
    assert stdout == ""
    assert not (tmp_path / "var" / "redis.db.settings").exists()  # no embedded Redis either


def test_a_port_that_is_not_a_number_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backend.serve", "--workers", "1"],
        cwd=REPO,
        env={**server_env(tmp_path), "PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode == 2
    assert "--port: invalid int value: 'eighty'" in done.stderr
    assert "Traceback" not in done.stderr
