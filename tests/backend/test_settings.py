"""backend/settings.py reads the environment and does nothing else: no directory, no Redis
server. A value it cannot parse keeps its text for the system checks (tests/backend/
test_checks.py) and leaves the default in place, so that Django can set up far enough to
run them."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.support import REPO

TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed
SETTINGS_FILE = REPO / "backend" / "settings.py"


def environment_without_redis(var_dir: Path) -> dict[str, str]:
    """The test run's environment with no REDIS_URL (the embedded default) and ``var_dir``."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env["USAGE_VAR_DIR"] = str(var_dir)
    return env


def test_importing_the_settings_creates_no_directory_and_starts_no_redis(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"  # where the embedded server and its registry would go

    loaded = subprocess.run(
        [sys.executable, "-c", "from backend.settings import REDIS_URL; print(repr(REDIS_URL))"],
        cwd=REPO,
        env=environment_without_redis(var_dir),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )

    assert loaded.stdout == "''\n"  # the embedded default, for an entry point to resolve
    assert not var_dir.exists()


def load_settings(monkeypatch: pytest.MonkeyPatch, **environment: str) -> dict[str, Any]:
    """A fresh run of backend/settings.py under ``environment``, as a namespace (the
    settings this test run uses stay as they are)."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


@pytest.mark.parametrize(
    ("name", "text", "default"),
    [
        ("USAGE_RETENTION_HOURS", "abc", 6.0),
        ("USAGE_RETENTION_HOURS", "", 6.0),
        ("USAGE_MAX_BODY_BYTES", "10MB", 10 * 1024 * 1024),
        ("USAGE_MAX_RECORDS", "1.5", 10_000),
        ("USAGE_WS_MIN_INTERVAL_SECONDS", "quarter", 0.25),
        ("USAGE_WS_RESYNC_SECONDS", "2s", 2.0),
        ("USAGE_WS_MAX_BUFFERED_BYTES", "1MiB", 1024 * 1024),
        ("DB_POOL_SIZE", "ten", 10),
        ("DEBUG", "ture", False),
        ("LOG_LEVEL", "verbose", "INFO"),
    ],
)
def test_a_value_that_does_not_parse_keeps_its_text_and_the_default(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str, default: object
) -> None:
    loaded = load_settings(monkeypatch, **{name: text})

    assert loaded["UNREADABLE_SETTINGS"] == {name: text}
    assert loaded[name] == default


@pytest.mark.parametrize("url", ["garbage", "mysql://user@host/db", "postgres://u@h:port/db", ""])
def test_a_database_url_that_is_not_sqlite_or_postgresql_keeps_its_text(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    loaded = load_settings(monkeypatch, DATABASE_URL=url)

    assert loaded["UNREADABLE_SETTINGS"] == {"DATABASE_URL": url}
    assert loaded["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("USAGE_RETENTION_HOURS", "0", 0.0),
        ("USAGE_RETENTION_HOURS", "-1", -1.0),  # parses; the range is the checks' business
        ("USAGE_MAX_RECORDS", " 500 ", 500),
        ("DEBUG", "yes", True),
        ("DEBUG", "0", False),
        ("LOG_LEVEL", "warning", "WARNING"),
    ],
)
def test_a_value_that_parses_is_taken(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str, value: object
) -> None:
    loaded = load_settings(monkeypatch, **{name: text})

    assert loaded["UNREADABLE_SETTINGS"] == {}
    assert loaded[name] == value


def test_the_pool_size_reaches_the_postgresql_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_settings(
        monkeypatch, DATABASE_URL="postgres://user@127.0.0.1:5432/usage", DB_POOL_SIZE="3"
    )

    assert loaded["DATABASES"]["default"]["OPTIONS"]["pool"] == {
        "min_size": 1,
        "max_size": 3,
        "timeout": 10,
    }


def test_the_var_dir_holds_the_default_sqlite_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)

    loaded = load_settings(monkeypatch, USAGE_VAR_DIR=str(tmp_path))

    assert loaded["DATABASES"]["default"]["NAME"] == str(tmp_path / "db.sqlite3")


def test_the_test_run_resolved_redis_before_the_settings_loaded() -> None:
    """tests/embedded_redis_setup.py: pytest-django loads the settings after it ran."""
    assert settings.REDIS_URL
    assert os.environ["REDIS_URL"] == settings.REDIS_URL
