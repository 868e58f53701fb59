"""Request bodies over the limit are refused while daphne's HTTP parser reads them.

daphne (twisted.web) reads a request's whole body (in memory under 100 kB, else into a
temporary file) before the application runs, and then queues all of it for the
application at once, in memory. A limit checked by the application comes after the worker
has paid for the body: a 400 MB POST without a token to a missing path raised a worker's
peak memory by 413 MiB before its 404. So the limit is checked here, in daphne's request
object, as the parser hands it the length and then each piece of the body:

- the ingest paths (``events/``, and OTLP's ``/v1/logs``, ``/v1/metrics`` and ``/v1/traces``)
  may carry ``USAGE_MAX_BODY_BYTES``, every other path
  ``USAGE_MAX_OTHER_BODY_BYTES``: before authentication, before routing, on any path;
- a ``Content-Length`` over the limit is answered at once, before a byte of the body is
  read; a chunked body as soon as what arrived passes the limit;
- nothing past the limit is kept: a body within it goes where Twisted puts it (memory or a
  temporary file, bounded by the limit), the rest is never stored.

The answer is a 413 in the error envelope (``PAYLOAD_TOO_LARGE``, the code the ingest gives
a body it finds too large after decompression), with ``Connection: close``, and the request
never reaches the application. Then the connection only drains: most clients (http.client,
urllib, the agent) send their whole body before they read anything, and a server that
closes on unread data resets the connection, which can destroy the answer before the
client reads it. So the server half-closes (the client reads the 413 and then the end of
the stream), reads and drops up to ``DRAIN_BYTES`` more for at most ``DRAIN_SECONDS``, and
then aborts the connection: a client sending 400 MB is cut off after the drain.

This reads internals of daphne's ``WebRequest`` and Twisted's ``HTTPChannel`` (its request
line and parser state, its chunked decoder's buffer): requirements.txt pins the versions it
was written for, and tests/backend/test_body_limit.py fails if an upgrade moves them.
"""

from __future__ import annotations

import functools
import io
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import unquote

import orjson
from django.conf import settings
from django.urls import reverse

from usage.api.errors import PayloadTooLarge, envelope

log = logging.getLogger(__name__)

# What a refused connection may still send (and have dropped) before it is aborted: enough
# for a client that sends a whole batch over the limit before it reads the answer.
DRAIN_BYTES = 16 * 1024 * 1024
DRAIN_SECONDS = 30.0
# Twisted keeps a body under this in memory and a larger one in a temporary file.
IN_MEMORY_BYTES = 100_000
OTLP_URLS = ("otlp:logs", "otlp:metrics", "otlp:traces")
INGEST_URLS = ("claude_usage:events", *OTLP_URLS)

_installed = False


def install() -> None:
    """Guard daphne's HTTP requests (idempotent). Call it once Django is set up (it reads the
    settings and the URL conf) and before daphne serves: ``backend/asgi.py`` does."""
    global _installed
    if _installed:
        return
    from daphne.http_protocol import WebRequest

    WebRequest.gotLength = got_length
    WebRequest.handleContentChunk = guarded_chunk(WebRequest.handleContentChunk)
    WebRequest.requestReceived = unless_refused(WebRequest.requestReceived)
    WebRequest.connectionLost = stopping_the_drain(WebRequest.connectionLost)
    _installed = True


def limit_for(raw_path: bytes, root_path: str) -> int:
    """The most body bytes a request for ``raw_path`` (the request line's target) may carry.
    The path is decoded as daphne decodes it for Django, so ``%65vents/`` is the ingest."""
    if _route(raw_path, root_path) in _ingest_paths():
        return int(settings.USAGE_MAX_BODY_BYTES)
    return int(settings.USAGE_MAX_OTHER_BODY_BYTES)


def _route(raw_path: bytes, root_path: str) -> str:
    """The path Django will resolve (decoded, under the root path), or "" outside it."""
    path = unquote(raw_path.split(b"?", 1)[0].decode("ascii", "replace"))
    root = root_path.rstrip("/")
    return path[len(root) :] if path.startswith(root) else ""


@functools.cache
def _ingest_paths() -> frozenset[str]:
    return frozenset(reverse(name) for name in INGEST_URLS)


@functools.cache
def _otlp_paths() -> frozenset[str]:
    return frozenset(reverse(name) for name in OTLP_URLS)


def refusal(raw_path: bytes, root_path: str, content_type: str, message: str) -> tuple[bytes, str]:
    """The 413's body and its content type: the error envelope, or on OTLP's paths the
    ``google.rpc.Status`` OTLP/HTTP asks for, in the request's encoding (in JSON the envelope
    beside the Status's fields)."""
    error = envelope(PayloadTooLarge.default_code, message)
    if _route(raw_path, root_path) not in _otlp_paths():
        return orjson.dumps(error), "application/json"
    # Only here: the OTLP feed (and its protobuf classes) load when an OTLP body is refused.
    from otlp_feed import protocol
    from otlp_feed.views import GRPC_CODES

    media_type = content_type.split(";")[0].strip().lower()
    if media_type != protocol.PROTOBUF:
        media_type = protocol.JSON
    body = protocol.status(media_type, code=GRPC_CODES[413], message=message, extra=error)
    return body, media_type


@dataclass
class _BodyGuard:
    limit: int
    received: int = 0
    drain: _Drain | None = None  # set once the request is refused


def got_length(request: Any, length: int | None) -> None:
    """Twisted's ``Request.gotLength``: the headers are in, ``length`` is the declared
    ``Content-Length`` (None for a chunked body). Refuses a length over the limit, or makes
    the file the body goes to."""
    channel = request.channel
    guard = _BodyGuard(limit_for(channel._path, request.server.root_path))
    request._body_guard = guard
    if length is not None and length > guard.limit:
        request.content = io.BytesIO()  # stays empty: nothing of the body is read
        _refuse(request, f"Body of {length} bytes; the limit is {guard.limit} bytes")
        return
    request.content = _content_file(guard.limit if length is None else length)


def _content_file(size: int) -> IO[bytes]:
    if size < IN_MEMORY_BYTES:
        return io.BytesIO()
    return tempfile.TemporaryFile()


def guarded_chunk(handle: Callable[[Any, bytes], None]) -> Callable[[Any, bytes], None]:
    """Twisted's ``Request.handleContentChunk``, refusing the request once the body passes
    its limit and dropping everything after that."""

    @functools.wraps(handle)
    def handle_content_chunk(request: Any, data: bytes) -> None:
        guard: _BodyGuard = request._body_guard
        if guard.drain is not None:
            return
        guard.received += len(data)
        if guard.received > guard.limit:
            _refuse(request, f"Body over the limit of {guard.limit} bytes")
            return
        handle(request, data)

    return handle_content_chunk


def unless_refused(received: Callable[[Any, bytes, bytes, bytes], None]) -> Callable[..., None]:
    """Twisted's ``Request.requestReceived`` (the body is complete: hand the request to the
    application), never for a refused request, whose answer is already out."""

    @functools.wraps(received)
    def request_received(request: Any, command: bytes, path: bytes, version: bytes) -> None:
        guard: _BodyGuard | None = getattr(request, "_body_guard", None)
        if guard is None or guard.drain is None:
            received(request, command, path, version)

    return request_received


def stopping_the_drain(lost: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    @functools.wraps(lost)
    def connection_lost(request: Any, reason: Any) -> None:
        guard: _BodyGuard | None = getattr(request, "_body_guard", None)
        if guard is not None and guard.drain is not None:
            guard.drain.stop_waiting()
        lost(request, reason)

    return connection_lost


def _refuse(request: Any, message: str) -> None:
    """Answers 413 now and turns the connection into a drain: the channel parses nothing
    more, so this request never reaches the application and no later one is read."""
    channel = request.channel
    transport = channel.transport
    # Twisted answers "Expect: 100-continue" right after this (in allHeadersReceived): no
    # "100 Continue" may follow a final answer.
    request.requestHeaders.removeHeader(b"Expect")
    content_type = (request.requestHeaders.getRawHeaders(b"content-type") or [b""])[0]
    body, media_type = refusal(
        channel._path, request.server.root_path, content_type.decode("latin-1"), message
    )
    transport.write(_answer(body, media_type))
    drain = _Drain(transport, channel.callLater)
    request._body_guard.drain = drain
    # Instance attributes shadow the channel's parser: every byte still arriving, including
    # the rest of what the parser is reading now, goes to the drain.
    channel.dataReceived = drain.data_received
    channel.rawDataReceived = drain.data_received
    # A chunked decoder is in the middle of its buffer: empty it so that it stops there.
    decoder_buffer = getattr(channel._transferDecoder, "_buffer", None)
    if isinstance(decoder_buffer, bytearray):
        del decoder_buffer[:]
    _log_answer(request, channel, len(body))
    # The end of the answer: FIN once it is sent, while reading goes on (a TLS transport
    # may not half-close; its drain ends the same way).
    lose_write = getattr(transport, "loseWriteConnection", None)
    if lose_write is not None:
        lose_write()


def _answer(body: bytes, media_type: str) -> bytes:
    head = (
        b"HTTP/1.1 413 Request Entity Too Large\r\n"
        b"Content-Type: %s\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n"
    )
    return head % (media_type.encode("ascii"), len(body)) + body


def _log_answer(request: Any, channel: Any, size: int) -> None:
    """The access log's line for the answer, as daphne writes one for every response."""
    peer = channel.transport.getPeer()
    client = f"{peer.host}:{peer.port}" if hasattr(peer, "host") else None
    details = {
        "path": channel._path.decode("ascii", "replace"),
        "status": 413,
        "method": channel._command.decode("ascii", "replace"),
        "client": client,
        "time_taken": 0.0,
        "size": size,
    }
    try:
        request.server.log_action("http", "complete", details)
    except Exception:
        log.exception("cannot log a refused request")


class _Drain:
    """What is left of a refused connection: whatever arrives is dropped, up to
    ``DRAIN_BYTES`` and for ``DRAIN_SECONDS``; then the connection is aborted."""

    def __init__(self, transport: Any, call_later: Callable[..., Any]) -> None:
        self._transport = transport
        self._remaining = DRAIN_BYTES
        self._deadline = call_later(DRAIN_SECONDS, self._abort)

    def data_received(self, data: bytes) -> None:
        self._remaining -= len(data)
        if self._remaining < 0:
            self._abort()

    def stop_waiting(self) -> None:
        if self._deadline.active():
            self._deadline.cancel()

    def _abort(self) -> None:
        self.stop_waiting()
        self._transport.abortConnection()
