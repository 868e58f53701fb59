"""Fixtures for the agent's tests.

The agent's unit tests need none of this and also run with `--noconftest`. The live-server
fixtures start the repository's real Django server (daphne) on a fresh SQLite database; the
integration tests import them explicitly so they work under `--noconftest` too, and skip when
the repository's `.venv` (made by `make run` / `make test`) is not there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
DAPHNE = VENV_BIN / "daphne"
SERVER_PYTHON = VENV_BIN / "python"
AGENT_SRC = REPO / "agent" / "src"
STARTUP_TIMEOUT = 60.0

# Let the tests run from an environment where the agent is not installed (the server's .venv).
if importlib.util.find_spec("claude_usage_agent") is None:
    sys.path.insert(0, str(AGENT_SRC))

requires_live_server = pytest.mark.skipif(
    not DAPHNE.exists(),
    reason=f"{DAPHNE} is missing: run `make test` (or `make run`) once to create the repo's .venv",
)


class UsageServer(NamedTuple):
    url: str
    token: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_env(workdir: Path) -> dict[str, str]:
    """A private database and Redis namespace, retention off (the samples are from 2025)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLAUDE_USAGE")}
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        USAGE_RETENTION_HOURS="0",
        USAGE_VAR_DIR=str(workdir / "var"),  # the embedded Redis lives here, one per test
        # A namespace of its own when REDIS_URL points at a shared Redis (the CI's second run).
        USAGE_REDIS_PREFIX=f"agentit{uuid.uuid4().hex[:12]}",
        DJANGO_SETTINGS_MODULE="backend.settings",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(SERVER_PYTHON), "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass
class ServerProcess:
    """The real server; tests stop, kill and restart it on the same port and database."""

    env: dict[str, str]
    log_path: Path
    token: str = ""
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # 0: one daphne process; N: `python -m backend.serve` (what `make run` starts) with N workers
    workers: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if not self.workers:
            return [
                str(DAPHNE),
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "backend.asgi:application",
            ]
        serve = ["-m", "backend.serve", "--host", "127.0.0.1", "--port", str(self.port)]
        return [str(SERVER_PYTHON), *serve, "--workers", str(self.workers)]

    def start(self) -> None:
        # The launcher's socket accepts connections before its workers do: wait for each
        # worker to say it listens too.
        listening = self._listening() + max(self.workers, 1)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=REPO, env=self.env, stdout=log, stderr=log
            )
        self._wait_for_port(listening)

    def _listening(self) -> int:
        """How many times a daphne process said it listens, in this server's log so far."""
        with contextlib.suppress(FileNotFoundError):
            return self.log_path.read_text().count("Listening on")
        return 0

    def _wait_for_port(self, listening: int) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            if self._listening() >= listening:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server not listening after {STARTUP_TIMEOUT} s")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`manage.py migrate` once; each test starts from a copy of the result."""
    if not DAPHNE.exists():
        pytest.skip(f"{DAPHNE} is missing")
    workdir = tmp_path_factory.mktemp("template")
    manage(server_env(workdir), "migrate", "--noinput")
    return workdir / "db.sqlite3"


@contextlib.contextmanager
def running_server(
    tmp_path: Path, migrated_database: Path, *, workers: int = 0
) -> Iterator[ServerProcess]:
    """The real server on a fresh copy of the migrated database, with the user alice."""
    workdir = tmp_path / "server"
    workdir.mkdir()
    shutil.copy(migrated_database, workdir / "db.sqlite3")
    env = server_env(workdir)
    server = ServerProcess(env=env, log_path=workdir / "server.log", workers=workers)
    server.token = manage(env, "create_token", "alice").strip()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def usage_server_process(tmp_path: Path, migrated_database: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, migrated_database) as server:
        yield server


@pytest.fixture
def usage_server(usage_server_process: ServerProcess) -> UsageServer:
    """(url, token) of a running server with a fresh database and the user alice.

    Not called `live_server`: pytest-django owns that name (and hooks into it) in `make test`.
    """
    return UsageServer(usage_server_process.url, usage_server_process.token)
