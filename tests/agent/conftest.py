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
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from tests import support
from tests.support import REPO

SERVER_PYTHON = support.VENV_PYTHON
DAPHNE = SERVER_PYTHON.parent / "daphne"
AGENT_SRC = REPO / "agent" / "src"

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


def server_env(workdir: Path) -> dict[str, str]:
    """A private database and Redis namespace, retention off (the samples are from 2025)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CLAUDE_USAGE")}
    if env.get("REDIS_URL", "").startswith("unix://"):
        # The test run's embedded Redis keeps its keys in the repository's var/: the server
        # gets an embedded one of its own instead, below, gone with the test's directory.
        del env["REDIS_URL"]
    env.update(
        USAGE_PROFILE="local",  # the embedded defaults (backend/profiles.py): no SECRET_KEY
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        USAGE_RETENTION_HOURS="0",
        USAGE_VAR_DIR=str(workdir / "var"),  # its embedded Redis lives here, if it has one
        # A namespace of its own when REDIS_URL points at a shared Redis (the CI's second run).
        USAGE_REDIS_PREFIX=f"agentit{uuid.uuid4().hex[:12]}",
        DJANGO_SETTINGS_MODULE="backend.settings",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """`manage.py` with the server's interpreter, which may not be the one running the tests."""
    return support.manage(env, *args, python=SERVER_PYTHON)


@dataclass
class ServerProcess(support.ServerProcess):
    """The real server, run by the repository's .venv; `token` is the user alice's."""

    python: Path = SERVER_PYTHON
    token: str = ""


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
    token = manage(env, "create_token", "alice").strip()
    server = ServerProcess(env, workdir / "server.log", workers=workers, token=token)
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
