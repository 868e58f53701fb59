"""The profiles (backend/profiles.py): ``local`` (make run, make test) stands in an embedded
default for what is not configured; ``production`` (the default outside the Makefile) refuses
to start without what every process must share, one line per variable, in every entry point
and every process of the Procfile, and passes ``manage.py check --deploy`` clean; behind a
trusted proxy that terminates TLS, plain HTTP is redirected except for the probes."""

from __future__ import annotations

import http.client
import os
import runpy
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from backend import checks, profiles
from tests.support import API, REPO, ServerProcess, own_server, run_manage

TIMEOUT = 60.0  # a bound on waiting, never an expectation of speed
SETTINGS_FILE = REPO / "backend" / "settings.py"

# A production environment that passes every check: what docker-compose.yml gives web and
# worker (tests/operations/test_compose.py), with made-up hosts (no check connects).
DEPLOYED = {
    "DATABASE_URL": "postgres://claude_usage:pw@postgres.invalid:5432/claude_usage",
    "REDIS_URL": "redis://redis.invalid:6379/0",
    "SECRET_KEY": "Jq3v9-xR_7tLm2PzW8kYc4NhB6sDf1GaU5eTo0iVnXbKr_QwEjHy",
    "ALLOWED_HOSTS": "usage.example.com",
    "USAGE_TRUSTED_PROXIES": "10.0.0.0/8",
}
# What the production profile needs, each named on a line of its own when it is missing.
NEEDED = ["DATABASE_URL", "REDIS_URL", "SECRET_KEY", "USAGE_TRUSTED_PROXIES"]


def fresh_environment(tmp_path: Path, **variables: str) -> dict[str, str]:
    """Nothing of the test run's (its profile, its Redis, its database): what a container
    or a Procfile platform starts with, and ``variables``."""
    return {"PATH": os.environ["PATH"], "USAGE_VAR_DIR": str(tmp_path / "var"), **variables}


def embedded_redis_started(tmp_path: Path) -> bool:
    var = tmp_path / "var"
    return (var / "redis.db").exists() or (var / "redis.db.settings").exists()


# --- which profile ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "embedded"),
    [
        pytest.param({}, False, id="nothing-is-production"),
        pytest.param({"USAGE_PROFILE": "local"}, True, id="local"),
        pytest.param({"DEBUG": "true"}, True, id="debug-is-a-developers"),
        pytest.param({"DEBUG": " Yes "}, True, id="debug-in-any-of-its-words"),
        pytest.param({"DEBUG": "false"}, False, id="debug-off"),
        pytest.param({"DEBUG": "ture"}, False, id="debug-that-does-not-read"),
        pytest.param({"USAGE_PROFILE": "production", "DEBUG": "1"}, False, id="said-outright"),
        pytest.param({"USAGE_PROFILE": "Local"}, False, id="a-typo-is-not-local"),
        pytest.param({"USAGE_PROFILE": ""}, False, id="empty-is-not-local"),
    ],
)
def test_only_the_local_profile_allows_the_embedded_defaults(
    environment: dict[str, str], embedded: bool
) -> None:
    assert profiles.allows_embedded_defaults(environment) is embedded


def load_settings(monkeypatch: pytest.MonkeyPatch, **environment: str) -> dict[str, Any]:
    """A fresh run of backend/settings.py under ``environment`` and nothing of the profile's
    (the settings this test run uses stay as they are)."""
    for name in ("USAGE_PROFILE", "DEBUG", "USAGE_TLS_PROXY", *DEPLOYED):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


@pytest.mark.parametrize(
    ("environment", "profile"),
    [
        ({}, "production"),
        ({"DEBUG": "true"}, "local"),
        ({"USAGE_PROFILE": "local"}, "local"),
        ({"USAGE_PROFILE": "production", "DEBUG": "true"}, "production"),
    ],
)
def test_the_profile_is_production_unless_said_or_debugging(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], profile: str
) -> None:
    assert load_settings(monkeypatch, **environment)["USAGE_PROFILE"] == profile


def test_a_profile_that_does_not_read_is_kept_for_the_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = load_settings(monkeypatch, USAGE_PROFILE="prod")

    assert loaded["UNREADABLE_SETTINGS"] == {"USAGE_PROFILE": "prod"}


def test_the_settings_name_what_production_has_no_default_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(monkeypatch)["UNSET_SETTINGS"] == [
        "DATABASE_URL",
        "REDIS_URL",
        "SECRET_KEY",
    ]
    assert load_settings(monkeypatch, SECRET_KEY=" ")["UNSET_SETTINGS"] == [
        "DATABASE_URL",
        "REDIS_URL",
        "SECRET_KEY",
    ]
    assert load_settings(monkeypatch, **DEPLOYED)["UNSET_SETTINGS"] == []


def test_production_is_https_behind_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_settings(monkeypatch, **DEPLOYED)

    assert loaded["SECURE_SSL_REDIRECT"] is True
    assert loaded["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert loaded["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert loaded["SECURE_HSTS_PRELOAD"] is False
    assert loaded["SESSION_COOKIE_SECURE"] is True
    assert loaded["CSRF_COOKIE_SECURE"] is True
    # The scheme is daphne's, from trusted proxies only: Django would believe any client.
    assert "SECURE_PROXY_SSL_HEADER" not in loaded


def test_local_is_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_settings(monkeypatch, USAGE_PROFILE="local")

    assert loaded["SECURE_SSL_REDIRECT"] is False
    assert loaded["SECURE_HSTS_SECONDS"] == 0
    assert loaded["SESSION_COOKIE_SECURE"] is False


def test_production_may_serve_plain_http_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_settings(monkeypatch, USAGE_TLS_PROXY="false", USAGE_HSTS_SECONDS="600")

    assert loaded["SECURE_SSL_REDIRECT"] is False
    assert loaded["SECURE_HSTS_SECONDS"] == 0  # never on plain HTTP, whatever it says


# --- the checks, in this process -------------------------------------------------------------


def lines(**overrides: object) -> list[str]:
    with override_settings(**overrides):
        return [str(error.msg) for error in checks.check_settings()]


PRODUCTION_UNSET = {
    "USAGE_PROFILE": "production",
    "UNSET_SETTINGS": ["DATABASE_URL", "REDIS_URL", "SECRET_KEY"],
    "USAGE_TLS_PROXY": True,
    "USAGE_TRUSTED_PROXIES": [],
}


def test_production_without_configuration_gets_one_line_per_missing_variable() -> None:
    reported = lines(**PRODUCTION_UNSET)

    assert [line.split(" ", 1)[0] for line in reported] == NEEDED
    assert all(" is not set: " in line and "\n" not in line for line in reported)


def test_an_empty_database_url_gets_one_line_not_two() -> None:
    reported = lines(
        **PRODUCTION_UNSET,
        UNREADABLE_SETTINGS={"DATABASE_URL": ""},
    )

    naming = [line for line in reported if "DATABASE_URL" in line]
    assert naming == ["DATABASE_URL='': must be a sqlite:/// or postgres:// URL"]


def test_the_local_profile_needs_none_of_them() -> None:
    assert lines(**{**PRODUCTION_UNSET, "USAGE_PROFILE": "local", "USAGE_TLS_PROXY": False}) == []


def test_production_refuses_the_local_profiles_published_key() -> None:
    from django.conf import settings

    reported = lines(
        USAGE_PROFILE="production",
        UNSET_SETTINGS=[],
        SECRET_KEY=settings.LOCAL_SECRET_KEY,
        USAGE_TRUSTED_PROXIES=["10.0.0.1"],
    )

    assert reported == [checks.PUBLISHED_SECRET_KEY]


def test_tls_at_a_proxy_needs_a_trusted_proxy_whatever_the_profile() -> None:
    assert lines(USAGE_TLS_PROXY=True, USAGE_TRUSTED_PROXIES=[]) == [checks.TLS_PROXY_WITHOUT_PROXY]
    assert lines(USAGE_TLS_PROXY=True, USAGE_TRUSTED_PROXIES=["10.0.0.1"]) == []


def test_every_variable_production_needs_has_its_line() -> None:
    from django.conf import settings

    assert set(checks.NOT_SET_IN_PRODUCTION) == set(settings.REQUIRED_IN_PRODUCTION)


# --- real processes: refused --------------------------------------------------------------


def assert_one_line_each(stderr: str, missing: list[str]) -> None:
    for name in missing:
        naming = [line for line in stderr.splitlines() if f"{name} is not set" in line]
        assert len(naming) == 1, stderr
    assert "Traceback" not in stderr


def test_manage_py_without_configuration_names_each_missing_variable(tmp_path: Path) -> None:
    done = run_manage(fresh_environment(tmp_path), "check")

    assert done.returncode != 0
    assert_one_line_each(done.stderr, NEEDED)


@pytest.mark.parametrize("missing", NEEDED)
def test_each_missing_variable_alone_is_named_alone(tmp_path: Path, missing: str) -> None:
    deployed = {name: value for name, value in DEPLOYED.items() if name != missing}

    done = run_manage(fresh_environment(tmp_path, **deployed), "check")

    assert done.returncode != 0
    (line,) = [line for line in done.stderr.splitlines() if "is not set" in line]
    assert line.startswith(f"?: ({checks.CHECK_ID}) {missing} is not set: "), done.stderr


def test_the_launcher_without_configuration_says_only_what_is_missing_and_starts_nothing(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "backend.serve", "--port", "0", "--workers", "1"],
        cwd=REPO,
        env=fresh_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode == 1
    assert [line.split(" ", 1)[0] for line in done.stderr.splitlines()] == NEEDED
    assert_one_line_each(done.stderr, NEEDED)
    assert done.stdout == ""
    assert not embedded_redis_started(tmp_path)


def test_a_daphne_started_on_its_own_without_configuration_refuses(tmp_path: Path) -> None:
    daphne = Path(sys.executable).parent / "daphne"

    done = subprocess.run(
        [str(daphne), "-p", "0", "backend.asgi:application"],
        cwd=REPO,
        env=fresh_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode != 0
    assert [line.split(" ", 1)[0] for line in done.stderr.splitlines()] == NEEDED
    assert not embedded_redis_started(tmp_path)


def procfile() -> dict[str, list[str]]:
    processes = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip():
            name, command = line.split(":", 1)
            processes[name.strip()] = shlex.split(command.replace("$PORT", "0"))
    return processes


@pytest.mark.parametrize("process", ["release", "web", "worker"])
def test_every_procfile_process_without_configuration_refuses_to_start(
    tmp_path: Path, process: str
) -> None:
    """A Procfile platform sets PORT and nothing of ours: each process fails at once, and
    the worker starts no Redis of its own (which it would not share with web)."""
    command = procfile()[process]
    assert command[0] == "python"

    done = subprocess.run(
        [sys.executable, *command[1:]],
        cwd=REPO,
        env=fresh_environment(tmp_path, PORT="0"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert done.returncode != 0
    assert_one_line_each(done.stderr, NEEDED)
    assert not embedded_redis_started(tmp_path)
    assert not (tmp_path / "var" / "db.sqlite3").exists()


@pytest.mark.parametrize(
    ("variable", "text", "line"),
    [
        ("USAGE_PROFILE", "prod", "USAGE_PROFILE='prod': must be one of 'local', 'production'"),
        ("USAGE_TLS_PROXY", "maybe", "USAGE_TLS_PROXY='maybe': must be true or false"),
        ("USAGE_HSTS_SECONDS", "1y", "USAGE_HSTS_SECONDS='1y': must be a whole number >= 0"),
        ("USAGE_HSTS_SECONDS", "-1", "USAGE_HSTS_SECONDS=-1: must be a whole number >= 0"),
        ("USAGE_HSTS_PRELOAD", "si", "USAGE_HSTS_PRELOAD='si': must be true or false"),
    ],
)
def test_a_production_setting_that_does_not_read_stops_the_start(
    tmp_path: Path, variable: str, text: str, line: str
) -> None:
    done = run_manage(fresh_environment(tmp_path, **DEPLOYED, **{variable: text}), "check")

    assert done.returncode != 0
    assert f"?: ({checks.CHECK_ID}) {line}\n" in done.stderr


# --- real processes: accepted -----------------------------------------------------------------


def test_check_deploy_in_production_is_clean(tmp_path: Path) -> None:
    done = run_manage(fresh_environment(tmp_path, **DEPLOYED), "check", "--deploy")

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    # security.W021 (HSTS preload) is silenced: it is the domain owner's decision.
    assert done.stdout == "System check identified no issues (1 silenced).\n"


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_every_make_target_runs_in_the_local_profile() -> None:
    """``make run`` on a fresh clone: no configuration, the embedded defaults."""
    printing = "print-usage-profile: ; @echo $$USAGE_PROFILE"
    env = {key: value for key, value in os.environ.items() if key != "USAGE_PROFILE"}

    done = subprocess.run(
        ["make", "-s", "--eval", printing, "print-usage-profile"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )

    assert done.stdout == "local\n"


def test_debug_alone_is_a_developers_run_on_the_embedded_defaults(tmp_path: Path) -> None:
    done = run_manage(fresh_environment(tmp_path, DEBUG="true"), "check")

    assert done.returncode == 0, done.stderr


# --- HTTPS behind the proxy -------------------------------------------------------------------


@override_settings(SECURE_SSL_REDIRECT=True)
@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_the_probes_and_metrics_are_never_redirected(path: str) -> None:
    assert Client().get(path).status_code == 200


@override_settings(SECURE_SSL_REDIRECT=True)
def test_django_alone_does_not_believe_a_clients_forwarded_proto() -> None:
    """Only daphne sets the scheme, and only from a trusted proxy (backend/proxies.py)."""
    response = Client().get(f"{API}stats/", HTTP_X_FORWARDED_PROTO="https")

    assert response.status_code == 301
    assert response["Location"].startswith("https://")


@pytest.fixture
def behind_a_tls_proxy(tmp_path: Path) -> Iterator[ServerProcess]:
    variables = {"USAGE_TLS_PROXY": "true", "USAGE_TRUSTED_PROXIES": "127.0.0.1"}
    with own_server(tmp_path, "tls", workers=1, variables=variables) as server:
        yield server


def get(server: ServerProcess, path: str, **headers: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.slow
def test_behind_a_trusted_tls_proxy_plain_http_is_redirected_and_https_gets_hsts(
    behind_a_tls_proxy: ServerProcess,
) -> None:
    server = behind_a_tls_proxy
    forwarded = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}

    plain = get(server, f"{API}stats/")
    secure = get(server, f"{API}stats/", **forwarded)

    assert plain.status == 301
    assert plain.getheader("Location") == f"https://127.0.0.1:{server.port}{API}stats/"
    assert secure.status == 401  # through to the API, which asks for a token
    hsts = secure.getheader("Strict-Transport-Security")
    assert hsts == "max-age=31536000; includeSubDomains"


@pytest.mark.slow
def test_behind_a_trusted_tls_proxy_the_probes_answer_plain_http(
    behind_a_tls_proxy: ServerProcess,
) -> None:
    assert get(behind_a_tls_proxy, "/healthz").status == 200
    assert get(behind_a_tls_proxy, "/readyz").status == 200
    assert get(behind_a_tls_proxy, "/metrics").status == 200  # loopback, straight in
