"""usage.api.authentication: DRF's token check while the database answers; the tokens that
passed, from memory, while it is down (usage.outage)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError, connection
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from usage import outage
from usage.api.authentication import RememberingTokenAuthentication, _remembered

pytestmark = [pytest.mark.django_db, pytest.mark.postgres_only]


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    _remembered.clear()
    yield
    outage.succeeded()
    _remembered.clear()


@pytest.fixture
def token() -> str:
    user = User.objects.create_user("alice")
    return str(Token.objects.create(user=user).key)


def database_down() -> None:
    outage.failed(OperationalError("connection refused"))
    assert connection.vendor == "postgresql"


def test_a_token_seen_before_the_outage_passes_during_it(token: str) -> None:
    check = RememberingTokenAuthentication()
    user, _ = check.authenticate_credentials(token)
    database_down()

    assert check.authenticate_credentials(token)[0] == user


def test_a_token_not_seen_before_the_outage_cannot_be_checked_during_it(token: str) -> None:
    database_down()
    with pytest.raises(OperationalError):
        RememberingTokenAuthentication().authenticate_credentials(token)


def test_a_token_deleted_before_the_outage_stays_refused_during_it(token: str) -> None:
    check = RememberingTokenAuthentication()
    check.authenticate_credentials(token)
    Token.objects.filter(key=token).delete()
    with pytest.raises(AuthenticationFailed):
        check.authenticate_credentials(token)
    database_down()

    with pytest.raises(OperationalError):
        check.authenticate_credentials(token)
