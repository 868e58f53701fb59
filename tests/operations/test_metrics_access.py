"""Who may read ``/metrics``: with ``USAGE_METRICS_TOKEN``, a bearer of it; without, only a
client of this machine that came straight in."""

from __future__ import annotations

import pytest
from django.test import Client
from pytest_django import Settings
from rest_framework.authtoken.models import Token

pytestmark = [pytest.mark.django_db]

METRICS_TOKEN = "scraper-secret-0123456789"
ELSEWHERE = "203.0.113.7"


def status(remote: str = "127.0.0.1", **headers: str) -> int:
    return Client(REMOTE_ADDR=remote, headers=headers).get("/metrics").status_code


def test_without_a_token_a_loopback_client_reads_them() -> None:
    assert status("127.0.0.1") == 200
    assert status("::1") == 200


def test_without_a_token_any_other_client_is_refused() -> None:
    answer = Client(REMOTE_ADDR=ELSEWHERE).get("/metrics")

    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "Forwarded"])
def test_without_a_token_a_request_through_a_proxy_is_refused_even_from_loopback(
    header: str,
) -> None:
    # A reverse proxy on this machine that is not in USAGE_TRUSTED_PROXIES: its clients
    # would all look like 127.0.0.1.
    assert status("127.0.0.1", **{header: ELSEWHERE}) == 403


def test_with_a_token_its_bearer_reads_them_from_anywhere(settings: Settings) -> None:
    settings.USAGE_METRICS_TOKEN = METRICS_TOKEN

    assert status(ELSEWHERE, Authorization=f"Bearer {METRICS_TOKEN}") == 200
    assert status(ELSEWHERE, Authorization=f"bearer {METRICS_TOKEN}") == 200


@pytest.mark.parametrize(
    "authorization",
    ["", f"Bearer {METRICS_TOKEN}x", f"Token {METRICS_TOKEN}", "Bearer ", "Bearer é", "Bearer"],
)
def test_with_a_token_anything_else_is_401_even_from_loopback(
    settings: Settings, authorization: str
) -> None:
    settings.USAGE_METRICS_TOKEN = METRICS_TOKEN
    headers = {"Authorization": authorization} if authorization else {}

    answer = Client(REMOTE_ADDR="127.0.0.1", headers=headers).get("/metrics")

    assert answer.status_code == 401
    assert answer["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert answer.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"


def test_an_api_token_is_not_a_metrics_token(settings: Settings, user: object) -> None:
    settings.USAGE_METRICS_TOKEN = METRICS_TOKEN
    api_token = Token.objects.create(user=user).key  # type: ignore[misc]

    assert status(ELSEWHERE, Authorization=f"Token {api_token}") == 401
    assert status(ELSEWHERE, Authorization=f"Bearer {api_token}") == 401


def test_probes_need_no_credentials_from_anywhere() -> None:
    assert Client(REMOTE_ADDR=ELSEWHERE).get("/healthz").status_code == 200
    assert Client(REMOTE_ADDR=ELSEWHERE).get("/readyz").status_code == 200
