"""``manage.py create_token USERNAME``: the user's API token on stdout, nothing else."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create the user if needed and print its API token."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        user, _ = get_user_model().objects.get_or_create(username=options["username"])
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
