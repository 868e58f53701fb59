"""HTTP to the usage server: gzip'd NDJSON batches in, the error envelope mapped to exceptions.

Standard library only (urllib): one request at a time is all the agent needs.
"""

from __future__ import annotations

import gzip
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

from claude_usage_agent import __version__

EVENTS_PATH = "/app/claude-usage/events/"
LIMITS_PATH = "/app/claude-usage/limits/"
DASHBOARD_PATH = "/app/claude-usage/dashboard/"

# A lighter level than gzip's default 6: a slightly larger body for much less CPU, and the
# agent's CPU is what a first backfill waits for.
GZIP_LEVEL = 3

# Statuses worth retrying unchanged: the request may well succeed later.
TRANSIENT_STATUSES = frozenset({408, 425, 429})


class ServerError(Exception):
    """The server did not accept a request."""

    code = "SERVER_ERROR"


class AuthenticationFailedError(ServerError):
    """401/403: retrying cannot help, the token must change."""

    code = "AUTHENTICATION_REQUIRED"


class RequestRefusedError(ServerError):
    """Another 4xx (404, 405...): most likely a wrong --server URL; retrying cannot help."""


class PayloadTooLargeError(ServerError):
    """413: the batch must be split."""

    code = "PAYLOAD_TOO_LARGE"


class BatchInvalidError(ServerError):
    """400: something in the batch is unacceptable; splitting finds which record."""

    code = "VALIDATION_ERROR"


class TransientError(ServerError):
    """Network trouble, timeouts, 5xx, 429: retry later, honouring `retry_after` if given.
    `status` is the HTTP status when the server answered (None for network trouble)."""

    def __init__(
        self, message: str, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status

    @property
    def server_failed(self) -> bool:
        """The server (or a proxy for it) failed on this request: a 5xx, but not 503, which
        says it cannot take any request now (the event log is down, say), whatever it holds."""
        return self.status is not None and self.status >= 500 and self.status != 503


@dataclass(frozen=True)
class Rejection:
    index: int
    code: str
    message: str


@dataclass(frozen=True)
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: tuple[Rejection, ...] = ()
    # Older than the server's retention: dropped on arrival (optional in the answer).
    expired: int = 0

    def merged(self, later: IngestResult, offset: int) -> IngestResult:
        """Combine the answers for the halves of a split batch; `later` started at `offset`."""
        shifted = tuple(
            Rejection(item.index + offset, item.code, item.message) for item in later.rejected
        )
        return IngestResult(
            self.accepted + later.accepted,
            self.duplicates + later.duplicates,
            self.skipped + later.skipped,
            self.rejected + shifted,
            self.expired + later.expired,
        )


@dataclass(frozen=True)
class Endpoint:
    server: str
    token: str
    host_name: str
    timeout: float = 30.0

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Token {self.token}",
            "X-Usage-Host": self.host_name,
            "User-Agent": f"claude-usage-agent/{__version__}",
            "Accept": "application/json",
        }


def encode_batch(lines: Sequence[bytes]) -> bytes:
    """The request body: NDJSON, gzip'd (transcript records compress about tenfold)."""
    return gzip.compress(b"".join(line + b"\n" for line in lines), compresslevel=GZIP_LEVEL)


class EncodedLines(tuple[bytes, ...]):
    """Lines with their request body compressed ahead of sending: the reader does it while
    the previous batch is on the wire. A slice (a halved batch) is a plain tuple again and
    is compressed when it is sent."""

    body: bytes

    def __new__(cls, lines: Sequence[bytes]) -> EncodedLines:
        encoded = super().__new__(cls, lines)
        encoded.body = encode_batch(encoded)
        return encoded


def post_events(endpoint: Endpoint, lines: Sequence[bytes]) -> IngestResult:
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    body = lines.body if isinstance(lines, EncodedLines) else encode_batch(lines)
    answer = exchange(endpoint, "POST", EVENTS_PATH, body, headers)
    return parse_ingest_result(answer)


def post_json(endpoint: Endpoint, path: str, payload: object) -> Any:
    body = json.dumps(payload).encode()
    return exchange(endpoint, "POST", path, body, {"Content-Type": "application/json"})


def get_json(endpoint: Endpoint, path: str) -> Any:
    return exchange(endpoint, "GET", path, None, {})


def exchange(
    endpoint: Endpoint, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
) -> Any:
    """One request; the JSON answer, or a ServerError subclass saying what to do next."""
    url = endpoint.server + path
    request = urllib.request.Request(
        url, data=body, method=method, headers={**endpoint.headers(), **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=endpoint.timeout) as response:
            raw = response.read()
    # HTTPError is also a URLError and an OSError: it must be caught first.
    except urllib.error.HTTPError as error:
        raise classify_http_error(error.code, error.headers, _read_body(error)) from None
    except (OSError, http.client.HTTPException) as error:
        raise TransientError(f"cannot reach {url}: {_reason(error)}") from error
    return _decode_json(raw, url)


def _read_body(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read()
    except (OSError, http.client.HTTPException):
        return b""


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error or type(error).__name__)


def _decode_json(raw: bytes, url: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        # A proxy's HTML page or a half-sent answer: nothing was confirmed, so try again.
        raise TransientError(f"unreadable answer from {url}: {raw[:80]!r}") from None


def error_message(body: bytes) -> tuple[str | None, str]:
    """`(code, message)` from the server's error envelope, or the raw text."""
    try:
        error = json.loads(body)["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, TypeError, KeyError):
        return None, body[:200].decode(errors="replace").strip()


def classify_http_error(status: int, headers: Message, body: bytes) -> ServerError:
    """Map a non-2xx answer to what the agent should do about it."""
    code, message = error_message(body)
    text = f"HTTP {status} {code or ''}: {message}".replace(" :", ":")
    if status in (401, 403):
        return AuthenticationFailedError(f"the server refused the token ({text})")
    if status == 413:
        return PayloadTooLargeError(text)
    if status == 400:
        return BatchInvalidError(text)
    if status in TRANSIENT_STATUSES or status >= 500:
        return TransientError(text, parse_retry_after(headers.get("Retry-After")), status)
    return RequestRefusedError(f"{text} (is the server URL right?)")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def parse_ingest_result(answer: Any) -> IngestResult:
    """Read the 200 answer; anything else is treated as no answer at all."""
    try:
        rejected = tuple(_parse_rejection(item) for item in answer.get("rejected") or ())
        return IngestResult(
            int(answer.get("accepted", 0)),
            int(answer.get("duplicates", 0)),
            int(answer.get("skipped", 0)),
            rejected,
            int(answer.get("expired", 0)),
        )
    except (AttributeError, TypeError, ValueError, KeyError):
        raise TransientError(f"unexpected answer to a batch: {str(answer)[:200]}") from None


def _parse_rejection(item: Any) -> Rejection:
    error = item.get("error") or {}
    return Rejection(int(item["index"]), str(error.get("code", "")), str(error.get("message", "")))
