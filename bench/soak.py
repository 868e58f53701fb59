"""Soak: minutes of mixed load on PostgreSQL + Redis, as `make run` serves (issue 15).

    .venv/bin/python -m bench.soak                # 10 minutes (make bench-soak)
    .venv/bin/python -m bench.soak --minutes 1    # a short run while developing

The server is `python -m backend.serve --workers 2 --with-worker` (two daphne processes and
the periodic worker, which applies retention every minute) on a fresh PostgreSQL database
``soak`` (dropped at the end) and the Redis db ``redis://127.0.0.1:6379/10`` (flushed at the
start and the end), with ``USAGE_RETENTION_HOURS=1``. The load, every client in processes of
its own so that the client side takes as little of the 2 cores' Python time as it can:

- 20 agents: 10 users x 2 machines (``X-Usage-Host``), each posting a gzip'd NDJSON batch
  every 1-2 s on a new connection, as the agent does: 1-10 live records (dated up to 20 s
  ago) and, in most batches, a chunk of an older transcript dated 60-120 s younger than the
  retention horizon, which therefore ages past it while the run lasts (the worker deletes it
  a minute or two after it was sent). Some records arrive first as a partial copy (fewer
  output tokens) and in full in the next batch (a revision); some are sent again unchanged
  (duplicates). Every answer must be a 200 that says exactly what the sender expects
  (accepted, duplicates, nothing expired, rejected, skipped or clamped).
- 200 WebSocket dashboards, 20 on each agent user (``bench.fanout``'s client processes):
  the delay from an ingest's HTTP answer to the first frame at its position, frames lost,
  positions going backwards, disconnects.
- 50 polling REST clients, each its own user (the first 10 are the agent users, the 40 others
  only have the history seeded at the start): ``dashboard/`` every 4-6 s on a keep-alive
  connection, each followed by ``stats/``, ``timeseries/`` or ``projects/`` in turn. One
  read of a token at a time and about 24 a minute: a well-behaved client, never over the
  per-token bounds.

Every user starts with a seeded history: records of the last 20 minutes, which stay, and
records 60-170 s younger than the horizon, which retention deletes early in the run.

Every 10 s the RSS of every server process is sampled (the launcher, each daphne worker,
``run_worker``, the Redis server, the PostgreSQL backends of the database), with the log's
rows and Redis's memory beside them; growth after the first minute is reported per process.

At the end, exact checks. Each sender keeps a ledger of the copy the server must count for
each message it sent. Every record is either young (dated within the last 20 minutes of the
run's start) or aging (dated at most 170 s younger than the horizon when sent); after the
load stops the bench waits until the newest aging record is past the horizon, runs
``manage.py prune_events``, and checks that no young record is anywhere near the horizon,
so that what retention keeps is known exactly: the young copies. Every user's ``stats/``
and ``dashboard/`` must count exactly those (messages, each kind of token, sessions,
projects, machines), retention must have deleted exactly the aging events, and the
projections must equal a rebuild (``manage.py rebuild_projections``; ``stats/``,
``dashboard/`` and ``projects/`` compared before and after).

Only 127.0.0.1 is contacted; every wait is bounded; every process started here is stopped
here. Times are ``time.monotonic()``, which Linux shares between processes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import multiprocessing
import random
import re
import resource
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import psycopg
import redis
from psycopg import sql

from bench import fanout
from bench.common import (
    API,
    PG_SERVER,
    PYTHON,
    SERVER_START_SECONDS,
    BenchEnv,
    Client,
    Deadline,
    RecordFactory,
    cpu_seconds,
    ndjson_gzip,
    percentile,
    prepare,
    print_machine,
    reset_redis,
    stop_on_sigterm,
    tree_pids,
)
from tests.support import ServerProcess, free_port, manage

DATABASE = "soak"
REDIS_URL = "redis://127.0.0.1:6379/10"
REDIS_PREFIX = "soak"
RETENTION_HOURS = 1
HORIZON_SECONDS = RETENTION_HOURS * 3600
WORKERS = 2
AGENT_USERS = 10
MACHINES = ("laptop", "workstation")  # per agent user: 20 agents
DASHBOARDS_PER_AGENT_USER = 20  # 200 WebSocket dashboards
POLLERS = 50  # each its own user; the first AGENT_USERS are the agents' users
WS_PROCESSES = 2
POLLER_PROCESSES = 2

# The agents' batches (seconds, counts, shares).
BATCH_INTERVAL = (1.0, 2.0)
LIVE_RECORDS = (1, 10)
LIVE_AGE = (0.0, 20.0)  # seconds before the send
OLDER_CHUNK_SHARE = 0.75  # batches that also carry a chunk of an older transcript
OLDER_CHUNK = (5, 15)
AGING_MARGIN = (60.0, 120.0)  # an older record is this much younger than the horizon
PARTIAL_SHARE = 0.1  # new records sent first as a partial copy, in full in the next batch
DUPLICATE_SHARE = 0.05  # records of the previous batch sent again unchanged

# The history every user starts with.
SEED_YOUNG = 600  # over the 20 minutes before the start
SEED_YOUNG_SPAN = timedelta(minutes=20)
SEED_AGING = 150
SEED_AGING_MARGIN = (60.0, 170.0)
# Young records are dated at most 20 min before the start (the seed) and aging ones at most
# 170 s younger than the horizon: the checks need every young record far younger than the
# horizon when they read, hence a bound on the run's length.
MAX_MINUTES = 30.0
HORIZON_MARGIN_SECONDS = 10.0  # no record within this of the horizon when the checks read

POLL_INTERVAL = (4.0, 6.0)
POLL_SECOND_READS = ("stats/", "timeseries/?hours=1&interval=1min", "projects/")
DASHBOARD_READ = "dashboard/?hours=1"

SAMPLE_SECONDS = 10.0
WARM_UP_SECONDS = 60.0
# "Flat": growth after the warm-up within this share of the warm value, or this many MiB.
FLAT_SHARE = 0.05
FLAT_MIB = 8.0
REDIS_PER_ROW_SHARE = 0.10
GRACE_SECONDS = 5.0  # for the last frames after the load stops
START_DELAY_SECONDS = 5.0  # for the client processes to import before the load starts
JOIN_SECONDS = 60.0
MANAGE_SECONDS = 600.0
ERRORS_KEPT = 20
MIB = 1024 * 1024
PRUNED = re.compile(r"retention pruned (\d+) events")
PRUNED_BY_COMMAND = re.compile(r"pruned (\d+) events")

Tokens = tuple[int, int, int, int]  # input, output, cache creation, cache read
Key = tuple[str, str]  # (message id, request id)
Batch = list[tuple[dict[str, Any], bool]]  # each record and whether it is young


# --- what the server must count: the senders' ledgers -----------------------------------


@dataclass(frozen=True)
class Copy:
    """The copy of one message the server counts (the one with the most tokens)."""

    young: bool
    timestamp: float  # epoch seconds
    session: str
    project: str
    host: str
    tokens: Tokens


@dataclass
class Expected:
    """What one user's projection must hold once retention has deleted the aging records."""

    messages: int = 0
    tokens: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    sessions: set[str] = field(default_factory=set)
    projects: set[str] = field(default_factory=set)
    hosts: dict[str, list[int]] = field(default_factory=dict)  # host -> [messages, tokens]
    aging_events: int = 0  # events retention must delete (recorded and revised copies)
    newest_aging: float = 0.0  # epoch seconds
    oldest_young: float = math.inf

    def merge(self, other: Expected) -> None:
        self.messages += other.messages
        self.tokens = [a + b for a, b in zip(self.tokens, other.tokens, strict=True)]
        self.sessions |= other.sessions
        self.projects |= other.projects
        for host, (messages, tokens) in other.hosts.items():
            figures = self.hosts.setdefault(host, [0, 0])
            figures[0] += messages
            figures[1] += tokens
        self.aging_events += other.aging_events
        self.newest_aging = max(self.newest_aging, other.newest_aging)
        self.oldest_young = min(self.oldest_young, other.oldest_young)


class Ledger:
    """One sender's records as the server must count them. The rules of ``usage.dedupe`` for
    the copies sent here: a new (message id, request id) counts; a copy with more tokens
    replaces it (a revision, a new event); an identical copy is a duplicate."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.copies: dict[Key, Copy] = {}
        self.aging_events = 0

    def answer(self, batch: Batch) -> tuple[int, int]:
        """The (accepted, duplicates) the server must answer for ``batch``."""
        accepted = sum(1 for record, young in batch if self._counts(record, young))
        return accepted, len(batch) - accepted

    def commit(self, batch: Batch) -> None:
        """The server took ``batch`` (a 200)."""
        for record, young in batch:
            if self._counts(record, young):
                self.copies[_key(record)] = self._copy(record, young)
                self.aging_events += not young

    def expected(self) -> Expected:
        found = Expected(aging_events=self.aging_events)
        for counted in self.copies.values():
            if not counted.young:
                found.newest_aging = max(found.newest_aging, counted.timestamp)
                continue
            found.oldest_young = min(found.oldest_young, counted.timestamp)
            found.messages += 1
            found.tokens = [a + b for a, b in zip(found.tokens, counted.tokens, strict=True)]
            found.sessions.add(counted.session)
            found.projects.add(counted.project)
            host = found.hosts.setdefault(counted.host, [0, 0])
            host[0] += 1
            host[1] += sum(counted.tokens)
        return found

    def _counts(self, record: dict[str, Any], young: bool) -> bool:
        known = self.copies.get(_key(record))
        return known is None or sum(_tokens(record)) > sum(known.tokens)

    def _copy(self, record: dict[str, Any], young: bool) -> Copy:
        moment = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        return Copy(
            young,
            moment.timestamp(),
            record["sessionId"],
            record["cwd"],
            self.host,
            _tokens(record),
        )


def _key(record: dict[str, Any]) -> Key:
    return (record["message"]["id"], record["requestId"])


def _tokens(record: dict[str, Any]) -> Tokens:
    usage = record["message"]["usage"]
    return (
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cache_creation_input_tokens"],
        usage["cache_read_input_tokens"],
    )


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(tz=UTC)


# --- what the client processes report ----------------------------------------------------


@dataclass(frozen=True)
class IngestSample:
    user: int
    sent_at: float  # monotonic
    seconds: float
    records: int
    aging: int
    revisions: int
    duplicates: int
    position: int


@dataclass(frozen=True)
class ReadSample:
    path: str
    sent_at: float
    seconds: float


@dataclass(frozen=True)
class Failure:
    at: float  # monotonic
    kind: str  # "HTTP 429", "HTTP 5xx", "exception", "wrong answer", ...
    text: str


@dataclass
class LoadReport:
    """One client process's record of the run."""

    role: str
    ingests: list[IngestSample] = field(default_factory=list)
    reads: list[ReadSample] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    expected: dict[int, Expected] = field(default_factory=dict)  # by user
    cpu_seconds: float = 0.0
    max_rss: int = 0  # bytes

    def fail(self, kind: str, text: str) -> None:
        self.failures.append(Failure(time.monotonic(), kind, text[:300]))


def _http_failure(status: int) -> str:
    return f"HTTP {status}" if status < 500 else "HTTP 5xx"


def _finish(report: LoadReport, reports: Queue[LoadReport]) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report.cpu_seconds = usage.ru_utime + usage.ru_stime
    report.max_rss = usage.ru_maxrss * 1024
    reports.put(report)


def _sleep_until(moment: float, stop: Event) -> None:
    """Until ``moment`` (monotonic), or sooner when the run is stopped."""
    stop.wait(max(0.0, moment - time.monotonic()))


# --- the agents (one client process, a thread each) --------------------------------------


@dataclass(frozen=True)
class AgentPlan:
    user: int
    token: str
    host: str
    seed: int


class Agent:
    """One machine's agent: live records of its current sessions, chunks of an older
    transcript, partial copies completed in the next batch, and resent lines."""

    def __init__(self, plan: AgentPlan) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        # Endless streams of distinct records (sessions, models, token counts); the dates
        # are set here. Two factories, so the older transcript's sessions are its own.
        far = _now() + timedelta(days=1)
        self.live = RecordFactory(seed=plan.seed).records(10**9, end=far, span=timedelta(days=1))
        self.older = RecordFactory(seed=plan.seed + 1).records(
            10**9, end=far, span=timedelta(days=1)
        )
        self.ledger = Ledger(plan.host)
        self.completions: Batch = []  # full copies of the last batch's partial ones
        self.sent_whole: Batch = []  # the last batch's records sent as they are

    def next_batch(self) -> tuple[Batch, int]:
        """A batch, and how many of its records revise a partial copy."""
        now = _now()
        batch: Batch = []
        for _ in range(self.rng.randint(*LIVE_RECORDS)):
            age = self.rng.uniform(*LIVE_AGE)
            batch.append((self._dated(next(self.live), now - timedelta(seconds=age)), True))
        if self.rng.random() < OLDER_CHUNK_SHARE:
            batch.extend(self._older_chunk(now))
        fresh, partials = self._partials(batch)
        repeats = [entry for entry in self.sent_whole if self.rng.random() < DUPLICATE_SHARE]
        completions = self.completions
        self.completions, self.sent_whole = partials, fresh
        early = [self._partial(record, young) for record, young in partials]
        return [*fresh, *early, *completions, *repeats], len(completions)

    def _older_chunk(self, now: datetime) -> Batch:
        # Consecutive lines of one older session, the newest at most AGING_MARGIN[1] and the
        # oldest at least AGING_MARGIN[0] younger than the horizon.
        count = self.rng.randint(*OLDER_CHUNK)
        newest = now - timedelta(seconds=HORIZON_SECONDS - self.rng.uniform(*AGING_MARGIN))
        oldest_allowed = now - timedelta(seconds=HORIZON_SECONDS - AGING_MARGIN[0])
        step = min(timedelta(seconds=2), (newest - oldest_allowed) / count)
        return [
            (self._dated(next(self.older), newest - step * (count - 1 - n)), False)
            for n in range(count)
        ]

    def _partials(self, batch: Batch) -> tuple[Batch, Batch]:
        """Split ``batch`` into records sent whole and records sent partial now (whole next)."""
        whole: Batch = []
        later: Batch = []
        for record, young in batch:
            can = record["message"]["usage"]["output_tokens"] >= 2
            (later if can and self.rng.random() < PARTIAL_SHARE else whole).append((record, young))
        return whole, later

    @staticmethod
    def _partial(record: dict[str, Any], young: bool) -> tuple[dict[str, Any], bool]:
        # Claude Code writes a line per content block; an early one can carry fewer output
        # tokens than the last. Fewer tokens: the full copy sent next revises it.
        early = copy.deepcopy(record)
        usage = early["message"]["usage"]
        usage["output_tokens"] = max(1, usage["output_tokens"] // 4)
        return early, young

    @staticmethod
    def _dated(record: dict[str, Any], moment: datetime) -> dict[str, Any]:
        record["timestamp"] = _stamp(moment)
        return record


def agents_process(
    port: int,
    plans: list[AgentPlan],
    start_at: float,
    stop: Event,
    reports: Queue[LoadReport],
) -> None:
    report = LoadReport("agents")
    agents = [Agent(plan) for plan in plans]
    _run_threads([partial(_agent, agent, port, start_at, stop, report) for agent in agents])
    for agent in agents:
        report.expected.setdefault(agent.plan.user, Expected()).merge(agent.ledger.expected())
    _finish(report, reports)


def _run_threads(targets: Sequence[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # each loop ends on ``stop``, after at most one request


def _agent(agent: Agent, port: int, start_at: float, stop: Event, report: LoadReport) -> None:
    plan = agent.plan
    client = Client(port, plan.token, connection_per_request=True)  # as the agent's urllib
    headers = {
        "Content-Type": "application/x-ndjson",
        "Content-Encoding": "gzip",
        "X-Usage-Host": plan.host,
    }
    due = start_at + agent.rng.uniform(*BATCH_INTERVAL)  # the agents start spread out
    try:
        while not stop.is_set():
            _sleep_until(due, stop)
            if stop.is_set():
                return
            due = time.monotonic() + agent.rng.uniform(*BATCH_INTERVAL)
            batch, revisions = agent.next_batch()
            _send(agent, client, batch, revisions, headers, report)
    finally:
        client.close()


def _send(
    agent: Agent,
    client: Client,
    batch: Batch,
    revisions: int,
    headers: dict[str, str],
    report: LoadReport,
) -> None:
    accepted, duplicates = agent.ledger.answer(batch)
    body = ndjson_gzip([record for record, _ in batch])
    sent = time.monotonic()
    try:
        status, payload = client.request("POST", API + "events/", body, headers)
    except Exception as error:  # noqa: BLE001 - every failure is counted and reported
        client.close()
        report.fail("exception", f"events/ {agent.plan.host}: {type(error).__name__}: {error}")
        return
    seconds = time.monotonic() - sent
    if status != 200:
        report.fail(_http_failure(status), f"events/ {agent.plan.host}: {payload[:200]!r}")
        return
    answer = orjson.loads(payload)
    wanted = {"accepted": accepted, "duplicates": duplicates, "skipped": 0, "expired": 0}
    got = {name: answer.get(name) for name in wanted}
    if got != wanted or answer.get("rejected") or answer.get("clamped"):
        report.fail("wrong answer", f"events/ {agent.plan.host}: wanted {wanted}: {answer}")
        return
    agent.ledger.commit(batch)
    aging = sum(1 for _, young in batch if not young)
    report.ingests.append(
        IngestSample(
            agent.plan.user,
            sent,
            seconds,
            len(batch),
            aging,
            revisions,
            duplicates,
            int(answer["position"]),
        )
    )


# --- the polling REST clients (client processes, a thread each) ---------------------------


def pollers_process(
    port: int,
    pollers: list[tuple[str, int]],  # (token, seed)
    start_at: float,
    stop: Event,
    reports: Queue[LoadReport],
) -> None:
    report = LoadReport("pollers")
    _run_threads(
        [partial(_poller, port, token, seed, start_at, stop, report) for token, seed in pollers]
    )
    _finish(report, reports)


def _poller(
    port: int, token: str, seed: int, start_at: float, stop: Event, report: LoadReport
) -> None:
    """A browser tab: one keep-alive connection, one read at a time."""
    rng = random.Random(seed)
    client = Client(port, token)
    due = start_at + rng.uniform(*POLL_INTERVAL)
    turn = rng.randrange(len(POLL_SECOND_READS))
    try:
        while not stop.is_set():
            _sleep_until(due, stop)
            if stop.is_set():
                return
            due = time.monotonic() + rng.uniform(*POLL_INTERVAL)
            for path in (DASHBOARD_READ, POLL_SECOND_READS[turn % len(POLL_SECOND_READS)]):
                _read(client, path, report)
            turn += 1
    finally:
        client.close()


def _read(client: Client, path: str, report: LoadReport) -> None:
    sent = time.monotonic()
    try:
        status, payload = client.get(API + path)
    except Exception as error:  # noqa: BLE001 - every failure is counted and reported
        client.close()
        report.fail("exception", f"{path}: {type(error).__name__}: {error}")
        return
    if status != 200:
        report.fail(_http_failure(status), f"{path}: {payload[:200]!r}")
        return
    report.reads.append(ReadSample(path.split("?")[0], sent, time.monotonic() - sent))


# --- the server, the users and their seeded histories ------------------------------------


class ServerWithJobs(ServerProcess):
    """``python -m backend.serve --workers N --with-worker``: what ``make run`` starts."""

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--workers")
        return [*command[:at], "--with-worker", *command[at:]]


@contextlib.contextmanager
def running_server(env: BenchEnv) -> Iterator[ServerProcess]:
    port = free_port()
    server = ServerWithJobs(
        env.variables(),
        Path(env.var_dir) / f"server-{port}.log",
        workers=WORKERS,
        python=PYTHON,
        daphne_options=("-v", "0"),  # no access log line per request
        port=port,
    )
    try:
        server.start(SERVER_START_SECONDS)
        yield server
    finally:
        server.stop(signal.SIGINT, timeout=30.0)  # the whole process group, worker included


def seed_histories(port: int, tokens: Sequence[str]) -> dict[int, Expected]:
    """Every user's history: young records of the last 20 minutes, and aging ones that
    retention deletes in the run's first minutes. One request per user, answered in full."""
    now = _now()
    aging_span = timedelta(seconds=SEED_AGING_MARGIN[1] - SEED_AGING_MARGIN[0])
    aging_end = now - timedelta(seconds=HORIZON_SECONDS - SEED_AGING_MARGIN[1])
    expected = {}
    for user, token in enumerate(tokens):
        young = RecordFactory(seed=10_000 + user).records(
            SEED_YOUNG, end=now - timedelta(minutes=1), span=SEED_YOUNG_SPAN
        )
        aging = RecordFactory(seed=20_000 + user).records(
            SEED_AGING, end=aging_end, span=aging_span
        )
        batch: Batch = [(record, True) for record in young] + [(record, False) for record in aging]
        ledger = Ledger(_host(user, 0))
        _post_whole(port, token, ledger, batch)
        expected[user] = ledger.expected()
    return expected


def _post_whole(port: int, token: str, ledger: Ledger, batch: Batch) -> None:
    client = Client(port, token)
    headers = {
        "Content-Type": "application/x-ndjson",
        "Content-Encoding": "gzip",
        "X-Usage-Host": ledger.host,
    }
    try:
        status, payload = client.request(
            "POST", API + "events/", ndjson_gzip([r for r, _ in batch]), headers
        )
    finally:
        client.close()
    accepted = orjson.loads(payload).get("accepted") if status == 200 else None
    if accepted != len(batch):
        raise RuntimeError(f"seeding: HTTP {status}, accepted {accepted} of {len(batch)}")
    ledger.commit(batch)


def _host(user: int, machine: int) -> str:
    return f"soak{user:02d}-{MACHINES[machine]}"


# --- memory and CPU of the server's processes ---------------------------------------------


@dataclass(frozen=True)
class MemorySample:
    at: float  # seconds since the load started
    rss: dict[str, int]  # bytes, by process
    pg_backends: int
    pg_private: int  # bytes: the backends' RssAnon, summed (their RSS also counts shared buffers)
    pg_private_max: int  # bytes: the largest backend's
    redis_used: int  # Redis's used_memory (the whole server: other benches may use it too)
    redis_keys: int  # keys of this run's Redis db
    redis_key_bytes: int  # their MEMORY USAGE, summed: this run's share of used_memory
    log_rows: int  # rows of usage_event


class Sampler:
    """Every ``SAMPLE_SECONDS``: the memory of every server process, and the CPU they used."""

    def __init__(self, launcher: int, database_url: str) -> None:
        self.processes = _server_processes(launcher)
        self.redis = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
        self.processes["Redis"] = int(self.redis.info("server")["process_id"])
        self.database = psycopg.connect(database_url, autocommit=True, connect_timeout=10)
        self.samples: list[MemorySample] = []
        self.cpu_first: dict[str, float] = {}
        self.cpu_last: dict[str, float] = {}
        self.pg_cpu_first: dict[int, float] = {}
        self.pg_cpu_last: dict[int, float] = {}

    def close(self) -> None:
        self.redis.close()
        self.database.close()

    def sample(self, at: float) -> None:
        rss = {name: _status(pid, "VmRSS") for name, pid in self.processes.items()}
        backends = self._backends()
        private = [_status(pid, "RssAnon") for pid in backends]
        for name, pid in self.processes.items():
            self.cpu_first.setdefault(name, cpu_seconds([pid]))
            self.cpu_last[name] = cpu_seconds([pid])
        for pid in backends:
            # A backend that appears later started during the run: all its CPU counts.
            self.pg_cpu_first.setdefault(pid, cpu_seconds([pid]) if not self.samples else 0.0)
            self.pg_cpu_last[pid] = cpu_seconds([pid])
        row = self.database.execute("SELECT count(*) FROM usage_event").fetchone()
        self.samples.append(
            MemorySample(
                at=at,
                rss=rss,
                pg_backends=len(backends),
                pg_private=sum(private),
                pg_private_max=max(private, default=0),
                redis_used=int(self.redis.info("memory")["used_memory"]),
                redis_keys=int(self.redis.dbsize()),
                redis_key_bytes=self._key_bytes(),
                log_rows=int(row[0]) if row else -1,
            )
        )

    def cpu(self) -> dict[str, float]:
        """CPU seconds between the first and the last sample, by process (Redis: the whole
        server; PostgreSQL: this database's backends)."""
        used = {name: self.cpu_last[name] - self.cpu_first[name] for name in self.cpu_last}
        used["PostgreSQL backends"] = sum(
            last - self.pg_cpu_first[pid] for pid, last in self.pg_cpu_last.items()
        )
        return used

    def _key_bytes(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for key in self.redis.scan_iter(count=1000):
            pipe.memory_usage(key)
        return sum(int(used or 0) for used in pipe.execute())

    def _backends(self) -> list[int]:
        rows = self.database.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return [int(pid) for (pid,) in rows]


def _server_processes(launcher: int) -> dict[str, int]:
    """The launcher, its daphne workers and its periodic worker, by name."""
    found = {"launcher": launcher}
    daphnes = 0
    for pid in tree_pids(launcher)[1:]:
        with contextlib.suppress(OSError):
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"daphne" in arguments:
                daphnes += 1
                found[f"daphne {daphnes}"] = pid
            elif b"run_worker" in arguments:
                found["run_worker"] = pid
    if daphnes != WORKERS or "run_worker" not in found:
        raise RuntimeError(f"expected {WORKERS} daphne workers and run_worker, found {found}")
    return found


def _status(pid: int, name: str) -> int:
    """A ``/proc/<pid>/status`` figure in bytes (0 once the process is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    return 0


# --- the run -------------------------------------------------------------------------------


@dataclass
class Run:
    start_at: float = 0.0  # monotonic
    seconds: float = 0.0
    log_size: int = 0  # of the server's log when the load stopped
    connect_seconds: float = 0.0
    loads: list[LoadReport] = field(default_factory=list)
    dashboards: list[fanout.ClientReport] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: dict[str, float] = field(default_factory=dict)


def load(server: ServerProcess, tokens: Sequence[str], minutes: float, deadline: Deadline) -> Run:
    """Connects the dashboards, then runs the agents and the pollers for ``minutes`` while
    sampling the server's memory; every client process is stopped on the way out."""
    context = multiprocessing.get_context("spawn")
    stop, stop_dashboards = context.Event(), context.Event()
    ready: Queue[tuple[int, int, list[str]]] = context.Queue()
    dashboard_reports: Queue[fanout.ClientReport] = context.Queue()
    load_reports: Queue[LoadReport] = context.Queue()
    started: list[SpawnProcess] = []
    run = Run()
    try:
        began = time.monotonic()
        for process in _dashboard_processes(
            context, server.port, tokens, ready, stop_dashboards, dashboard_reports
        ):
            process.start()
            started.append(process)
        for _ in range(WS_PROCESSES):
            number, connected, failed = ready.get(timeout=fanout.CONNECT_SECONDS + 60)
            print(
                f"dashboard process {number}: {connected} dashboards hold a snapshot;"
                f" failures {failed}"
            )
        run.connect_seconds = time.monotonic() - began
        start_at = run.start_at = time.monotonic() + START_DELAY_SECONDS
        for process in _load_processes(context, server.port, tokens, start_at, stop, load_reports):
            process.start()
            started.append(process)
        sampler = Sampler(server.pid, server.env["DATABASE_URL"])
        try:
            _sleep_until(start_at, stop)
            run.seconds = _sample_until(sampler, start_at, start_at + minutes * 60, deadline)
        finally:
            stop.set()
            sampler.close()
        run.log_size = server.log_path.stat().st_size
        run.memory, run.cpu = sampler.samples, sampler.cpu()
        run.loads = [
            load_reports.get(timeout=JOIN_SECONDS * 3) for _ in range(1 + POLLER_PROCESSES)
        ]
        time.sleep(GRACE_SECONDS)  # the last ingests' frames
        stop_dashboards.set()
        run.dashboards = [dashboard_reports.get(timeout=JOIN_SECONDS) for _ in range(WS_PROCESSES)]
    finally:
        stop.set()
        stop_dashboards.set()
        for process in started:
            process.join(timeout=JOIN_SECONDS)
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    return run


def _dashboard_processes(
    context: Any,
    port: int,
    tokens: Sequence[str],
    ready: Queue[tuple[int, int, list[str]]],
    stop: Event,
    reports: Queue[fanout.ClientReport],
) -> list[SpawnProcess]:
    # Dashboard d of agent user u is u * DASHBOARDS_PER_AGENT_USER + d, as bench.fanout counts.
    dashboards = [
        (user * DASHBOARDS_PER_AGENT_USER + copy_, tokens[user])
        for user in range(AGENT_USERS)
        for copy_ in range(DASHBOARDS_PER_AGENT_USER)
    ]
    return [
        context.Process(
            target=fanout.client_process,
            args=(n, port, dashboards[n::WS_PROCESSES], ready, stop, reports),
            daemon=True,
        )
        for n in range(WS_PROCESSES)
    ]


def _load_processes(
    context: Any,
    port: int,
    tokens: Sequence[str],
    start_at: float,
    stop: Event,
    reports: Queue[LoadReport],
) -> list[SpawnProcess]:
    plans = [
        AgentPlan(user, tokens[user], _host(user, machine), seed=1000 + 10 * user + 2 * machine)
        for user in range(AGENT_USERS)
        for machine in range(len(MACHINES))
    ]
    pollers = [(token, 5000 + user) for user, token in enumerate(tokens[:POLLERS])]
    processes = [
        context.Process(
            target=agents_process, args=(port, plans, start_at, stop, reports), daemon=True
        )
    ]
    for n in range(POLLER_PROCESSES):
        share = pollers[n::POLLER_PROCESSES]
        processes.append(
            context.Process(
                target=pollers_process, args=(port, share, start_at, stop, reports), daemon=True
            )
        )
    return processes


def _sample_until(sampler: Sampler, start_at: float, end_at: float, deadline: Deadline) -> float:
    """Samples every SAMPLE_SECONDS from ``start_at`` to ``end_at``, printing each; the
    seconds the load ran."""
    print(_memory_header())
    mark = start_at
    while True:
        deadline.check("running the load")
        sampler.sample(time.monotonic() - start_at)
        print(_memory_row(sampler.samples[-1]), flush=True)
        if mark >= end_at:
            return time.monotonic() - start_at
        mark = min(mark + SAMPLE_SECONDS, end_at)
        time.sleep(max(0.0, mark - time.monotonic()))


# --- the final checks -----------------------------------------------------------------------


@dataclass
class Checks:
    pruned_by_worker: int = 0
    pruned_during_load: int = 0  # of those
    pruned_by_command: int = 0
    aging_events: int = 0
    young_margin: float = 0.0  # seconds between the oldest young record and the horizon
    aging_margin: float = 0.0  # seconds between the horizon and the newest aging record
    totals_mismatches: list[str] = field(default_factory=list)
    rebuild_mismatches: list[str] = field(default_factory=list)
    users: int = 0
    stale_buckets: list[str] = field(default_factory=list)  # Redis keys retention emptied
    log_errors: list[str] = field(default_factory=list)


def final_checks(
    env: BenchEnv,
    server: ServerProcess,
    tokens: Sequence[str],
    expected: dict[int, Expected],
    log_size: int,
    deadline: Deadline,
) -> Checks:
    """Retention settled, every user's totals against the ledgers, the projections against a
    rebuild, the server's log."""
    checks = Checks(users=len(tokens))
    newest_aging = max(e.newest_aging for e in expected.values())
    wait = newest_aging + HORIZON_SECONDS + HORIZON_MARGIN_SECONDS - time.time()
    print(f"\nwaiting {max(wait, 0):.0f} s for the newest aging record to pass the horizon")
    deadline.check("waiting for the horizon")
    time.sleep(max(0.0, min(wait, deadline.remaining())))
    checks.aging_margin = time.time() - HORIZON_SECONDS - newest_aging
    printed = manage(env.variables(), "prune_events", python=PYTHON, timeout=MANAGE_SECONDS)
    found = PRUNED_BY_COMMAND.search(printed)
    checks.pruned_by_command = int(found.group(1)) if found else -1
    before = {user: _read_user(server.port, token) for user, token in enumerate(tokens)}
    oldest_young = min(e.oldest_young for e in expected.values())
    checks.young_margin = oldest_young - (time.time() - HORIZON_SECONDS)
    for user, views in before.items():
        checks.totals_mismatches += _totals_mismatches(user, views, expected[user])
    checks.stale_buckets = _stale_buckets()
    manage(env.variables(), "rebuild_projections", python=PYTHON, timeout=MANAGE_SECONDS)
    for user, token in enumerate(tokens):
        after = _read_user(server.port, token)
        for name, view in after.items():
            if _stable(name, view) != _stable(name, before[user][name]):
                checks.rebuild_mismatches.append(f"user {user}: {name} differs after the rebuild")
    log = server.log_path.read_bytes().decode(errors="replace")
    checks.pruned_by_worker = sum(int(n) for n in PRUNED.findall(log))
    during = server.log_path.read_bytes()[:log_size].decode(errors="replace")
    checks.pruned_during_load = sum(int(n) for n in PRUNED.findall(during))
    checks.aging_events = sum(e.aging_events for e in expected.values())
    checks.log_errors = [
        line for line in log.splitlines() if " ERROR " in line or line.startswith("Traceback")
    ]
    return checks


def _stale_buckets() -> list[str]:
    """This run's minute and hour buckets that lie wholly before the horizon: retention took
    every event out of them, and a bucket left without events should be gone with them."""
    cutoff = time.time() - HORIZON_SECONDS
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    stale = []
    try:
        for kind, seconds in (("m", 60), ("h", 3600)):
            for key in client.scan_iter(match=f"{REDIS_PREFIX}:*:{kind}:*", count=1000):
                start = key.decode().rsplit(":", 1)[-1]
                if start.isdigit() and int(start) + seconds <= cutoff:
                    stale.append(key.decode())
    finally:
        client.close()
    return stale


def _read_user(port: int, token: str) -> dict[str, dict[str, Any]]:
    client = Client(port, token)
    views = {}
    try:
        for path in ("stats/", DASHBOARD_READ, "projects/"):
            status, payload = client.get(API + path)
            if status != 200:
                raise RuntimeError(f"{path}: HTTP {status}: {payload[:300]!r}")
            views[path] = orjson.loads(payload)
    finally:
        client.close()
    return views


def _totals_mismatches(
    user: int, views: dict[str, dict[str, Any]], expected: Expected
) -> list[str]:
    tokens = expected.tokens
    stats_wanted = {
        "total_messages": expected.messages,
        "total_input_tokens": tokens[0],
        "total_output_tokens": tokens[1],
        "total_cache_creation_tokens": tokens[2],
        "total_cache_read_tokens": tokens[3],
        "total_tokens": sum(tokens),
        "total_sessions": len(expected.sessions),
        "projects": len(expected.projects),
    }
    summary_wanted = {
        "total_messages": expected.messages,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cache_creation_tokens": tokens[2],
        "cache_read_tokens": tokens[3],
        "total_tokens": sum(tokens),
    }
    stats, summary = views["stats/"], views[DASHBOARD_READ]["summary"]
    hosts = {h["host"]: [h["total_messages"], h["total_tokens"]] for h in stats["hosts"]}
    listed = {p["path"] for p in views["projects/"]["projects"]}
    problems = [
        f"user {user}: stats/ {name} {stats.get(name)}, sent {wanted}"
        for name, wanted in stats_wanted.items()
        if stats.get(name) != wanted
    ]
    problems += [
        f"user {user}: dashboard/ {name} {summary.get(name)}, sent {wanted}"
        for name, wanted in summary_wanted.items()
        if summary.get(name) != wanted
    ]
    if hosts != expected.hosts:
        problems.append(f"user {user}: stats/ hosts {hosts}, sent {expected.hosts}")
    if listed != expected.projects:
        problems.append(
            f"user {user}: projects/ {sorted(listed)}, sent {sorted(expected.projects)}"
        )
    return problems


def _stable(name: str, view: dict[str, Any]) -> object:
    """What a read must give the same before and after a rebuild: everything but what moves
    with the clock (the 5-hour window's countdown, predictions, burn rates)."""
    if name == "stats/":
        return {
            k: v
            for k, v in view.items()
            if k.startswith("total_") or k in ("projects", "hosts", "unpriced_models")
        }
    if name == DASHBOARD_READ:
        return {"summary": view["summary"], "models": view["model_distribution"]}
    return view


# --- the report ---------------------------------------------------------------------------


def report(run: Run, checks: Checks) -> bool:
    """Prints every figure and check; whether every check passed."""
    ingests = [sample for load in run.loads for sample in load.ingests]
    reads = [sample for load in run.loads for sample in load.reads]
    dashboards = _dashboard_figures(run, ingests)
    _print_throughput(run, ingests, reads, dashboards)
    _print_latency(ingests, reads, dashboards)
    _print_minutes(run, ingests, reads)
    errors = _print_errors(run, dashboards, checks)
    flat = _print_memory(run.memory)
    _print_cpu(run)
    exact = _print_checks(checks)
    verdicts = {
        "errors: 0": errors == 0,
        "memory flat after the warm-up": flat,
        "final totals exact, retention exact, projections equal a rebuild": exact,
    }
    print()
    for what, ok in verdicts.items():
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return all(verdicts.values())


def _dashboard_figures(run: Run, ingests: Sequence[IngestSample]) -> fanout.Figures:
    return fanout.figures(_outcome(run, ingests))


def _outcome(run: Run, ingests: Sequence[IngestSample]) -> fanout.Outcome:
    """bench.fanout's view of the run: each ingest of an agent user and the frames of that
    user's dashboards."""
    scenario = fanout.Scenario(
        "soak", users=AGENT_USERS, connections_per_user=DASHBOARDS_PER_AGENT_USER
    )
    answered = [
        fanout.Ingest(i.user, i.position, i.sent_at + i.seconds, i.seconds) for i in ingests
    ]
    return fanout.Outcome(scenario, run.seconds, ingests=answered, reports=run.dashboards)


def _print_throughput(
    run: Run,
    ingests: Sequence[IngestSample],
    reads: Sequence[ReadSample],
    dashboards: fanout.Figures,
) -> None:
    seconds = run.seconds
    records = sum(i.records for i in ingests)
    print(f"\nthroughput over {seconds:.0f} s of load:")
    print(
        f"  ingest: {len(ingests):,} batches ({len(ingests) / seconds:.1f}/s), {records:,} records"
        f" ({records / seconds:.0f}/s): {sum(i.aging for i in ingests):,} aging,"
        f" {sum(i.revisions for i in ingests):,} revisions,"
        f" {sum(i.duplicates for i in ingests):,} duplicates"
    )
    by_path = Counter(r.path for r in reads)
    print(
        f"  REST reads: {len(reads):,} ({len(reads) / seconds:.1f}/s): "
        + ", ".join(f"{path} {count:,}" for path, count in sorted(by_path.items()))
    )
    print(
        f"  WebSocket frames: {dashboards.frames:,} ({dashboards.frames / seconds:.0f}/s) on"
        f" {AGENT_USERS * DASHBOARDS_PER_AGENT_USER} dashboards, connected in"
        f" {run.connect_seconds:.1f} s"
    )


def _print_latency(
    ingests: Sequence[IngestSample], reads: Sequence[ReadSample], dashboards: fanout.Figures
) -> None:
    print("\nlatency (ms)                         p50      p99      max   samples")
    print(_latency_row("ingest (HTTP answer)", [i.seconds for i in ingests]))
    for path in sorted({r.path for r in reads}):
        print(_latency_row(f"GET {path}", [r.seconds for r in reads if r.path == path]))
    print(
        f"{'ingest answer -> dashboard frame':<32} {dashboards.p50 * 1000:>8.1f} "
        f"{dashboards.p99 * 1000:>8.1f} {dashboards.maximum * 1000:>8.1f} {dashboards.samples:>9,}"
        f"  ({dashboards.before_answer:,} frames came before the answer, counted as 0)"
    )
    print(
        f"{'ingest sent -> dashboard frame':<32} {dashboards.sent_p50 * 1000:>8.1f} "
        f"{dashboards.sent_p99 * 1000:>8.1f} {dashboards.sent_maximum * 1000:>8.1f}"
    )


def _latency_row(label: str, seconds: Sequence[float]) -> str:
    if not seconds:
        return f"{label:<32} {'-':>8}"
    return (
        f"{label:<32} {percentile(seconds, 0.5) * 1000:>8.1f} "
        f"{percentile(seconds, 0.99) * 1000:>8.1f} {max(seconds) * 1000:>8.1f} {len(seconds):>9,}"
    )


def _print_minutes(run: Run, ingests: Sequence[IngestSample], reads: Sequence[ReadSample]) -> None:
    """Minute by minute: a soak must not drift."""
    print(
        "\nminute  ingests  records  ingest p50/p99 ms  reads  read p50/p99 ms"
        "  frame delay p50/p99 ms  failures"
    )
    failures = [f for load in run.loads for f in load.failures]
    for minute in range(max(1, math.ceil(run.seconds / 60 - 0.05))):
        begin, end = run.start_at + 60 * minute, run.start_at + 60 * (minute + 1)
        batch = [i for i in ingests if begin <= i.sent_at < end]
        polled = [r.seconds for r in reads if begin <= r.sent_at < end]
        frames = fanout.figures(_outcome(run, batch)) if batch else None
        print(
            f"{minute + 1:>6} {len(batch):>8,} {sum(i.records for i in batch):>8,}"
            f" {_pair([i.seconds for i in batch]):>18} {len(polled):>6,} {_pair(polled):>16}"
            f" {_pair_of(frames):>23} {sum(1 for f in failures if begin <= f.at < end):>9}"
        )


def _pair(seconds: Sequence[float]) -> str:
    if not seconds:
        return "-"
    return f"{percentile(seconds, 0.5) * 1000:.0f} / {percentile(seconds, 0.99) * 1000:.0f}"


def _pair_of(frames: fanout.Figures | None) -> str:
    if frames is None or not frames.samples:
        return "-"
    return f"{frames.p50 * 1000:.1f} / {frames.p99 * 1000:.1f}"


def _print_errors(run: Run, dashboards: fanout.Figures, checks: Checks) -> int:
    failures = [f for load in run.loads for f in load.failures]
    counts: Counter[str] = Counter({"HTTP 429": 0, "HTTP 5xx": 0, "exception": 0})
    counts["wrong answer"] = 0
    counts.update(f.kind for f in failures)
    counts["WebSocket connect failures"] = sum(len(r.failed) for r in run.dashboards)
    counts["WebSocket closed by the server"] = sum(r.closed_by_server for r in run.dashboards)
    counts["(ingest, dashboard) pairs never framed"] = dashboards.lost
    counts["dashboards without any frame"] = dashboards.dashboards_with_no_frame
    counts["dashboard positions going backwards"] = dashboards.backwards
    counts["server log: ERROR lines and tracebacks"] = len(checks.log_errors)
    total = sum(counts.values())
    print(f"\nerrors: {total}")
    for kind, count in counts.items():
        print(f"  {kind:<42} {count:>6}")
    for failure in failures[:ERRORS_KEPT]:
        print(f"  at {failure.at - run.start_at:7.1f} s: {failure.kind}: {failure.text}")
    for line in checks.log_errors[:ERRORS_KEPT]:
        print(f"  server log: {line[:300]}")
    return total


MEMORY_COLUMNS = ("launcher", "daphne 1", "daphne 2", "run_worker", "Redis", "PG backends")


def _memory_header() -> str:
    names = "".join(f"{name:>12}" for name in MEMORY_COLUMNS)
    return (
        f"\nmemory every {SAMPLE_SECONDS:.0f} s (MiB; Redis: RSS of the server; PG backends:"
        " private memory (RssAnon) of this database's backends, and their count; Redis used:"
        " the server's used_memory; keys: this run's Redis keys, their MEMORY USAGE summed;"
        " log rows: usage_event)\n"
        f"{'s':>6}{names}{'Redis used':>12}{'keys MiB':>10}{'keys':>8}{'log rows':>10}"
    )


def _memory_row(sample: MemorySample) -> str:
    values = [sample.rss[name] for name in MEMORY_COLUMNS[:-1]]
    cells = "".join(f"{value / MIB:>12.1f}" for value in values)
    backends = f"{sample.pg_private / MIB:.1f} ({sample.pg_backends})"
    return (
        f"{sample.at:>6.0f}{cells}{backends:>12}{sample.redis_used / MIB:>12.1f}"
        f"{sample.redis_key_bytes / MIB:>10.1f}{sample.redis_keys:>8,}{sample.log_rows:>10,}"
    )


@dataclass(frozen=True)
class Series:
    """One figure over the samples after the warm-up, and how much it may grow."""

    name: str
    unit: str
    points: list[tuple[float, float]]  # (seconds, value)
    tolerance: Callable[[float], float] | None  # of the warm value; None: not judged
    unjudged: str = ""  # why not

    def verdict(self) -> str:
        if self.tolerance is None:
            return f"(not judged: {self.unjudged})"
        return "yes" if self.growth() <= self.tolerance(self.points[0][1]) else "NO"

    def growth(self) -> float:
        return self.points[-1][1] - self.points[0][1]


def _memory_series(samples: Sequence[MemorySample]) -> list[Series]:
    """After the warm-up (every sample in a run shorter than it). Each server process's RSS;
    PostgreSQL's largest backend (their count follows the pools); Redis, which holds the
    projections of every retained event, by the bytes of this run's keys per row of the log."""
    warm = [s for s in samples if s.at >= WARM_UP_SECONDS] or list(samples)

    def process(value: float) -> float:
        return max(FLAT_MIB, FLAT_SHARE * value)

    series = [
        Series(name, "MiB", [(s.at, s.rss[name] / MIB) for s in warm], process)
        for name in MEMORY_COLUMNS[:-1]
    ]
    redis_rss = "the whole server's, with every db's data and this run's retained events"
    series[-1] = Series("Redis (RSS)", "MiB", series[-1].points, None, redis_rss)
    series += [
        Series("Redis per row", "bytes", [(s.at, _per_row(s)) for s in warm], _per_row_tolerance),
        Series("PG largest", "MiB", [(s.at, s.pg_private_max / MIB) for s in warm], process),
        Series(
            "PG all",
            "MiB",
            [(s.at, s.pg_private / MIB) for s in warm],
            None,
            "as many backends as the pools hold open",
        ),
    ]
    return series


def _per_row_tolerance(value: float) -> float:
    return REDIS_PER_ROW_SHARE * value


def _print_memory(samples: Sequence[MemorySample]) -> bool:
    """Growth after the warm-up; whether every judged figure stayed flat."""
    print(
        f"\nmemory after the warm-up (the samples from {WARM_UP_SECONDS:.0f} s on). Flat: a"
        f" process grows less than {FLAT_SHARE:.0%} or {FLAT_MIB:.0f} MiB; Redis's keys per"
        f" row of the log less than {REDIS_PER_ROW_SHARE:.0%}. PG: private memory of the"
        " largest backend, and of all of them"
    )
    print(
        f"{'':<15}{'unit':>6}{'warm':>10}{'end':>10}{'max':>10}{'growth':>10}{'per min':>10}  flat"
    )
    judged = []
    for each in _memory_series(samples):
        values = [value for _, value in each.points]
        print(
            f"{each.name:<15}{each.unit:>6}{values[0]:>10.1f}{values[-1]:>10.1f}{max(values):>10.1f}"
            f"{each.growth():>+10.1f}{_slope(each.points):>+10.2f}  {each.verdict()}"
        )
        judged.append(each.verdict() != "NO")
    first = samples[0] if samples else None
    if first is not None:
        print(
            f"PG backends: {first.pg_backends} at the start, {samples[-1].pg_backends} at the end"
        )
    return all(judged)


def _per_row(sample: MemorySample) -> float:
    return sample.redis_key_bytes / max(sample.log_rows, 1)


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope, per minute."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if not spread:
        return 0.0
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def _print_cpu(run: Run) -> None:
    seconds = run.seconds
    print(f"\nCPU during the load ({seconds:.0f} s; % of one core):")
    server = ", ".join(f"{name} {used / seconds:.0%}" for name, used in run.cpu.items())
    print(f"  server side: {server} (Redis: the whole server)")
    clients = [(load.role, load.cpu_seconds) for load in run.loads]
    clients += [(f"dashboards {r.process}", r.cpu_seconds) for r in run.dashboards]
    print(
        "  clients (whole process lives, start-up included): "
        + ", ".join(f"{role} {used / seconds:.0%}" for role, used in clients)
        + "; dashboard loop lag p99 "
        + ", ".join(f"{r.loop_lag_p99 * 1000:.0f} ms" for r in run.dashboards)
    )


def _print_checks(checks: Checks) -> bool:
    pruned = checks.pruned_by_worker + checks.pruned_by_command
    retention_ok = pruned == checks.aging_events
    margins_ok = min(checks.young_margin, checks.aging_margin) >= HORIZON_MARGIN_SECONDS
    print(
        f"\nretention: the worker deleted {checks.pruned_by_worker:,} events"
        f" ({checks.pruned_during_load:,} while the load ran, the rest while the bench waited),"
        f" prune_events {checks.pruned_by_command:,} after it: {pruned:,};"
        f" the aging events sent: {checks.aging_events:,} ({'equal' if retention_ok else 'DIFFER'})"
    )
    print(
        f"horizon at the checks: the newest aging record {checks.aging_margin:.0f} s past it,"
        f" the oldest young record {checks.young_margin:.0f} s short of it"
        f" ({'unambiguous' if margins_ok else 'TOO CLOSE'})"
    )
    print(
        f"totals (stats/, dashboard/, projects/) against the records sent that retention keeps:"
        f" {checks.users - len({m.split(':')[0] for m in checks.totals_mismatches})} of"
        f" {checks.users} users exact"
    )
    for line in checks.totals_mismatches[:ERRORS_KEPT]:
        print(f"  {line}")
    print(
        f"Redis buckets wholly before the horizon left after retention: {len(checks.stale_buckets)}"
        + (f", e.g. {', '.join(checks.stale_buckets[:3])}" if checks.stale_buckets else "")
    )
    print(f"projections against rebuild_projections: {len(checks.rebuild_mismatches)} differences")
    for line in checks.rebuild_mismatches[:ERRORS_KEPT]:
        print(f"  {line}")
    return (
        retention_ok
        and margins_ok
        and not checks.totals_mismatches
        and not checks.stale_buckets
        and not checks.rebuild_mismatches
    )


# --- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="of load (default 10)")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes: more than 0, at most {MAX_MINUTES:g}")
    stop_on_sigterm()
    fanout.raise_open_files_limit()
    env = BenchEnv(
        database=DATABASE,
        redis_url=REDIS_URL,
        redis_prefix=REDIS_PREFIX,
        extra={"USAGE_RETENTION_HOURS": str(RETENTION_HOURS)},
    )
    deadline = Deadline(args.minutes * 60 + 1200)
    try:
        print_machine()
        return 0 if soak(env, args.minutes, deadline) else 1
    finally:
        _drop_database()
        reset_redis(REDIS_URL)
        env.cleanup()


def soak(env: BenchEnv, minutes: float, deadline: Deadline) -> bool:
    prepare(env)  # a fresh database and Redis db, migrated (its user stays idle)
    tokens = fanout.create_users(env.variables(), POLLERS)
    print(
        f"\nsoak: {minutes:g} min; 2 daphne workers + run_worker, retention {RETENTION_HOURS} h;"
        f" {AGENT_USERS * len(MACHINES)} agents ({AGENT_USERS} users x {len(MACHINES)} machines),"
        f" {AGENT_USERS * DASHBOARDS_PER_AGENT_USER} WebSocket dashboards, {POLLERS} pollers"
    )
    with running_server(env) as server:
        began = time.monotonic()
        expected = seed_histories(server.port, tokens)
        print(
            f"seeded {len(tokens)} users with {SEED_YOUNG} young + {SEED_AGING} aging records"
            f" each in {time.monotonic() - began:.1f} s"
        )
        run = load(server, tokens, minutes, deadline)
        for load_report in run.loads:
            for user, sent in load_report.expected.items():
                expected[user].merge(sent)
        checks = final_checks(env, server, tokens, expected, run.log_size, deadline)
    return report(run, checks)


def _drop_database() -> None:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
        )


if __name__ == "__main__":
    sys.exit(main())
