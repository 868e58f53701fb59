"""What the tests and the benchmarks share for running the real server: a free port,
``manage.py`` in a subprocess, a server process (one daphne, or ``python -m backend.serve``
with N workers) that is started, waited for and stopped, and the reference samples.

Only the standard library and pytest: the agent's tests import this from an environment
without Django, and start the server with the repository's ``.venv`` python instead.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"  # what `make run` / `make test` create
SAMPLES = REPO.parent / "shared" / "samples"  # the reference tree beside the repository
API = "/app/claude-usage/"
MANAGE_SECONDS = 120.0  # bounds on waiting, never expectations of speed
START_SECONDS = 60.0
WAIT_SECONDS = 60.0
STOP_SECONDS = 15.0
LISTENING = "Listening on"  # what each daphne process logs once it accepts


def free_port() -> int:
    """A port nobody listens on now (another process may still take it before we bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_env(workdir: Path, prefix: str, **variables: str) -> dict[str, str]:
    """The environment of a server of a test's own: the local profile, a SQLite file in
    ``workdir`` and the suite's Redis under the key prefix ``prefix`` (``drop_keys`` removes
    its keys)."""
    from django.conf import settings  # a test's settings, loaded by then

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "USAGE_PROFILE": "local",  # backend/profiles.py: DATABASE_URL is set, SECRET_KEY not
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "REDIS_URL": settings.REDIS_URL,
        "USAGE_REDIS_PREFIX": prefix,
        "USAGE_VAR_DIR": str(workdir / "var"),
        "PYTHONUNBUFFERED": "1",  # each log line reaches the file as it is written
        **variables,
    }


@contextlib.contextmanager
def own_server(
    workdir: Path,
    name: str,
    *,
    workers: int = 0,
    daphne_options: Sequence[str] = (),
    variables: dict[str, str] | None = None,
    before_start: Callable[[dict[str, str]], None] = lambda env: None,
) -> Iterator[ServerProcess]:
    """A started server of a test's own (``server_env``), on a migrated database in
    ``workdir``; stopped, and its Redis keys dropped, at the end. ``before_start`` gets the
    environment once the database exists (to create a token, say)."""
    prefix = f"{name}{uuid.uuid4().hex[:12]}"
    env = server_env(workdir, prefix, **(variables or {}))
    manage(env, "migrate", "--noinput", "-v0")
    before_start(env)
    server = ServerProcess(
        env, workdir / "server.log", workers=workers, daphne_options=daphne_options
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        drop_keys(prefix)


@contextlib.contextmanager
def own_database(workdir: Path) -> Iterator[str]:
    """A ``DATABASE_URL`` of a server's own on the suite's engine: a SQLite file in
    ``workdir``, or, when the suite runs on PostgreSQL, a new database on that server,
    dropped at the end (with whatever connections a killed server left behind)."""
    from django.conf import settings

    suite = settings.DATABASES["default"]
    if suite["ENGINE"] != "django.db.backends.postgresql":
        yield f"sqlite:///{workdir / 'db.sqlite3'}"
        return
    import psycopg

    name = f"live_{uuid.uuid4().hex[:12]}"
    login = ":".join(filter(None, [str(suite["USER"] or "postgres"), str(suite["PASSWORD"] or "")]))
    address = f"{login}@{suite['HOST'] or '127.0.0.1'}:{suite['PORT'] or 5432}"
    admin = f"postgresql://{address}/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://{address}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_keys(prefix: str) -> None:
    """Every key under ``prefix`` in the suite's Redis."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def run_manage(
    env: dict[str, str],
    *args: str,
    timeout: float = MANAGE_SECONDS,
    python: Path | str = sys.executable,
) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGS`` in its own process with exactly ``env``, whatever its exit status."""
    return subprocess.run(
        [str(python), "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def manage(
    env: dict[str, str],
    *args: str,
    timeout: float = MANAGE_SECONDS,
    python: Path | str = sys.executable,
) -> str:
    """``manage.py ARGS`` in its own process with exactly ``env``; its stdout, untouched."""
    done = run_manage(env, *args, timeout=timeout, python=python)
    if done.returncode != 0:
        raise RuntimeError(
            f"manage.py {' '.join(args)} exited with {done.returncode}:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return done.stdout


@dataclass
class ServerProcess:
    """The real server on 127.0.0.1, in a process group of its own (so that stopping it also
    stops its workers and any wrapper, and nothing else). Tests stop, kill and start it again
    on the same port, database and log."""

    env: dict[str, str]
    log_path: Path
    # 0: one daphne process; N: `python -m backend.serve` (what `make run` starts), N workers
    workers: int = 0
    python: Path = field(default_factory=lambda: Path(sys.executable))
    wrapper: Sequence[str] = ()  # a command prefix, such as a profiler
    daphne_options: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _listening_before: int = field(default=0, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The process started: daphne, or the launcher of the workers (or the wrapper)."""
        if self.process is None:
            raise RuntimeError("the server was not started")
        return self.process.pid

    def command(self) -> list[str]:
        address = ["127.0.0.1", str(self.port)]
        if not self.workers:
            daphne = str(self.python.parent / "daphne")
            single = [daphne, *self.daphne_options, "-b", address[0], "-p", address[1]]
            return [*self.wrapper, *single, "backend.asgi:application"]
        serve = [str(self.python), "-m", "backend.serve", "--host", address[0], "--port"]
        options = ["--", *self.daphne_options] if self.daphne_options else []
        return [*self.wrapper, *serve, address[1], "--workers", str(self.workers), *options]

    def start(self, timeout: float = START_SECONDS) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start it without waiting (several servers can then start side by side)."""
        # The log is appended to across restarts: only what this start writes counts.
        self._listening_before = self._listening()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = START_SECONDS) -> None:
        """Until the application answers over HTTP (401 without a token is an answer) and,
        behind `backend.serve`, every worker has logged that it listens: the launcher's
        socket accepts before its workers do, and one answer shows only one worker ready.
        (A lone daphne need not log it: LOG_LEVEL=WARNING silences that line.)"""
        expected = self._listening_before + self.workers
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the server exited early:\n{self.log_tail()}")
            if (not self.workers or self._listening() >= expected) and self._answers():
                return
            time.sleep(0.1)
        raise TimeoutError(f"the server did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = STOP_SECONDS) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"

    def _listening(self) -> int:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace").count(LISTENING)
        return 0

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", f"{API}stats/")
            connection.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Until ``condition()`` holds: the test waits for an event, and ``timeout`` only ends a
    wait for one that will not come."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


class ProcessLog:
    """A child's text stderr, read as it comes, so that a test can wait on what it says (and
    the pipe never fills up)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        if process.stderr is None:
            raise ValueError("start the process with stderr=subprocess.PIPE")
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._reader.start()

    def lines(self) -> list[str]:
        return list(self._lines)

    def text(self) -> str:
        """Everything, once the process has exited (up to the end of the stream)."""
        self._reader.join(timeout=WAIT_SECONDS)
        return "".join(self._lines)

    def _read(self, stream: TextIO) -> None:
        for line in stream:
            self._lines.append(line)


def samples(*parts: str) -> Path:
    """A path in the reference samples; a missing tree fails the test that needs it, loudly
    (a test that skipped, or looped over no files, would pass without checking anything)."""
    path = SAMPLES.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"{path} is missing: these tests need the reference samples at {SAMPLES}"
            " (shared/samples beside the repository)",
            pytrace=False,
        )
    return path
