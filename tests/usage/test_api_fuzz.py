"""Every endpoint of our OpenAPI schema, fuzzed by schemathesis from the schema itself: valid
and invalid parameters and bodies, with a token. No answer may be a 5xx, and every answer
the schema describes must match it (the error envelope included).

Runs through Django's WSGI handler in this process, on the real database and Redis: the
ingest's projection and the reads' Lua run for real. A few dozen cases per operation keep it
to seconds; hypothesis's database replays any failure found before.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import Clock

SCHEMA = "/app/claude-usage/schema/"


# The schema names the NDJSON body a string: sent as it is, like text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
# Loaded when pytest collects this module (pytest-django has set Django up by then); the
# schema view reads no table.
schema = schemathesis.openapi.from_wsgi(SCHEMA, get_wsgi_application())


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_endpoint_answers_a_server_error_or_off_its_schema(
    case: Any, user: User, clock: Clock
) -> None:
    token, _ = Token.objects.get_or_create(user=user)
    case.call_and_validate(
        headers={"Authorization": f"Token {token.key}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
