"""WebSocket authentication: ``?token=KEY`` (browsers cannot set headers on a WebSocket),
an ``Authorization: Token KEY`` header, or the Django session of a logged-in user.

A session cookie rides along with any page's WebSocket, so session logins must come from an
allowed Origin; a token is a credential in itself and needs no such check.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host
from rest_framework.authtoken.models import Token


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        key = _token_from(scope)
        if key is not None:
            scope["user"] = await _user_for_token(key)
            scope["auth_method"] = "token"
        elif not _origin_allowed(scope):
            scope["user"] = AnonymousUser()
        else:
            scope["auth_method"] = "session"
        return await super().__call__(scope, receive, send)


def auth_stack(inner: Any) -> Any:
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))


def _token_from(scope: dict[str, Any]) -> str | None:
    query: dict[str, list[str]] = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, key = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "token" and key.strip():
                return key.strip()
    return None


@database_sync_to_async
def _user_for_token(key: str) -> Any:
    try:
        token = Token.objects.select_related("user").get(key=key)
    except Token.DoesNotExist:
        return AnonymousUser()
    return token.user if token.user.is_active else AnonymousUser()


def _origin_allowed(scope: dict[str, Any]) -> bool:
    origin = next(
        (value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"origin"),
        None,
    )
    if origin is None:
        return True  # not a browser: no cross-site request to forge
    if origin in settings.CORS_ALLOWED_ORIGINS:
        return True
    # The host as ALLOWED_HOSTS spells it: urlsplit().hostname drops the brackets of an
    # IPv6 address, and "http://[::1]:8000" would never match "[::1]".
    host, _port = split_domain_port(urlsplit(origin).netloc)
    return bool(host) and validate_host(host, settings.ALLOWED_HOSTS)
