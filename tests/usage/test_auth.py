"""REST authentication: whose token opens the API, and the envelope of a refusal."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tests.conftest import Clock

pytestmark = [pytest.mark.django_db]

DASHBOARD = "/app/claude-usage/dashboard/"


def test_an_active_users_token_gets_the_dashboard(api: APIClient, clock: Clock) -> None:
    response = api.get(DASHBOARD)

    assert response.status_code == 200, response.content


def test_a_deactivated_users_token_is_refused_with_401_in_the_error_envelope(
    api: APIClient, user: User, clock: Clock
) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])

    response = api.get(DASHBOARD)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert set(response.json()) == {"error"}
    assert set(response.json()["error"]) == {"code", "message"}
    assert response.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
