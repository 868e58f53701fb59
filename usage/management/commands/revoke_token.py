"""``manage.py revoke_token USERNAME``: delete the user's API token.

Requests with it are answered 401 at once, and WebSockets opened with it are closed with
4401 at their process's next resync (``USAGE_WS_RESYNC_SECONDS``). The user keeps its
data; ``create_token`` gives it a new key. Revoking a user without a token does nothing.
"""

from typing import Any

from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from usage.management.commands.rotate_token import existing_user


class Command(BaseCommand):
    help = "Delete a user's API token (requests and open WebSockets with it stop working)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        user = existing_user(options["username"])
        deleted, _ = Token.objects.filter(user=user).delete()
        name = user.get_username()
        self.stdout.write(f"revoked the token of {name!r}" if deleted else f"{name!r} had no token")
