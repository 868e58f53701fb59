"""``manage.py rotate_token USERNAME``: replace the user's API token; print the new key, once.

The old key stops working at once: REST requests with it are answered 401, and open
WebSockets opened with it are closed with 4401 at their process's next resync
(``USAGE_WS_RESYNC_SECONDS``). The user must exist (``create_token`` creates users).
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Replace a user's API token and print the new one (the old one stops working)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        user = existing_user(options["username"])
        # One transaction: the user is never left without a token by a failure in between.
        with transaction.atomic():
            Token.objects.filter(user=user).delete()
            token = Token.objects.create(user=user)
        self.stdout.write(token.key)


def existing_user(username: str) -> Any:
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(f"no user {username!r}") from None
