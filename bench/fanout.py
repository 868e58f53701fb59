"""WebSocket fan-out benchmark: one daphne process, thousands of dashboards, a busy agent.

    .venv/bin/python -m bench.fanout                       # every scenario, 20 s each
    .venv/bin/python -m bench.fanout --scenarios 1k --seconds 10

Each scenario gets a fresh PostgreSQL database ``fanout`` (created and dropped here) and the
Redis database ``redis://127.0.0.1:6379/8`` (flushed at start), starts one daphne process,
connects N users x 10 WebSocket dashboards (``websockets``, spread over client processes),
and runs an agent that ingests one new record per batch, round-robin over the users, at a
fixed rate. For every ingest the agent notes when its HTTP answer arrived and the answer's
``position``; every dashboard notes when each frame arrived and its ``position``. The delay
of an ingest on a dashboard is the time from the HTTP answer to the first frame on that
dashboard whose position is at least the ingest's. An ingest that a dashboard of its user
never saw within GRACE_SECONDS after the end is lost.

The "stalled" scenarios add dashboards that complete the WebSocket handshake and never read
again (a raw socket with a small receive buffer), for users whose snapshots are big (many
models), and report the server's RSS with the backpressure guard on and off.

Only 127.0.0.1 is contacted; every loop and wait is bounded; every process started here is
stopped here. Times are ``time.monotonic()``, which Linux shares between processes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import itertools
import multiprocessing
import os
import platform
import re
import resource
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import redis
from psycopg import sql
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.support import ServerProcess, manage

PG_SERVER = "postgres://postgres@127.0.0.1:5432"
DATABASE = "fanout"
REDIS_URL = "redis://127.0.0.1:6379/8"
REDIS_PREFIX = "fanout"
API = "/app/claude-usage/"
WS_PATH = "/ws/claude-usage/"
GRACE_SECONDS = 5.0
SERVER_START_SECONDS = 60.0
MANAGE_SECONDS = 300.0
CONNECT_SECONDS = 300.0  # every dashboard connected and holding its first snapshot
CONNECT_CONCURRENCY = 40  # handshakes in flight per client process (daphne's backlog is 50)
CONNECT_ATTEMPTS = 5
AGENT_CONCURRENCY = 16
STALLED_RECEIVE_BUFFER = 4096
MODELS = ("claude-sonnet-4-20250514", "claude-opus-4-1-20250805", "claude-3-5-haiku-20241022")
POSITION = re.compile(r'"position":(-?\d+)')

Frames = list[tuple[int, float]]  # (position, arrival time) per frame, in arrival order


@dataclass(frozen=True)
class Scenario:
    name: str
    users: int
    connections_per_user: int = 10
    stalled: int = 0  # extra dashboards that never read, one per "heavy" user
    heavy_models: int = 0  # models in each heavy user's history: the snapshot's size
    heavy_rate: float = 0.0  # extra ingests per second, round-robin over the heavy users
    max_buffered_bytes: int | None = None  # USAGE_WS_MAX_BUFFERED_BYTES for the server


SCENARIOS = {
    "1k": Scenario("1k", users=100),
    "5k": Scenario("5k", users=500),
    "stalled": Scenario(
        "stalled",
        users=100,
        stalled=10,
        heavy_models=600,
        heavy_rate=20.0,
        max_buffered_bytes=256 * 1024,
    ),
    "stalled-unguarded": Scenario(
        "stalled-unguarded",
        users=100,
        stalled=10,
        heavy_models=600,
        heavy_rate=20.0,
        max_buffered_bytes=2**40,  # the guard never triggers: what daphne does alone
    ),
}


@dataclass(frozen=True)
class Ingest:
    user: int
    position: int
    answered_at: float
    seconds: float  # request duration


@dataclass
class ClientReport:
    process: int
    frames: dict[int, Frames]
    failed: list[str]
    closed_by_server: int
    cpu_seconds: float
    loop_lag_max: float
    loop_lag_p99: float


@dataclass
class Outcome:
    scenario: Scenario
    seconds: float
    ingests: list[Ingest] = field(default_factory=list)
    heavy_ingests: int = 0
    ingest_errors: int = 0
    reports: list[ClientReport] = field(default_factory=list)
    rss_idle: int = 0
    rss_connected: int = 0
    rss_peak: int = 0
    rss_timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds, bytes)
    rss_end: int = 0
    server_cpu: float = 0.0
    connect_seconds: float = 0.0
    stalled_closed: int = 0
    stalled_open: int = 0
    snapshot_bytes: dict[str, int] = field(default_factory=dict)


# --- infrastructure ----------------------------------------------------------------------


def raise_open_files_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    try:
        yield f"{PG_SERVER}/{DATABASE}"
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(drop)


def server_env(database_url: str, scenario: Scenario, var_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "USAGE_PROFILE": "local",  # plain HTTP and the local key (backend/profiles.py)
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "USAGE_REDIS_PREFIX": REDIS_PREFIX,
        "USAGE_VAR_DIR": str(var_dir),
        "LOG_LEVEL": "WARNING",
        "USAGE_THROTTLE_READ_PER_MINUTE": "0",  # its clients read far faster than one user
    }
    if scenario.max_buffered_bytes is not None:
        env["USAGE_WS_MAX_BUFFERED_BYTES"] = str(scenario.max_buffered_bytes)
    return env


CREATE_USERS = """
import json, os
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
User = get_user_model()
count = int(os.environ["FANOUT_USERS"])
User.objects.bulk_create([User(username=f"fan{i:05d}") for i in range(count)])
users = list(User.objects.filter(username__startswith="fan").order_by("username"))
tokens = Token.objects.bulk_create([Token(key=Token.generate_key(), user=u) for u in users])
print(json.dumps([token.key for token in tokens]))
"""


def create_users(env: dict[str, str], count: int) -> list[str]:
    variables = {**env, "FANOUT_USERS": str(count)}
    output = manage(variables, "shell", "-c", CREATE_USERS, timeout=MANAGE_SECONDS)
    tokens: list[str] = orjson.loads(output.strip().splitlines()[-1])
    return tokens


@contextlib.contextmanager
def daphne(env: dict[str, str], log: Path) -> Iterator[ServerProcess]:
    """One daphne process: the fan-out of one process is what is measured."""
    server = ServerProcess(env, log)
    try:
        server.start(SERVER_START_SECONDS)
        yield server
    finally:
        server.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


# --- records -----------------------------------------------------------------------------


class Records:
    """Claude Code transcript lines, each with a new message id."""

    def __init__(self) -> None:
        self.serial = 0
        self.run = uuid.uuid4().hex[:12]  # ids unique across Records instances

    def line(self, model: str, *, ago_seconds: float = 30.0) -> dict[str, object]:
        self.serial += 1
        moment = datetime.now(tz=UTC) - timedelta(seconds=ago_seconds)
        return {
            "type": "assistant",
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "sessionId": f"fanout-session-{self.serial % 7}",
            "cwd": "/home/dev/fanout",
            "requestId": f"req_{self.run}_{self.serial}",
            "message": {
                "id": f"msg_{self.run}_{self.serial}",
                "model": model,
                "usage": {
                    "input_tokens": 100 + self.serial % 50,
                    "output_tokens": 20 + self.serial % 30,
                    "cache_creation_input_tokens": 500,
                    "cache_read_input_tokens": 4000,
                },
            },
        }

    def body(self, lines: Sequence[dict[str, object]]) -> bytes:
        return b"\n".join(orjson.dumps(line) for line in lines)


def heavy_model(index: int) -> str:
    return f"claude-bench-model-with-a-rather-long-name-{index:04d}"


def seed(
    port: int, tokens: Sequence[str], heavy: Sequence[str], models: int, records: Records
) -> None:
    """Every user gets some history; a heavy user's spans ``models`` models."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        for index, token in enumerate(tokens):
            lines = [
                records.line(MODELS[(index + n) % len(MODELS)], ago_seconds=600 + n)
                for n in range(3)
            ]
            _post(http, token, records.body(lines))
        for token in heavy:
            lines = [records.line(heavy_model(n), ago_seconds=900 + n) for n in range(models)]
            _post(http, token, records.body(lines))


def _post(http: httpx.Client, token: str, body: bytes) -> dict[str, Any]:
    answer = http.post(
        f"{API}events/",
        content=body,
        headers={**_auth(token), "Content-Type": "application/x-ndjson"},
    )
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def snapshot_size(port: int, token: str) -> int:
    answer = httpx.get(f"http://127.0.0.1:{port}{API}dashboard/", headers=_auth(token), timeout=30)
    return len(answer.content) + len('{"type":"dashboard","position":0000000,}')


# --- dashboards (client processes) -------------------------------------------------------


def client_process(
    process: int,
    port: int,
    dashboards: list[tuple[int, str]],
    ready: Queue[tuple[int, int, list[str]]],
    stop: Event,
    reports: Queue[ClientReport],
) -> None:
    """Entry point of one client process: holds ``dashboards`` ((id, token) pairs)."""
    raise_open_files_limit()
    asyncio.run(_client(process, port, dashboards, ready, stop, reports))


async def _client(
    process: int,
    port: int,
    dashboards: list[tuple[int, str]],
    ready: Queue[tuple[int, int, list[str]]],
    stop: Event,
    reports: Queue[ClientReport],
) -> None:
    frames: dict[int, Frames] = {dashboard: [] for dashboard, _ in dashboards}
    failed: list[str] = []
    closed_by_server = 0
    sockets: list[ClientConnection] = []
    handshakes = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def hold(dashboard: int, token: str) -> None:
        nonlocal closed_by_server
        socket_ = await _open(port, token, handshakes, failed)
        if socket_ is None:
            return
        sockets.append(socket_)
        received = frames[dashboard]
        try:
            async for message in socket_:
                arrived = time.monotonic()
                received.append((_position(message), arrived))
        except ConnectionClosed:
            pass
        if not stop.is_set():
            closed_by_server += 1

    holders = [asyncio.create_task(hold(d, token)) for d, token in dashboards]
    deadline = time.monotonic() + CONNECT_SECONDS
    while time.monotonic() < deadline:
        done = sum(1 for received in frames.values() if received)
        if done + len(failed) >= len(dashboards):
            break
        await asyncio.sleep(0.1)
    ready.put((process, sum(1 for received in frames.values() if received), failed[:5]))

    lags = await _measure_loop_lag_until(stop)
    await asyncio.gather(*(asyncio.wait_for(s.close(), 5) for s in sockets), return_exceptions=True)
    for holder in holders:
        holder.cancel()
    await asyncio.gather(*holders, return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    lags.sort()
    reports.put(
        ClientReport(
            process=process,
            frames=frames,
            failed=failed,
            closed_by_server=closed_by_server,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            loop_lag_max=lags[-1] if lags else 0.0,
            loop_lag_p99=_percentile(lags, 99) if lags else 0.0,
        )
    )


async def _open(
    port: int, token: str, handshakes: asyncio.Semaphore, failed: list[str]
) -> ClientConnection | None:
    url = f"ws://127.0.0.1:{port}{WS_PATH}?token={token}"
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            async with handshakes:
                connection: ClientConnection = await connect(
                    url,
                    open_timeout=60,
                    close_timeout=2,
                    ping_interval=None,  # the server pings; the client answers while reading
                    max_size=None,
                    compression=None,
                )
                return connection
        except (OSError, TimeoutError, InvalidHandshake) as error:
            if attempt == CONNECT_ATTEMPTS - 1:
                failed.append(repr(error))
            await asyncio.sleep(0.5 * (attempt + 1))
    return None


async def _measure_loop_lag_until(stop: Event) -> list[float]:
    """How late a 50 ms sleep wakes up: a busy client loop inflates every delay it sees."""
    lags: list[float] = []
    while not stop.is_set() and len(lags) < 100_000:
        before = time.monotonic()
        await asyncio.sleep(0.05)
        lags.append(time.monotonic() - before - 0.05)
    return lags


def _position(message: str | bytes) -> int:
    text = message if isinstance(message, str) else message.decode(errors="replace")
    found = POSITION.search(text, 0, 96)
    return int(found.group(1)) if found else -1


# --- stalled dashboards ------------------------------------------------------------------


def open_stalled(port: int, token: str) -> socket.socket:
    """A WebSocket that completes its handshake and then never reads again."""
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RECEIVE_BUFFER)
    stalled.settimeout(30)
    stalled.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    stalled.sendall(
        (
            f"GET {WS_PATH}?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 4096:
        head += stalled.recv(1)  # byte by byte: read the handshake answer and nothing more
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"stalled dashboard refused: {head[:200]!r}")
    return stalled


def closed_by_server(stalled: socket.socket) -> bool:
    """Drain what the kernel holds; a reset or end of stream means the server hung up."""
    stalled.setblocking(False)
    for _ in range(100_000):
        try:
            if not stalled.recv(1 << 20):
                return True
        except BlockingIOError:
            return False
        except OSError:
            return True
    return False


# --- the agent ---------------------------------------------------------------------------


async def agent(
    port: int,
    scenario: Scenario,
    tokens: Sequence[str],
    heavy: Sequence[str],
    rate: float,
    seconds: float,
    pid: int,
    outcome: Outcome,
) -> None:
    """Open-loop: ingests are due at fixed times whatever the server's pace, at most
    AGENT_CONCURRENCY in flight. RSS is sampled on the side."""
    records = Records()
    plan = [(n / rate, n % len(tokens), False) for n in range(int(rate * seconds))]
    if heavy and scenario.heavy_rate:
        count = int(scenario.heavy_rate * seconds)
        plan += [(n / scenario.heavy_rate, n % len(heavy), True) for n in range(count)]
    plan.sort()
    in_flight = asyncio.Semaphore(AGENT_CONCURRENCY)
    limits = httpx.Limits(
        max_connections=AGENT_CONCURRENCY, max_keepalive_connections=AGENT_CONCURRENCY
    )
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60
    ) as http:

        async def one(user: int, is_heavy: bool) -> None:
            token = heavy[user] if is_heavy else tokens[user]
            model = (
                heavy_model(records.serial % max(scenario.heavy_models, 1))
                if is_heavy
                else MODELS[records.serial % len(MODELS)]
            )
            body = records.body([records.line(model, ago_seconds=5)])
            async with in_flight:
                started = time.monotonic()
                try:
                    answer = await http.post(
                        f"{API}events/",
                        content=body,
                        headers={**_auth(token), "Content-Type": "application/x-ndjson"},
                    )
                    answered = time.monotonic()
                    answer.raise_for_status()
                except httpx.HTTPError:
                    outcome.ingest_errors += 1
                    return
            if is_heavy:
                outcome.heavy_ingests += 1
            else:
                position = int(answer.json()["position"])
                outcome.ingests.append(Ingest(user, position, answered, answered - started))

        sampler = asyncio.create_task(_sample_rss(pid, outcome))
        start = time.monotonic()
        tasks = []
        for due, user, is_heavy in plan:
            delay = start + due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(user, is_heavy)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 120)
        outcome.seconds = time.monotonic() - start
        sampler.cancel()


async def _sample_rss(pid: int, outcome: Outcome) -> None:
    start = time.monotonic()
    while True:
        rss = rss_bytes(pid)
        outcome.rss_peak = max(outcome.rss_peak, rss)
        outcome.rss_timeline.append((time.monotonic() - start, rss))
        await asyncio.sleep(0.25)


# --- one scenario ------------------------------------------------------------------------


def run(scenario: Scenario, *, seconds: float, rate: float, client_processes: int) -> Outcome:
    outcome = Outcome(scenario=scenario, seconds=seconds)
    redis.Redis.from_url(REDIS_URL).flushdb()
    with tempfile.TemporaryDirectory(prefix="fanout-") as tmp, fresh_database() as database_url:
        env = server_env(database_url, scenario, Path(tmp) / "var")
        manage(env, "migrate", "--noinput", "-v0", timeout=MANAGE_SECONDS)
        all_tokens = create_users(env, scenario.users + scenario.stalled)
        tokens, heavy = all_tokens[: scenario.users], all_tokens[scenario.users :]
        with daphne(env, Path(tmp) / "daphne.log") as server:
            seed(server.port, tokens, heavy, scenario.heavy_models, Records())
            outcome.snapshot_bytes["user"] = snapshot_size(server.port, tokens[0])
            if heavy:
                outcome.snapshot_bytes["heavy user"] = snapshot_size(server.port, heavy[0])
            outcome.rss_idle = rss_bytes(server.pid)
            _measure(server, scenario, tokens, heavy, rate, seconds, client_processes, outcome)
    return outcome


def _measure(
    server: ServerProcess,
    scenario: Scenario,
    tokens: list[str],
    heavy: list[str],
    rate: float,
    seconds: float,
    client_processes: int,
    outcome: Outcome,
) -> None:
    context = multiprocessing.get_context("spawn")
    ready: Queue[tuple[int, int, list[str]]] = context.Queue()
    reports: Queue[ClientReport] = context.Queue()
    stop = context.Event()
    dashboards = [
        (user * scenario.connections_per_user + copy, tokens[user])
        for user in range(scenario.users)
        for copy in range(scenario.connections_per_user)
    ]
    shares = [dashboards[n::client_processes] for n in range(client_processes)]
    workers = [
        context.Process(
            target=client_process,
            args=(n, server.port, shares[n], ready, stop, reports),
            daemon=True,
        )
        for n in range(client_processes)
    ]
    stalled: list[socket.socket] = []
    try:
        connecting = time.monotonic()
        for worker in workers:
            worker.start()
        for _ in workers:
            process, connected, failed = ready.get(timeout=CONNECT_SECONDS + 60)
            print(f"  client process {process}: {connected} dashboards ready; failures {failed}")
        outcome.connect_seconds = time.monotonic() - connecting
        stalled = [open_stalled(server.port, token) for token in heavy]
        time.sleep(1.0)  # let the first snapshots settle before measuring
        outcome.rss_connected = rss_bytes(server.pid)
        outcome.rss_peak = outcome.rss_connected
        cpu_before = cpu_seconds(server.pid)
        asyncio.run(agent(server.port, scenario, tokens, heavy, rate, seconds, server.pid, outcome))
        time.sleep(GRACE_SECONDS)
        outcome.server_cpu = cpu_seconds(server.pid) - cpu_before
        outcome.rss_end = rss_bytes(server.pid)
        outcome.rss_peak = max(outcome.rss_peak, outcome.rss_end)
        outcome.stalled_closed = sum(closed_by_server(s) for s in stalled)
        outcome.stalled_open = len(stalled) - outcome.stalled_closed
        stop.set()
        outcome.reports = [reports.get(timeout=120) for _ in workers]
    finally:
        stop.set()
        for s in stalled:
            s.close()
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=10)


# --- figures -----------------------------------------------------------------------------


def _percentile(ordered: Sequence[float], percent: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


@dataclass
class Figures:
    samples: int
    lost: int
    lost_ingests: int
    backwards: int
    before_answer: int
    p50: float
    p99: float
    maximum: float
    sent_p50: float
    sent_p99: float
    sent_maximum: float
    frames: int
    dashboards_with_no_frame: int


def figures(outcome: Outcome) -> Figures:
    scenario = outcome.scenario
    frames: dict[int, Frames] = {}
    for report in outcome.reports:
        frames.update(report.frames)
    positions = {d: [p for p, _ in f] for d, f in frames.items()}
    backwards = sum(1 for p in positions.values() for a, b in itertools.pairwise(p) if b < a)
    delays: list[float] = []
    from_sent: list[float] = []  # from the moment the agent sent the ingest: an upper bound
    lost = before_answer = 0
    lost_ingests: set[int] = set()
    for number, ingest in enumerate(outcome.ingests):
        for copy in range(scenario.connections_per_user):
            dashboard = ingest.user * scenario.connections_per_user + copy
            index = bisect.bisect_left(positions.get(dashboard, []), ingest.position)
            if index >= len(positions.get(dashboard, [])):
                lost += 1
                lost_ingests.add(number)
                continue
            arrived = frames[dashboard][index][1]
            delay = arrived - ingest.answered_at
            before_answer += delay < 0
            delays.append(max(delay, 0.0))
            from_sent.append(arrived - (ingest.answered_at - ingest.seconds))
    delays.sort()
    from_sent.sort()
    return Figures(
        samples=len(delays),
        lost=lost,
        lost_ingests=len(lost_ingests),
        backwards=backwards,
        before_answer=before_answer,
        p50=_percentile(delays, 50),
        p99=_percentile(delays, 99),
        maximum=delays[-1] if delays else float("nan"),
        sent_p50=_percentile(from_sent, 50),
        sent_p99=_percentile(from_sent, 99),
        sent_maximum=from_sent[-1] if from_sent else float("nan"),
        frames=sum(len(f) for f in frames.values()),
        dashboards_with_no_frame=sum(1 for f in frames.values() if not f),
    )


def describe(outcome: Outcome) -> str:
    scenario, found = outcome.scenario, figures(outcome)
    mib = 1024 * 1024
    answers = sorted(i.seconds for i in outcome.ingests)
    lines = [
        f"## {scenario.name}: {scenario.users} users x {scenario.connections_per_user} dashboards"
        + (f" + {scenario.stalled} stalled" if scenario.stalled else "")
        + f" (load average {os.getloadavg()[0]:.1f} at the end)",
        f"ingests: {len(outcome.ingests)} in {outcome.seconds:.1f} s"
        f" ({len(outcome.ingests) / outcome.seconds:.1f}/s)"
        + (f" + {outcome.heavy_ingests} for the stalled users" if scenario.stalled else "")
        + f", errors {outcome.ingest_errors}; HTTP answer p50 {_ms(_percentile(answers, 50))}"
        f" p99 {_ms(_percentile(answers, 99))}",
        f"snapshot sizes: {outcome.snapshot_bytes}",
        f"delay ingest answer -> dashboard frame: p50 {_ms(found.p50)} p99 {_ms(found.p99)}"
        f" max {_ms(found.maximum)} over {found.samples} (ingest, dashboard) pairs"
        f" ({found.before_answer} arrived before the HTTP answer, counted as 0)",
        f"delay ingest sent -> dashboard frame (includes the ingest itself): p50"
        f" {_ms(found.sent_p50)} p99 {_ms(found.sent_p99)} max {_ms(found.sent_maximum)}",
        f"lost: {found.lost} (ingest, dashboard) pairs, {found.lost_ingests} ingests;"
        f" positions backwards: {found.backwards}; frames received: {found.frames};"
        f" dashboards without any frame: {found.dashboards_with_no_frame}",
        f"dashboards: connected and holding a snapshot in {outcome.connect_seconds:.1f} s;"
        f" closed by the server: {sum(r.closed_by_server for r in outcome.reports)};"
        f" failed to connect: {sum(len(r.failed) for r in outcome.reports)}",
        f"server RSS: idle {outcome.rss_idle / mib:.0f} MiB, connected"
        f" {outcome.rss_connected / mib:.0f} MiB, peak {outcome.rss_peak / mib:.0f} MiB,"
        f" end {outcome.rss_end / mib:.0f} MiB (growth during the run"
        f" {(outcome.rss_peak - outcome.rss_connected) / mib:+.0f} MiB); every 5 s: "
        + ", ".join(f"{rss / mib:.0f}" for rss in _every(outcome.rss_timeline, 5.0))
        + " MiB",
        f"CPU during the run: server {outcome.server_cpu / outcome.seconds:.0%} of a core;"
        + "".join(
            f" client {r.process} {r.cpu_seconds:.0f} s total (loop lag p99 {_ms(r.loop_lag_p99)}"
            f" max {_ms(r.loop_lag_max)});"
            for r in outcome.reports
        ),
    ]
    if scenario.stalled:
        lines.append(
            f"stalled dashboards: {outcome.stalled_closed} disconnected by the server,"
            f" {outcome.stalled_open} still open (USAGE_WS_MAX_BUFFERED_BYTES="
            f"{scenario.max_buffered_bytes})"
        )
    return "\n".join(lines)


def _every(timeline: Sequence[tuple[float, int]], step: float) -> list[int]:
    """The first sample at or after each multiple of ``step`` seconds, and the last."""
    picked: list[int] = []
    mark, last_picked = 0.0, -1
    for index, (at, value) in enumerate(timeline):
        if at >= mark:
            picked.append(value)
            last_picked = index
            while mark <= at:
                mark += step
    if timeline and last_picked != len(timeline) - 1:
        picked.append(timeline[-1][1])
    return picked


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return (
        f"{os.cpu_count()} x {cpu}, {int(memory) // 1024 // 1024} GiB, Linux {platform.release()},"
        f" Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenarios", default="1k,5k,stalled,stalled-unguarded")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=50.0, help="ingests per second")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--dump", type=Path, help="write each scenario's raw timings here")
    args = parser.parse_args(argv)
    raise_open_files_limit()
    print(f"# fanout: {machine()}; {args.seconds:.0f} s at {args.rate:.0f} ingests/s")
    for name in args.scenarios.split(","):
        outcome = run(
            SCENARIOS[name],
            seconds=args.seconds,
            rate=args.rate,
            client_processes=args.client_processes,
        )
        print(describe(outcome), flush=True)
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            raw = {
                "ingests": [vars(ingest) for ingest in outcome.ingests],
                "rss": outcome.rss_timeline,
                "frames": {d: f for r in outcome.reports for d, f in r.frames.items()},
            }
            (args.dump / f"{name}.json").write_bytes(
                orjson.dumps(raw, option=orjson.OPT_NON_STR_KEYS)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
