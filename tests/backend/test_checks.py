"""The system checks of the settings (backend/checks.py): every setting with a fixed set of
values or a range is refused outside them with one line naming the setting, its value and
what is allowed, in ``manage.py check`` and every command, and by a daphne started on its
own. (The launcher: tests/backend/test_serve.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.test import override_settings

from backend import checks
from tests.support import REPO, run_manage

TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed

# (setting, a value outside its rule, the line it gets)
REFUSED: list[tuple[str, object, str]] = [
    ("DEBUG", "yes", "DEBUG='yes': must be true or false"),
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL='LOUD': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("REDIS_URL", "localhost:6379", "REDIS_URL='localhost:6379': must be empty (the embedded"),
    ("REDIS_URL", "http://cache:6379", "REDIS_URL='http://cache:6379': must be empty"),
    ("REDIS_URL", "redis+cluster://a:7000,,b:7000", "REDIS_URL='redis+cluster://a:7000,,b:7000'"),
    (
        "REDIS_URL",
        "redis+cluster://a:7000/1",
        "REDIS_URL='redis+cluster://a:7000/1': must be empty (the embedded server), a redis://, "
        "rediss:// or unix:// URL, or a Redis Cluster's nodes: redis+cluster://host:port,"
        "host:port,... (rediss+cluster:// over TLS)",
    ),
    ("USAGE_REDIS_PREFIX", "", "USAGE_REDIS_PREFIX='': must be made of letters, digits"),
    ("USAGE_REDIS_PREFIX", "cu*", "USAGE_REDIS_PREFIX='cu*': must be made of letters"),
    ("USAGE_REDIS_PREFIX", "c[u]", "USAGE_REDIS_PREFIX='c[u]': must be made of letters"),
    ("USAGE_REDIS_PREFIX", "{u:1}", "USAGE_REDIS_PREFIX='{u:1}': must be made of letters"),
    ("USAGE_REDIS_PREFIX", "c u", "USAGE_REDIS_PREFIX='c u': must be made of letters"),
    (
        "USAGE_WINDOW_ALIGN",
        "sideways",
        "USAGE_WINDOW_ALIGN='sideways': must be one of 'hour', 'exact'",
    ),
    ("USAGE_WINDOW_ALIGN", "HOUR", "USAGE_WINDOW_ALIGN='HOUR': must be one of 'hour', 'exact'"),
    (
        "USAGE_DEFAULT_PLAN",
        "platinum",
        "USAGE_DEFAULT_PLAN='platinum': must be one of 'pro', 'max5', 'max20', 'custom'",
    ),
    (
        "USAGE_RETENTION_HOURS",
        -1.0,
        "USAGE_RETENTION_HOURS=-1.0: must be a number from 0 (keep everything) to 876000",
    ),
    ("USAGE_RETENTION_HOURS", 876_001.0, "USAGE_RETENTION_HOURS=876001.0: must be a number from 0"),
    ("USAGE_RETENTION_HOURS", float("inf"), "USAGE_RETENTION_HOURS=inf: must be a number from 0"),
    ("USAGE_RETENTION_HOURS", float("nan"), "USAGE_RETENTION_HOURS=nan: must be a number from 0"),
    ("USAGE_LOCAL_USER", "", "USAGE_LOCAL_USER='': must be a user name of 1 to 150 characters"),
    ("USAGE_LOCAL_USER", "x" * 151, "USAGE_LOCAL_USER='xxx"),
    ("USAGE_MAX_BODY_BYTES", 0, "USAGE_MAX_BODY_BYTES=0: must be a whole number >= 1"),
    ("USAGE_MAX_RECORDS", -5, "USAGE_MAX_RECORDS=-5: must be a whole number from 1 to 100000"),
    ("USAGE_MAX_RECORDS", 2.5, "USAGE_MAX_RECORDS=2.5: must be a whole number from 1 to 100000"),
    (
        "USAGE_MAX_RECORDS",
        100_001,
        "USAGE_MAX_RECORDS=100001: must be a whole number from 1 to 100000",
    ),
    (
        "USAGE_WS_MIN_INTERVAL_SECONDS",
        -0.25,
        "USAGE_WS_MIN_INTERVAL_SECONDS=-0.25: must be a number >= 0",
    ),
    ("USAGE_WS_RESYNC_SECONDS", 0.0, "USAGE_WS_RESYNC_SECONDS=0.0: must be a number > 0"),
    ("USAGE_WS_RESYNC_SECONDS", -2.0, "USAGE_WS_RESYNC_SECONDS=-2.0: must be a number > 0"),
    ("USAGE_WS_MAX_BUFFERED_BYTES", 0, "USAGE_WS_MAX_BUFFERED_BYTES=0: must be a whole number"),
    ("DB_POOL_SIZE", 0, "DB_POOL_SIZE=0: must be a whole number >= 1"),
    ("DB_POOL_SIZE", True, "DB_POOL_SIZE=True: must be a whole number >= 1"),
    ("USAGE_PROFILE", "Production", "USAGE_PROFILE='Production': must be one of 'local', 'pro"),
    ("USAGE_TLS_PROXY", "yes", "USAGE_TLS_PROXY='yes': must be true or false"),
    ("USAGE_HSTS_SECONDS", -1, "USAGE_HSTS_SECONDS=-1: must be a whole number >= 0"),
    ("USAGE_HSTS_INCLUDE_SUBDOMAINS", 1, "USAGE_HSTS_INCLUDE_SUBDOMAINS=1: must be true or false"),
]

# (setting, a value at the edge of its rule)
ACCEPTED: list[tuple[str, object]] = [
    ("DEBUG", True),
    ("LOG_LEVEL", "WARNING"),
    ("REDIS_URL", ""),
    ("REDIS_URL", "redis://127.0.0.1:6379/0"),
    ("REDIS_URL", "rediss://cache.example:6380/1"),
    ("REDIS_URL", "unix:///tmp/redis.sock?client_name=claude-usage-1"),
    ("REDIS_URL", "redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000"),
    ("REDIS_URL", "rediss+cluster://app:secret@cache-1:6380,[::1]:7000/0?ssl_cert_reqs=none"),
    ("USAGE_REDIS_PREFIX", "cu"),
    ("USAGE_REDIS_PREFIX", "app:claude-usage_2.v"),
    ("USAGE_WINDOW_ALIGN", "exact"),
    ("USAGE_DEFAULT_PLAN", "custom"),
    ("USAGE_DEFAULT_PLAN", "max20"),
    ("USAGE_RETENTION_HOURS", 0.0),
    ("USAGE_RETENTION_HOURS", 876_000.0),
    ("USAGE_LOCAL_USER", "x" * 150),
    ("USAGE_MAX_BODY_BYTES", 1),
    ("USAGE_MAX_RECORDS", 1),
    ("USAGE_MAX_RECORDS", 100_000),
    ("USAGE_WS_MIN_INTERVAL_SECONDS", 0.0),
    ("USAGE_WS_RESYNC_SECONDS", 0.01),
    ("USAGE_WS_MAX_BUFFERED_BYTES", 1),
    ("DB_POOL_SIZE", 1),
    ("USAGE_PROFILE", "local"),  # production: tests/backend/test_profiles.py
    ("USAGE_TLS_PROXY", False),
    ("USAGE_HSTS_SECONDS", 0),
    ("USAGE_HSTS_PRELOAD", True),
]


def lines(**overrides: object) -> list[str]:
    """What the check says of the settings with ``overrides``. (Overridden here, not with
    pytest-django's fixture, which would keep them for the conftest's Redis clean-up.)"""
    with override_settings(**overrides):
        return [error.msg for error in checks.check_settings()]


def test_the_default_settings_pass() -> None:
    assert lines() == []


@pytest.mark.parametrize(("setting", "value", "line"), REFUSED)
def test_a_value_outside_its_rule_gets_one_line(setting: str, value: object, line: str) -> None:
    (reported,) = lines(**{setting: value})

    assert reported.startswith(line)
    assert "\n" not in reported


@pytest.mark.parametrize(("setting", "value"), ACCEPTED)
def test_a_value_inside_its_rule_passes(setting: str, value: object) -> None:
    assert lines(**{setting: value}) == []


def test_every_rule_names_a_setting_that_the_settings_read() -> None:
    from django.conf import settings

    for rule in checks.RULES:
        assert rule.accepts is None or hasattr(settings, rule.setting), rule.setting


def test_a_value_that_did_not_parse_is_reported_as_its_text_under_its_rule() -> None:
    unreadable = {"USAGE_RETENTION_HOURS": "abc", "DATABASE_URL": "garbage"}

    assert sorted(lines(UNREADABLE_SETTINGS=unreadable)) == [
        "DATABASE_URL='garbage': must be a sqlite:/// or postgres:// URL",
        "USAGE_RETENTION_HOURS='abc': must be a number from 0 (keep everything) to 876000",
    ]


def test_a_value_that_did_not_parse_without_a_rule_is_still_reported() -> None:
    unreadable = {"USAGE_SOMETHING_NEW": "x"}

    assert lines(UNREADABLE_SETTINGS=unreadable) == ["USAGE_SOMETHING_NEW='x': must be readable"]


@override_settings(USAGE_WINDOW_ALIGN="sideways")
def test_the_check_is_registered_and_stops_a_start() -> None:
    problems = [problem for problem in run_checks() if problem.id == checks.CHECK_ID]

    assert [problem.is_serious() for problem in problems] == [True]
    assert checks.start_up_errors() == [
        "USAGE_WINDOW_ALIGN='sideways': must be one of 'hour', 'exact'"
    ]


# --- real processes ----------------------------------------------------------------------


def environment(tmp_path: Path, **variables: str) -> dict[str, str]:
    """The test run's environment, a var dir of its own, and ``variables``."""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    return {**env, "USAGE_VAR_DIR": str(tmp_path / "var"), **variables}


@pytest.mark.parametrize(
    ("variable", "text", "line"),
    [
        (
            "USAGE_WINDOW_ALIGN",
            "sideways",
            "USAGE_WINDOW_ALIGN='sideways': must be one of 'hour', 'exact'",
        ),
        (
            "USAGE_DEFAULT_PLAN",
            "platinum",
            "USAGE_DEFAULT_PLAN='platinum': must be one of 'pro', 'max5', 'max20', 'custom'",
        ),
        (
            "USAGE_RETENTION_HOURS",
            "-1",
            "USAGE_RETENTION_HOURS=-1.0: must be a number from 0 (keep everything) to 876000",
        ),
        (
            "USAGE_RETENTION_HOURS",
            "abc",
            "USAGE_RETENTION_HOURS='abc': must be a number from 0 (keep everything) to 876000",
        ),
        ("DB_POOL_SIZE", "ten", "DB_POOL_SIZE='ten': must be a whole number >= 1"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL='loud': must be one of DEBUG, INFO, WARNING, ERROR"),
        ("DATABASE_URL", "garbage", "DATABASE_URL='garbage': must be a sqlite:/// or postgres://"),
    ],
)
def test_manage_py_check_fails_with_one_line_naming_the_setting(
    tmp_path: Path, variable: str, text: str, line: str
) -> None:
    done = run_manage(environment(tmp_path, **{variable: text}), "check")

    assert done.returncode != 0
    naming = [reported for reported in done.stderr.splitlines() if variable in reported]
    assert len(naming) == 1, done.stderr
    assert naming[0].startswith(f"?: ({checks.CHECK_ID}) {line}"), done.stderr
    assert "Traceback" not in done.stderr


def test_a_command_refuses_to_run_with_a_bad_value(tmp_path: Path) -> None:
    """Not only ``check``: ``migrate`` creates no database with a bad value."""
    env = environment(tmp_path, USAGE_DEFAULT_PLAN="platinum")

    done = run_manage(env, "migrate", "--noinput")

    assert done.returncode != 0
    assert "USAGE_DEFAULT_PLAN='platinum'" in done.stderr
    assert not (tmp_path / "var" / "db.sqlite3").exists()


def test_a_daphne_started_on_its_own_refuses_to_serve_with_a_bad_value(tmp_path: Path) -> None:
    daphne = Path(sys.executable).parent / "daphne"
    env = environment(tmp_path, USAGE_WINDOW_ALIGN="sideways")

    done = subprocess.run(
        [str(daphne), "-p", "0", "backend.asgi:application"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode != 0
    assert done.stderr == "USAGE_WINDOW_ALIGN='sideways': must be one of 'hour', 'exact'\n"
    assert done.stdout == ""
