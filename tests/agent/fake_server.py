"""An in-memory stand-in for the usage server, following the ingest contract.

Which copy of a (message.id, requestId) counts, and which records are refused, are decided by
the real server's own pure code (``usage.events.parse_record``, ``usage.dedupe.decide``): a
rule of its own here could drift from the server's, and the agent's tests, which check that
merging copies before sending changes nothing, would then check the agent against the wrong
rule. Both modules use only the standard library, so this works where Django is not
installed. `script` queues failures for the next event requests.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from usage.dedupe import Decision, Entry, decide
from usage.events import EventKind, InvalidRecord, UsageRecord, parse_record

TOKEN = "test-token"
# Script entries: an HTTP status to answer with, or one of these actions.
DROP = "drop"  # close the connection without storing anything
ACK_THEN_DROP = "ack-then-drop"  # store the batch, then lose the answer

Key = tuple[str, str]  # (message id, request id), "" for a missing request id
# The HTTP contract tests (test_transport.py) send lines of ids and usage alone, which the real
# server refuses for want of a model and a timestamp; a line without them gets these.
PLACEHOLDER_MODEL = "claude-sonnet-4-5-20250929"
PLACEHOLDER_TIMESTAMP = "2025-10-05T20:00:00Z"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeUsageServer:
    token: str = TOKEN
    max_records: int = 10_000
    reject: Callable[[dict[str, Any]], str | None] = lambda record: None
    script: list[int | str] = field(default_factory=list)
    retry_after: str | None = None
    dashboard: dict[str, Any] = field(default_factory=dict)
    # The counted copy of every (message id, request id), as it was sent.
    records: dict[Key, dict[str, Any]] = field(default_factory=dict)
    # What the real server's log would hold: the latest entry of every key, retracted included.
    entries: dict[Key, Entry] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    limits: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> FakeUsageServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def total_tokens(self) -> int:
        return sum(entry.record.total_tokens for entry in self.entries.values() if entry.counted)

    def ingest(self, records: list[dict[str, Any]], host: str = "") -> dict[str, Any]:
        answer: dict[str, Any] = {"accepted": 0, "duplicates": 0, "skipped": 0, "rejected": []}
        # Read once per request, as the real server does: it refuses a record dated more
        # than a day after it.
        now = datetime.now(UTC)
        with self.lock:
            self.batches.append(records)
            parsed = self._parse(records, host, now, answer)
            outcome = decide([record for record, _ in parsed], self.entries.values())
            for decision in outcome.decisions:
                self._apply(decision, sent=parsed[decision.source][1])
            answer["accepted"] = len(parsed) - outcome.duplicates
            answer["duplicates"] = outcome.duplicates
        return answer

    def _parse(
        self, records: list[dict[str, Any]], host: str, now: datetime, answer: dict[str, Any]
    ) -> list[tuple[UsageRecord, dict[str, Any]]]:
        """The usage records the real server would decide on, each beside what was sent."""
        parsed = []
        for index, raw in enumerate(records):
            try:
                problem = self.reject(raw)
                if problem:
                    raise InvalidRecord(problem)
                record = parse_record(_completed(raw), host=host, now=now)
            except InvalidRecord as error:
                rejection = {"code": error.code, "message": error.message}
                answer["rejected"].append({"index": index, "error": rejection})
                continue
            if record is None:
                answer["skipped"] += 1
            else:
                parsed.append((record, raw))
        return parsed

    def _apply(self, decision: Decision, sent: dict[str, Any]) -> None:
        """Log ``decision`` as the real server would; ``sent`` is the record that caused it."""
        record = decision.record
        key = (record.message_id, record.request_id)
        counted = decision.kind is not EventKind.RETRACTED
        self.entries[key] = Entry(record=record, revision=decision.revision, counted=counted)
        if counted:
            self.records[key] = sent
        else:
            del self.records[key]  # a sidechain replay, withdrawn when its parent's copy came


def _completed(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the placeholders where it has no model or no timestamp at all."""
    message = raw.get("message")
    if not isinstance(message, dict):
        return raw
    completed = {"timestamp": PLACEHOLDER_TIMESTAMP, **raw}
    completed["message"] = {"model": PLACEHOLDER_MODEL, **message}
    return completed


def _handler_for(server: FakeUsageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._record(b"")
            if self._authorized():
                self._answer(200, server.dashboard)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._record(body)
            if not self._authorized():
                return
            if self.path.endswith("/limits/"):
                server.limits.append(json.loads(body))
                self._answer(201, {"ok": True})
                return
            self._events(body)

        def _events(self, body: bytes) -> None:
            action = server.script.pop(0) if server.script else None
            if action == DROP:
                self.close_connection = True
                return
            if isinstance(action, int):
                self._error(action, "SCRIPTED", "scripted failure")
                return
            records = [json.loads(line) for line in gzip.decompress(body).splitlines()]
            if len(records) > server.max_records:
                self._error(413, "PAYLOAD_TOO_LARGE", "too many records")
                return
            answer = server.ingest(records, host=self.headers.get("X-Usage-Host", ""))
            if action == ACK_THEN_DROP:
                self.close_connection = True
                return
            self._answer(200, answer)

        def _record(self, body: bytes) -> None:
            headers = dict(self.headers.items())
            server.requests.append(Request(self.command, self.path, headers, body))

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Token {server.token}":
                return True
            self._error(401, "AUTHENTICATION_REQUIRED", "Invalid token.")
            return False

        def _error(self, status: int, code: str, message: str) -> None:
            headers = {"Retry-After": server.retry_after} if server.retry_after else {}
            self._answer(status, {"error": {"code": code, "message": message}}, headers)

        def _answer(
            self, status: int, payload: object, headers: dict[str, str] | None = None
        ) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
