"""docker-compose.yml and the Dockerfile, read as text (no Docker here): the services, one
database and one Redis for every process of the application, secrets only as required
substitutions, and an environment that the production profile's checks, ``check --deploy``
included, pass as it is."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO, run_manage

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
APPLICATION = ("migrate", "web", "worker")  # the services that run our image

# ${NAME}, ${NAME:-default}, ${NAME:?message}: compose's substitutions we use.
SUBSTITUTION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<kind>[-?])(?P<rest>[^}]*))?\}"
)
# What an operator's .env holds: exactly the substitutions compose refuses to go without.
OPERATOR = {
    "POSTGRES_PASSWORD": "5f0c8e1d9a7b4c3e2d1f0a9b8c7d6e5f",
    "SECRET_KEY": "Jq3v9-xR_7tLm2PzW8kYc4NhB6sDf1GaU5eTo0iVnXbKr_QwEjHy",
    "ALLOWED_HOSTS": "usage.example.com",
    "USAGE_TRUSTED_PROXIES": "172.18.0.1",
}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def environment(service: str) -> dict[str, str]:
    variables: dict[str, str] = services()[service]["environment"]
    return variables


def interpolate(text: str, values: dict[str, str]) -> str:
    """``text`` as compose makes it from ``values``; KeyError for a required one missing."""

    def one(match: re.Match[str]) -> str:
        name, kind = match["name"], match["kind"]
        if values.get(name):
            return values[name]
        if kind == "?":
            raise KeyError(name)
        return match["rest"] if kind == "-" else ""

    return SUBSTITUTION.sub(one, text)


def required_substitutions(text: str) -> set[str]:
    return {match["name"] for match in SUBSTITUTION.finditer(text) if match["kind"] == "?"}


def test_it_runs_postgresql_redis_the_migration_web_and_one_worker() -> None:
    assert set(services()) == {"postgres", "redis", *APPLICATION}
    web, worker, migrate = services()["web"], services()["worker"], services()["migrate"]

    assert web["command"][:3] == ["python", "-m", "backend.serve"]
    assert web["command"][3:5] == ["--host", "0.0.0.0"]
    assert worker["command"] == ["python", "manage.py", "run_worker"]
    assert migrate["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert migrate["restart"] == "no"
    # Exactly one worker: never replicated.
    assert "deploy" not in worker
    assert "scale" not in worker


def test_web_and_worker_start_after_the_migration_succeeded() -> None:
    for service in ("web", "worker"):
        depends_on = services()[service]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"
        assert depends_on["redis"]["condition"] == "service_healthy"
    assert services()["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_process_of_the_application_shares_one_database_one_redis_one_key() -> None:
    shared = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "USAGE_PROFILE")
    web = environment("web")

    for service in APPLICATION:
        assert {name: environment(service)[name] for name in shared} == {
            name: web[name] for name in shared
        }
    assert web["USAGE_PROFILE"] == "production"
    assert "@postgres:5432/" in web["DATABASE_URL"]
    assert web["REDIS_URL"].startswith("redis://redis:6379/")


def test_every_variable_the_production_profile_requires_is_set() -> None:
    from django.conf import settings

    for service in APPLICATION:
        assert set(settings.REQUIRED_IN_PRODUCTION) <= set(environment(service)), service
        # USAGE_TLS_PROXY is true unless the operator says otherwise: the proxy is needed.
        assert "USAGE_TRUSTED_PROXIES" in environment(service), service


def test_secrets_are_required_substitutions_never_literal() -> None:
    text = COMPOSE.read_text()
    web, postgres = environment("web"), services()["postgres"]["environment"]

    assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]+\}", web["SECRET_KEY"])
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", postgres["POSTGRES_PASSWORD"])
    assert re.search(r":\$\{POSTGRES_PASSWORD:\?[^}]+\}@", web["DATABASE_URL"])
    # Without the operator's values compose stops: exactly these must come from them.
    assert required_substitutions(text) == set(OPERATOR)


@pytest.mark.parametrize("missing", sorted(OPERATOR))
def test_a_missing_secret_stops_compose_naming_it(missing: str) -> None:
    values = {name: value for name, value in OPERATOR.items() if name != missing}

    with pytest.raises(KeyError, match=missing):
        interpolate(COMPOSE.read_text(), values)


def test_the_production_profile_passes_check_deploy_on_webs_environment(tmp_path: Path) -> None:
    """What compose gives web, with an operator's .env, and nothing else: every start-up
    check passes, and ``check --deploy`` has nothing to say."""
    variables = {name: interpolate(value, OPERATOR) for name, value in environment("web").items()}
    env = {"PATH": os.environ["PATH"], "USAGE_VAR_DIR": str(tmp_path / "var"), **variables}

    done = run_manage(env, "check", "--deploy")

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == "System check identified no issues (1 silenced).\n"


def test_the_image_is_python_311_slim_with_the_pinned_requirements_and_static_files() -> None:
    text = DOCKERFILE.read_text()

    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert "pip install --no-index --find-links=/wheels -r requirements.txt" in text
    assert "python manage.py collectstatic --noinput" in text
    assert "USAGE_PROFILE=production" in text  # said, though it is the default
    assert re.search(r"^USER claude-usage$", text, re.MULTILINE)  # not root
    cmd = re.search(r"^CMD (.+)$", text, re.MULTILINE)
    assert cmd is not None
    assert cmd[1] == '["python", "-m", "backend.serve", "--host", "0.0.0.0", "--port", "8000"]'


def test_the_image_leaves_out_what_the_server_does_not_run() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()

    assert {".git", ".venv", "var", "tests", ".env"} <= set(ignored)
