"""A 429 is answered after a pause, at no CPU cost: a client that retries at once, ignoring
``Retry-After``, asks about once a second per connection instead of as fast as the server
can refuse it.

Refusing is cheap, but not free: a request still goes through daphne, Django's middleware,
authentication (a token lookup) and the throttles before it is refused. A client in a tight
loop on keep-alive connections gets its next refusal as soon as the last one arrives, so it
alone kept both CPUs of a two-core machine busy refusing it (bench/abuse.py's request
flood: 3,000 refusals in 20 s, another user's reads at a p99 of 200 ms). The pause happens
after the request is over (its rate and in-flight counts are already settled) and holds
only a coroutine and the connection.

A client that honours ``Retry-After`` (our agent does) waits at least that long anyway: the
pause is the smaller of ``Retry-After`` and ``USAGE_REFUSAL_DELAY_SECONDS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

Message = Any  # ASGI's: a mapping; the servers' and Django's type hints differ
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Application = Callable[[Any, Any, Any], Awaitable[None]]

TOO_MANY_REQUESTS = 429


class DelayRefusals:
    """ASGI middleware around the HTTP application."""

    # The pause itself, replaceable in tests (a clock).
    sleep: Callable[[float], Awaitable[None]] = staticmethod(asyncio.sleep)

    def __init__(self, application: Application) -> None:
        self.application = application

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        async def send_after_a_pause(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 429:
                await self.sleep(pause(message.get("headers", [])))
            await send(message)

        await self.application(scope, receive, send_after_a_pause)


def pause(headers: list[tuple[bytes, bytes]]) -> float:
    """Seconds to hold a 429: its ``Retry-After``, at most the setting's cap."""
    cap = float(settings.USAGE_REFUSAL_DELAY_SECONDS)
    for name, value in headers:
        if name.lower() == b"retry-after":
            try:
                return max(0.0, min(float(value), cap))
            except ValueError:
                break
    return cap
