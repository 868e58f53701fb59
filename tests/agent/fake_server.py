"""An in-memory stand-in for the usage server, following the ingest contract.

Idempotent per (message.id, requestId) like the real one, keeping the copy with the largest
token total. `script` queues failures for the next event requests.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "test-token"
# Script entries: an HTTP status to answer with, or one of these actions.
DROP = "drop"  # close the connection without storing anything
ACK_THEN_DROP = "ack-then-drop"  # store the batch, then lose the answer


def _total(record: dict[str, Any]) -> int:
    usage = record.get("message", {}).get("usage", {})
    keys = (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    )
    return sum(int(usage.get(key, 0) or 0) for key in keys)


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
    records: dict[tuple[Any, Any], dict[str, Any]] = field(default_factory=dict)
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
        return sum(_total(record) for record in self.records.values())

    def ingest(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        answer: dict[str, Any] = {"accepted": 0, "duplicates": 0, "skipped": 0, "rejected": []}
        with self.lock:
            self.batches.append(records)
            for index, record in enumerate(records):
                self._store(index, record, answer)
        return answer

    def _store(self, index: int, record: dict[str, Any], answer: dict[str, Any]) -> None:
        problem = self.reject(record)
        if problem:
            error = {"code": "VALIDATION_ERROR", "message": problem}
            answer["rejected"].append({"index": index, "error": error})
            return
        key = (record["message"].get("id"), record.get("requestId"))
        known = self.records.get(key)
        if known is None:
            answer["accepted"] += 1
        else:
            answer["duplicates"] += 1
        if known is None or _total(record) > _total(known):
            self.records[key] = record


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
            answer = server.ingest(records)
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
