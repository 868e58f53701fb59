"""WebSocket authentication: ``?token=KEY`` (browsers cannot set headers on a WebSocket),
an ``Authorization: Token KEY`` header, or the Django session of a logged-in user.

A session cookie rides along with any page's WebSocket, so session logins must come from an
allowed Origin; a token is a credential in itself and needs no such check.

Credentials are checked when a connection opens, and again on every resync of the hub
(``revoked``): a token deleted or replaced (``manage.py revoke_token`` / ``rotate_token``) or
a user deactivated ends that user's connections within one resync period.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib.auth import get_user_model
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
            scope["auth_token"] = key  # checked again on every resync (revoked)
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


def revoked(credentials: list[tuple[int, str | None]]) -> set[tuple[int, str | None]]:
    """Those of ``credentials`` (user id, token key or None for a session) that no longer
    hold: the user is gone or inactive, or the token no longer exists for that user. Two
    queries, whatever the number of connections."""
    user_ids = {user_id for user_id, _ in credentials}
    keys = {key for _, key in credentials if key is not None}
    active = set(
        get_user_model()
        .objects.filter(pk__in=user_ids, is_active=True)
        .values_list("pk", flat=True)
    )
    tokens = set(Token.objects.filter(key__in=keys).values_list("user_id", "key"))
    return {
        (user_id, key)
        for user_id, key in credentials
        if user_id not in active or (key is not None and (user_id, key) not in tokens)
    }


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
