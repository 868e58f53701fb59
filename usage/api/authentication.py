"""DRF's token authentication, answered from memory while the database is down.

Whenever the database answers, every request is checked against it, exactly as DRF does (a
deleted token or a deactivated user is refused at once). Each token that passed is
remembered by this process (at most ``REMEMBERED`` of them, the least recently used
forgotten first); while the database is down (``usage.outage``), a remembered token is let
through, so that reads keep answering from Redis. A token deleted during an outage therefore
works until the database is back; an unknown one is answered ``503``: it cannot be checked.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

from django.db import OperationalError
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from usage import outage

REMEMBERED = 4096


class RememberingTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        if not outage.skip():
            try:
                user_and_token: tuple[Any, Any] = super().authenticate_credentials(key)
            except OperationalError as error:
                outage.failed(error)
            except AuthenticationFailed:  # the database answered: no such token (any more)
                outage.succeeded()
                _remembered.forget(key)
                raise
            except BaseException:
                outage.released()
                raise
            else:
                outage.succeeded()
                _remembered.put(key, user_and_token)
                return user_and_token
        known = _remembered.get(key)
        if known is None:
            raise OperationalError("the database is down and this token was not seen before")
        return known


class _Remembered:
    """Tokens that passed (user and token), by the key's digest, least recently used out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[bytes, tuple[Any, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, key: str, user_and_token: tuple[Any, Any]) -> None:
        digest = _digest(key)
        with self.lock:
            self.entries[digest] = user_and_token
            self.entries.move_to_end(digest)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)

    def get(self, key: str) -> tuple[Any, Any] | None:
        digest = _digest(key)
        with self.lock:
            found = self.entries.get(digest)
            if found is not None:
                self.entries.move_to_end(digest)
            return found

    def forget(self, key: str) -> None:
        with self.lock:
            self.entries.pop(_digest(key), None)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


_remembered = _Remembered(REMEMBERED)
