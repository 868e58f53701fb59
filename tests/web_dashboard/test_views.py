"""The page's view in process: it needs the collected static files, and says so without
them; it never touches the database or the API."""

from __future__ import annotations

from pathlib import Path

from django.core.management import call_command
from django.test import Client
from pytest_django.fixtures import Settings


def test_without_collected_static_files_the_page_says_what_to_run(
    settings: Settings, tmp_path: Path
) -> None:
    settings.STATIC_ROOT = tmp_path / "static"  # empty: nothing collected

    answer = Client().get("/")

    assert answer.status_code == 503
    assert b"collectstatic" in answer.content


def test_with_collected_static_files_the_page_names_them_hashed(
    settings: Settings, tmp_path: Path
) -> None:
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", interactive=False, verbosity=0)

    answer = Client().get("/", HTTP_HOST="localhost")

    assert answer.status_code == 200
    assert b'src="/static/web_dashboard/app.' in answer.content
    assert b'src="/static/web_dashboard/app.js"' not in answer.content
    assert "connect-src 'self' ws://localhost wss://localhost" in answer["Content-Security-Policy"]


def test_the_page_only_answers_reads(settings: Settings, tmp_path: Path) -> None:
    settings.STATIC_ROOT = tmp_path / "static"

    answer = Client().post("/")

    assert answer.status_code == 405
