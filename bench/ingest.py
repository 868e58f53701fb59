"""Ingest throughput through the HTTP endpoint, beside a plain INSERT of the same rows.

    .venv/bin/python -m bench.ingest             # 200,000 records, as `make run` + the agent
    .venv/bin/python -m bench.ingest --workers 1 --concurrency 1 --keep-alive   # one daphne
    .venv/bin/python -m bench.ingest --profile   # where the time goes
    .venv/bin/python -m bench.ingest --users 50  # 1 and 50 users, by daphne processes
    .venv/bin/python -m bench.ingest --otlp      # and the same through OTLP's /v1/logs

The records are generated and gzip'd before the clock starts (the agent compresses on its own
machine), then POSTed as NDJSON batches of 1,000 to the server as ``make run`` starts it
(``backend.serve``: one address, one daphne worker per CPU) on PostgreSQL + Redis. By default
the load is the agent's: two batches in flight, a new connection for each. The clock runs from
the first request to the last response, and every response must be a 200 that accepted the
whole batch. The baseline then reads the very rows
the server wrote, truncates ``usage_event`` and inserts them again with psycopg's
``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING``, one commit per 1,000 rows, as the
server commits once per batch.

``--users N`` measures how ingest scales with users: for each count of daphne processes in
``--sweep-workers`` (1, 2, 4), a fresh log takes the records once from one user and once
from N users (batch i from user i mod N), each user's agent sending at most two batches at
once (so one user has 2 clients in flight; N users min(2 N, 2 per process)). Every user
sends a batch before the clock starts: a user's first events make PostgreSQL analyse the
log (``store._Statistics.newcomer``), a one-off per user that would otherwise dominate a
short run. One user's batches wait for each other (appends are serialised per user); many
users' run side by side until the CPU, PostgreSQL or Redis binds. The table gives records/s
and the CPU split.

``--otlp`` then sends as many records again, as Claude Code's own OpenTelemetry exporter
would: api_request log events in binary protobuf ``ExportLogsServiceRequest``s of 512 records
(``--otlp-batch``; the SDK's BatchLogRecordProcessor's batch), gzip'd, to ``/v1/logs``, as
another user, with the same clients, on servers started again over the log as the baseline
left it (the same rows). Both figures come from one run on one machine: their ratio is the
finding.

``--profile`` runs the server under py-spy when a ``py-spy`` executable is found (PATH or
.venv/bin), else profiles ``services.ingest_records`` in-process with cProfile; either way it
prints the top 25 functions by cumulative time and a table of the ingest's phases.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gzip
import os
import pstats
import re
import resource
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import psycopg
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from psycopg import sql

from backend.serve import default_workers
from bench.common import (
    API,
    BENCH_USER,
    DEFAULT_DATABASE,
    DEFAULT_REDIS_URL,
    HOSTS,
    MANAGE_SECONDS,
    PYTHON,
    REPO,
    BenchEnv,
    Client,
    Deadline,
    RecordFactory,
    batched,
    ndjson_gzip,
    percentile,
    prepare,
    print_machine,
    rate,
    servers,
    services_cpu,
    stop_on_sigterm,
    tree_pids,
)
from tests.support import manage

BATCH = 1000
OTLP_BATCH = 512  # the OpenTelemetry SDK's BatchLogRecordProcessor: max_export_batch_size
OTLP_USER = "bench-otlp"
EVENTS = API + "events/"
TARGET_RECORDS_PER_SECOND = 20_000
TARGET_SHARE_OF_PLAIN_INSERT = 0.5
TOP_FUNCTIONS = 25
PY_SPY_RATE = 200  # samples per second

# (label, file path suffix, function name): the ingest's phases, looked up in a profile.
PHASES = (
    ("the ingest view (views.IngestView.post)", "usage/api/views.py", "post"),
    ("  body: gunzip + NDJSON (read_records)", "usage/api/ingest_body.py", "read_records"),
    ("in-process body decode (bench)", "bench/ingest.py", "_decode"),
    ("services.ingest_records, all of it", "usage/services.py", "ingest_records"),
    ("  parse records (wire.parse)", "usage/services.py", "_parse"),
    ("  dedupe query (store.latest_entries)", "usage/store.py", "latest_entries"),
    ("  dedupe decision (dedupe.decide)", "usage/dedupe.py", "decide"),
    ("  events and rows, before the lock (store.prepare)", "usage/store.py", "prepare"),
    ("    pricing (services._cost)", "usage/services.py", "_cost"),
    ("  insert (store.append_prepared)", "usage/store.py", "append_prepared"),
    ("  commit (database COMMIT)", "django/db/backends/base/base.py", "_commit"),
    ("  events with positions, after commit (store.positioned)", "usage/store.py", "positioned"),
    (
        "  post-commit projection (projector.after_commit)",
        "usage/projection/projector.py",
        "after_commit",
    ),
    ("    read events back (store.events_after)", "usage/store.py", "events_after"),
    (
        "    contributions (projector._contributions)",
        "usage/projection/projector.py",
        "_contributions",
    ),
    ("    Redis Lua apply (redis_store.apply)", "usage/projection/redis_store.py", "apply"),
    ("    broadcast (notify.changed)", "usage/notify.py", "changed"),
)


@dataclass(frozen=True)
class Feed:
    """Where batches go, and how an answer says the whole batch was taken."""

    name: str
    path: str
    headers: dict[str, str]
    batch: int
    took_all: Callable[[bytes, int], bool]  # (answer body, batch size)


NDJSON_FEED = Feed(
    "NDJSON",
    EVENTS,
    {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
    BATCH,
    lambda payload, size: orjson.loads(payload).get("accepted") == size,
)
# OTLP's full success is an empty ExportLogsServiceResponse: no partial_success.
OTLP_FEED = Feed(
    "OTLP",
    "/v1/logs",
    {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    OTLP_BATCH,
    lambda payload, size: payload == b"",
)


@dataclass(frozen=True)
class LoadResult:
    records: int
    seconds: float  # first request sent -> last response read
    latencies: list[float]
    cpu: dict[str, float]  # CPU seconds spent meanwhile, by process group


@dataclass(frozen=True)
class FunctionCost:
    name: str
    cumulative: float  # seconds (cProfile) or samples (py-spy)
    own: float
    calls: str


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    stop_on_sigterm()
    env = BenchEnv(database=args.database, redis_url=args.redis_url)
    deadline = Deadline(args.time_budget)
    try:
        print_machine()
        if args.profile and _profiler(args) == "cprofile":
            _profile_in_process(env, args, deadline)
        elif args.users > 1:
            _users_benchmark(env, args, deadline)
        else:
            _benchmark(env, args, deadline)
    finally:
        env.cleanup()
    return 0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="timed records (N)")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="client threads (K; the agent sends 2 at once)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="daphne processes behind each address (default: backend.serve's, one per CPU)",
    )
    parser.add_argument(
        "--servers", type=int, default=1, help="addresses, each a backend.serve of its own (S)"
    )
    parser.add_argument(
        "--keep-alive",
        action="store_true",
        help="one keep-alive connection per client thread (default: a new one per batch, "
        "as the agent does)",
    )
    parser.add_argument("--hours", type=float, default=6.0, help="records span the last H hours")
    parser.add_argument("--seed", type=int, default=20251005)
    parser.add_argument("--profile", action="store_true", help="show where the time goes")
    parser.add_argument(
        "--profiler",
        choices=("auto", "py-spy", "cprofile"),
        default="auto",
        help="with --profile: py-spy around daphne if found (auto), or cProfile in-process",
    )
    parser.add_argument(
        "--analyze",
        action="store_true",
        help="ANALYZE usage_event after the warm-up (a diagnostic: gives the planner the "
        "statistics autovacuum would have in steady state; off for the benchmark itself)",
    )
    parser.add_argument(
        "--users", type=int, default=1, help="with more than 1: the users table (see above)"
    )
    parser.add_argument(
        "--sweep-workers",
        default="1,2,4",
        help="with --users: the daphne processes of each row, comma-separated",
    )
    parser.add_argument(
        "--otlp", action="store_true", help="also the same records through OTLP's /v1/logs"
    )
    parser.add_argument(
        "--otlp-batch", type=int, default=OTLP_BATCH, help="log records per OTLP request"
    )
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--time-budget", type=float, default=1800.0, help="seconds, whole run")
    args = parser.parse_args(argv)
    if args.records < BATCH or args.records % BATCH:
        parser.error(f"--records must be a positive multiple of {BATCH}")
    if args.concurrency < 1 or args.servers < 1 or (args.workers or 1) < 1 or args.users < 1:
        parser.error("--concurrency, --servers, --workers and --users must be at least 1")
    try:
        args.sweep = [int(part) for part in args.sweep_workers.split(",")]
    except ValueError:
        parser.error("--sweep-workers: whole numbers, comma-separated")
    if not args.sweep or min(args.sweep) < 1:
        parser.error("--sweep-workers: whole numbers from 1")
    if args.profile and args.profiler == "py-spy" and _py_spy() is None:
        parser.error("--profiler py-spy: no py-spy executable on PATH or in .venv/bin")
    return args


def _profiler(args: argparse.Namespace) -> str:
    if args.profiler == "auto":
        return "py-spy" if _py_spy() is not None else "cprofile"
    return str(args.profiler)


# --- the benchmark ----------------------------------------------------------------------


def _benchmark(env: BenchEnv, args: argparse.Namespace, deadline: Deadline) -> None:
    token = prepare(env)
    workers = args.workers or default_workers()
    warm_up, timed = _bodies(args, warm_up_batches=2 * args.servers * workers)
    spy = _py_spy() if args.profile and _profiler(args) == "py-spy" else None
    outputs = [Path(env.var_dir) / f"py-spy-{index}.txt" for index in range(args.servers)]
    wrappers = [_py_spy_command(spy, output) for output in outputs] if spy else []
    print(
        f"\nend to end: {args.records:,} records in {len(timed)} gzip'd NDJSON batches of "
        f"{BATCH:,}, {args.servers} address(es) of {workers} daphne worker(s), "
        f"{args.concurrency} client thread(s), "
        + ("keep-alive" if args.keep_alive else "a new connection per batch")
        + (" [under py-spy]" if spy else "")
        + (" [ANALYZE after the warm-up]" if args.analyze else "")
    )
    fresh = not args.keep_alive
    with servers(env, args.servers, wrappers=wrappers, workers=workers) as started:
        ports = [server.port for server in started]
        # Untimed, two batches per worker at once, so that each worker has most likely had
        # one: imports, price table and connection pool get ready.
        _post_all(
            ports, token, warm_up, concurrency=len(warm_up) // 2, fresh=True, deadline=deadline
        )
        if args.analyze:
            _analyze(env)
        server_pids = [pid for server in started for pid in tree_pids(server.pid)]
        load = _post_all(
            ports,
            token,
            timed,
            concurrency=args.concurrency,
            fresh=fresh,
            deadline=deadline,
            server_pids=server_pids,
        )
        _check_totals(ports[0], token, expected=args.records + len(warm_up) * BATCH)
    plain_seconds = _plain_insert(env, skip=len(warm_up) * BATCH, expected=args.records)
    _report(load, plain_seconds, args.records)
    if args.otlp:
        otlp = _otlp_benchmark(env, args, deadline, workers=workers)
        _report_otlp(load, otlp, args.otlp_batch)
    if spy:
        costs, total = _py_spy_costs(outputs)
        print(f"\npy-spy, {PY_SPY_RATE} samples/s, wall time of the thread(s) running the view:")
        _print_profile(costs, total, unit="samples")


@dataclass(frozen=True)
class UsersRow:
    workers: int
    users: int
    clients: int
    load: LoadResult


def _users_benchmark(env: BenchEnv, args: argparse.Namespace, deadline: Deadline) -> None:
    print(
        f"\nusers: {args.records:,} records per run in gzip'd NDJSON batches of {BATCH:,}, "
        f"from 1 user and from {args.users} users, by daphne processes {args.sweep}; "
        "a new connection per batch"
    )
    rows = []
    for workers in args.sweep:
        for users in (1, args.users):
            prepare(env)
            tokens = _tokens(env, users)
            clients = min(2 * users, 2 * workers)
            # Untimed: a batch for every user (a user's first events are analysed at once,
            # store._Statistics.newcomer) and two per worker (imports, pools).
            warm_up, timed = _bodies(args, warm_up_batches=max(users, 2 * workers))
            with servers(env, 1, workers=workers) as started:
                port = started[0].port
                _post_all(
                    [port], tokens, warm_up, concurrency=clients, fresh=True, deadline=deadline
                )
                load = _post_all(
                    [port],
                    tokens,
                    timed,
                    concurrency=clients,
                    fresh=True,
                    deadline=deadline,
                    server_pids=tree_pids(started[0].pid),
                )
                _check_users_totals(port, tokens, runs=(len(warm_up), len(timed)))
            rows.append(UsersRow(workers, users, clients, load))
            print(f"  {workers} process(es), {users} user(s): {rate(load.records, load.seconds)}/s")
    plain_seconds = _plain_insert(env, skip=len(warm_up) * BATCH, expected=args.records)
    _report_users(rows, args.records / plain_seconds)


def _tokens(env: BenchEnv, count: int) -> list[str]:
    """API tokens of ``count`` users (the first is ``prepare``'s), made in one process."""
    code = (
        "from django.contrib.auth.models import User\n"
        "from rest_framework.authtoken.models import Token\n"
        f"for i in range({count}):\n"
        f"    user, _ = User.objects.get_or_create(username=f'{BENCH_USER}{{i}}')\n"
        "    print('token', Token.objects.get_or_create(user=user)[0].key)\n"
    )
    printed = manage(env.variables(), "shell", "-c", code, timeout=MANAGE_SECONDS, python=PYTHON)
    tokens = [line.split()[1] for line in printed.splitlines() if line.startswith("token ")]
    if len(tokens) != count:
        raise RuntimeError(f"made {len(tokens)} tokens, wanted {count}")
    return tokens


def _check_users_totals(port: int, tokens: Sequence[str], *, runs: Sequence[int]) -> None:
    """Every user's projection counts exactly its own batches: of each run of batches (the
    warm-up, the timed one), batch i is user i mod T's."""
    for index, token in enumerate(tokens):
        batches = sum(len(range(index, run, len(tokens))) for run in runs)
        _check_totals(port, token, expected=batches * BATCH)


def _report_users(rows: Sequence[UsersRow], plain: float) -> None:
    users = max(row.users for row in rows)
    print(
        f"\n{'daphne processes':>16} {'users':>6} {'clients':>8} {'records/s':>10} "
        f"{'vs 1 user':>9} {'vs plain':>9} {'p50 ms':>7} {'p99 ms':>7}  CPU s: daphne / PG / Redis"
    )
    single = {row.workers: row.load.records / row.load.seconds for row in rows if row.users == 1}
    for row in rows:
        per_second = row.load.records / row.load.seconds
        cpu = list(row.load.cpu.values())  # client, daphne, PostgreSQL, Redis
        print(
            f"{row.workers:>16} {row.users:>6} {row.clients:>8} {per_second:>10,.0f} "
            f"{per_second / single[row.workers]:>9.2f} {per_second / plain:>9.2f} "
            f"{percentile(row.load.latencies, 0.5) * 1000:>7.0f} "
            f"{percentile(row.load.latencies, 0.99) * 1000:>7.0f}  "
            + " / ".join(f"{seconds:.1f}" for seconds in cpu[1:])
        )
    print(
        f"plain INSERT ... ON CONFLICT DO NOTHING executemany (the last run's rows): "
        f"{plain:,.0f} records/s; {users} users' rows are the same records as 1 user's"
    )


def _bodies(args: argparse.Namespace, *, warm_up_batches: int) -> tuple[list[bytes], list[bytes]]:
    """The warm-up batches (the oldest records), then the timed batches."""
    began = time.perf_counter()
    total = args.records + warm_up_batches * BATCH
    end = datetime.now(tz=UTC) - timedelta(minutes=1)
    records = RecordFactory(seed=args.seed).records(
        total, end=end, span=timedelta(hours=args.hours)
    )
    bodies = [ndjson_gzip(chunk) for chunk in batched(records, BATCH)]
    size = sum(len(body) for body in bodies) / len(bodies)
    print(
        f"generated {total:,} records in {time.perf_counter() - began:.1f} s "
        f"(average gzip'd batch {size / 1024:.0f} KiB)"
    )
    return bodies[:warm_up_batches], bodies[warm_up_batches:]


def _post_all(
    ports: Sequence[int],
    token: str | Sequence[str],
    bodies: Sequence[bytes],
    *,
    concurrency: int,
    fresh: bool,
    deadline: Deadline,
    server_pids: Sequence[int] = (),
    feed: Feed = NDJSON_FEED,
) -> LoadResult:
    """POST ``bodies`` from ``concurrency`` threads (thread i uses address i mod S), with a
    new connection per batch if ``fresh``; batch i with ``token``, or of several tokens
    the (i mod T)th."""
    tokens = [token] if isinstance(token, str) else list(token)
    work: SimpleQueue[tuple[int, bytes]] = SimpleQueue()
    for item in enumerate(bodies):
        work.put(item)
    spans: list[tuple[float, float]] = []
    failures: list[str] = []
    stop = threading.Event()

    def worker(thread: int) -> None:
        client = Client(ports[thread % len(ports)], tokens[0], connection_per_request=fresh)
        try:
            while not stop.is_set():
                try:
                    index, body = work.get_nowait()
                except Empty:
                    return
                owner = tokens[index % len(tokens)]
                problem = _post_one(client, index, body, spans, deadline, token=owner, feed=feed)
                if problem:
                    failures.append(problem)
                    stop.set()
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            failures.append(f"{type(error).__name__}: {error}")
            stop.set()
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(concurrency)]
    services_before, client_before = services_cpu(server_pids), _own_cpu_seconds()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(deadline.remaining(), 1.0))
    if failures or any(thread.is_alive() for thread in threads):
        stop.set()
        raise RuntimeError("ingest failed: " + "; ".join(failures[:5] or ["threads hung"]))
    services_after = services_cpu(server_pids)
    cpu = {"client (this script's threads)": _own_cpu_seconds() - client_before}
    cpu |= {name: services_after[name] - services_before[name] for name in services_after}
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    latencies = [end - start for start, end in spans]
    return LoadResult(len(bodies) * feed.batch, seconds, latencies, cpu)


def _own_cpu_seconds() -> float:
    """This process's user + system CPU: while the clients post, their threads' only."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _post_one(
    client: Client,
    index: int,
    body: bytes,
    spans: list[tuple[float, float]],
    deadline: Deadline,
    *,
    token: str,
    feed: Feed = NDJSON_FEED,
) -> str | None:
    """One batch; a description of what went wrong, or None."""
    deadline.check("posting batches")
    headers = {
        "Authorization": f"Token {token}",
        **feed.headers,
        "X-Usage-Host": HOSTS[index % len(HOSTS)],  # OTLP names its host in the body
    }
    began = time.perf_counter()
    status, payload = client.request("POST", feed.path, body, headers)
    spans.append((began, time.perf_counter()))
    if status != 200:
        return f"batch {index}: HTTP {status}: {payload[:300]!r}"
    if not feed.took_all(payload, feed.batch):
        return f"batch {index}: not all of {feed.batch} records taken: {payload[:300]!r}"
    return None


def _check_totals(port: int, token: str, *, expected: int) -> None:
    """The projections saw every record: stats/ counts them all."""
    client = Client(port, token)
    try:
        status, payload = client.get(API + "stats/")
    finally:
        client.close()
    counted = orjson.loads(payload).get("total_messages") if status == 200 else None
    if counted != expected:
        raise RuntimeError(f"stats/ counts {counted} messages, expected {expected}")


# --- the same records through OpenTelemetry ---------------------------------------------


def _otlp_benchmark(
    env: BenchEnv, args: argparse.Namespace, deadline: Deadline, *, workers: int
) -> LoadResult:
    """The records again, as api_request events to /v1/logs, as another user, on servers
    started again over the log the baseline left."""
    feed = dataclasses.replace(OTLP_FEED, batch=args.otlp_batch)
    token = manage(env.variables(), "create_token", OTLP_USER, python=PYTHON).strip()
    warm_up, timed = _otlp_bodies(args, feed.batch, warm_up_batches=2 * args.servers * workers)
    print(
        f"\nOTLP: {len(timed) * feed.batch:,} records in {len(timed)} gzip'd protobuf "
        f"ExportLogsServiceRequests of {feed.batch}, to /v1/logs, the same clients"
    )
    with servers(env, args.servers, wrappers=[], workers=workers) as started:
        ports = [server.port for server in started]
        _post_all(
            ports, token, warm_up, concurrency=len(warm_up) // 2, fresh=True,
            deadline=deadline, feed=feed,
        )  # fmt: skip
        server_pids = [pid for server in started for pid in tree_pids(server.pid)]
        load = _post_all(
            ports,
            token,
            timed,
            concurrency=args.concurrency,
            fresh=not args.keep_alive,
            deadline=deadline,
            server_pids=server_pids,
            feed=feed,
        )
        _check_totals(ports[0], token, expected=(len(warm_up) + len(timed)) * feed.batch)
    return load


def _otlp_bodies(
    args: argparse.Namespace, batch: int, *, warm_up_batches: int
) -> tuple[list[bytes], list[bytes]]:
    """Batches of api_request events made from records of their own (a seed of their own:
    no request id is shared with the NDJSON run's), warm-up first."""
    count = (args.records // batch + warm_up_batches) * batch
    end = datetime.now(tz=UTC) - timedelta(minutes=1)
    records = RecordFactory(seed=args.seed + 1).records(
        count, end=end, span=timedelta(hours=args.hours)
    )
    bodies = [
        gzip.compress(_export_request(chunk, HOSTS[index % len(HOSTS)]), compresslevel=6)
        for index, chunk in enumerate(batched(records, batch))
    ]
    return bodies[:warm_up_batches], bodies[warm_up_batches:]


def _export_request(records: Sequence[dict[str, Any]], host: str) -> bytes:
    """An ``ExportLogsServiceRequest`` as Claude Code's exporter sends it: one resource
    (naming the host), one scope, an api_request log record per transcript record."""
    resource = Resource(attributes=[_attribute("host.name", host)])
    scope = InstrumentationScope(name="com.anthropic.claude_code.events", version="2.0.14")
    log_records = [_api_request(record) for record in records]
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=resource, scope_logs=[ScopeLogs(scope=scope, log_records=log_records)]
            )
        ]
    ).SerializeToString()


def _api_request(record: dict[str, Any]) -> LogRecord:
    usage = record["message"]["usage"]
    attributes = {
        "event.name": "api_request",
        "event.timestamp": record["timestamp"],
        "session.id": record["sessionId"],
        "request_id": record["requestId"],
        "model": record["message"]["model"],
        "input_tokens": usage.get("input_tokens", 0),
        "output_tokens": usage.get("output_tokens", 0),
        "cache_read_tokens": usage.get("cache_read_input_tokens", 0),
        "cache_creation_tokens": usage.get("cache_creation_input_tokens", 0),
        "cost_usd": 0.0123,
        "duration_ms": 2345,
        "terminal.type": "vscode",
        "user.id": "f" * 64,
    }
    moment = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    nanos = int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
    return LogRecord(
        time_unix_nano=nanos,
        observed_time_unix_nano=nanos,
        severity_number=SeverityNumber.SEVERITY_NUMBER_INFO,
        body=AnyValue(string_value="claude_code.api_request"),
        attributes=[_attribute(key, value) for key, value in attributes.items()],
    )


def _attribute(key: str, value: object) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(int_value=int(str(value))))


def _report_otlp(ndjson: LoadResult, otlp: LoadResult, batch: int) -> None:
    ndjson_rate = ndjson.records / ndjson.seconds
    otlp_rate = otlp.records / otlp.seconds
    print(f"\n{'feed (same run, same clients)':<52} {'records/s':>10} {'p50 ms/batch':>13}")
    for name, load, size in (("NDJSON events/", ndjson, BATCH), ("OTLP /v1/logs", otlp, batch)):
        latency = percentile(load.latencies, 0.5) * 1000
        print(f"{f'{name} ({size:,}/batch)':<52} {rate(load.records, load.seconds):>10} "
              f"{latency:>13.0f}")  # fmt: skip
    print(f"{'ratio OTLP / NDJSON':<52} {otlp_rate / ndjson_rate:>10.2f}")
    shares = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in otlp.cpu.items())
    per_record = sum(otlp.cpu.values()) / otlp.records * 1e6
    print(f"OTLP CPU while posting: {shares} ({per_record:.0f} us per record in all)")


# --- the baseline -----------------------------------------------------------------------


def _plain_insert(env: BenchEnv, *, skip: int, expected: int) -> float:
    """Seconds to insert the server's own rows again, all values precomputed."""
    with psycopg.connect(env.database_url) as conn:
        columns = _columns(conn)
        listed = sql.SQL(", ").join(map(sql.Identifier, columns))
        rows = conn.execute(
            sql.SQL("SELECT {} FROM usage_event ORDER BY position OFFSET %s").format(listed),
            [skip],
        ).fetchall()
        if len(rows) != expected:
            raise RuntimeError(f"usage_event holds {len(rows)} timed rows, expected {expected}")
        conn.execute("TRUNCATE usage_event")
        conn.commit()
        insert = sql.SQL("INSERT INTO usage_event ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
            listed, sql.SQL(", ").join(sql.Placeholder() * len(columns))
        )
        began = time.perf_counter()
        for chunk in batched(rows, BATCH):
            with conn.cursor() as cursor:
                cursor.executemany(insert, chunk)
            conn.commit()
        seconds = time.perf_counter() - began
        stored = conn.execute("SELECT count(*) FROM usage_event").fetchone()
    if stored is None or stored[0] != expected:
        raise RuntimeError(f"plain insert stored {stored}, expected {expected}")
    return seconds


def _analyze(env: BenchEnv) -> None:
    with psycopg.connect(env.database_url, autocommit=True) as conn:
        conn.execute("ANALYZE usage_event")


def _columns(conn: psycopg.Connection[Any]) -> list[str]:
    """Every column of usage_event but the position the database assigns."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'usage_event' AND column_name <> 'position' ORDER BY ordinal_position"
    ).fetchall()
    return [row[0] for row in rows]


def _report(load: LoadResult, plain_seconds: float, records: int) -> None:
    end_to_end = load.records / load.seconds
    plain = records / plain_seconds
    share = end_to_end / plain
    print(f"\n{'measure':<52} {'records/s':>10} {'target':>12}  met")
    print(
        f"{'end to end (HTTP, 1,000/batch)':<52} {rate(load.records, load.seconds):>10} "
        f"{'>= 20,000':>12}  {_met(end_to_end >= TARGET_RECORDS_PER_SECOND)}"
    )
    print(f"{'plain INSERT ... ON CONFLICT DO NOTHING executemany':<52} {plain:>10,.0f}")
    print(
        f"{'ratio end to end / plain':<52} {share:>10.2f} {'>= 0.50':>12}  "
        f"{_met(share >= TARGET_SHARE_OF_PLAIN_INSERT)}"
    )
    tenth = max(len(load.latencies) // 10, 1)
    first, last = load.latencies[:tenth], load.latencies[-tenth:]
    print(
        f"\nend to end {load.seconds:.2f} s; plain insert {plain_seconds:.2f} s; per-batch "
        f"latency p50 {percentile(load.latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(load.latencies, 0.99) * 1000:.0f} ms; p50 of the first tenth of "
        f"the batches {percentile(first, 0.5) * 1000:.0f} ms, of the last tenth "
        f"{percentile(last, 0.5) * 1000:.0f} ms (growth with the log's size shows here)"
    )
    available = load.seconds * len(os.sched_getaffinity(0))
    shares = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in load.cpu.items())
    per_batch = sum(load.cpu.values()) / (load.records / BATCH) * 1000
    print(
        f"CPU while posting: {shares}; {sum(load.cpu.values()):.2f} s in all "
        f"({per_batch:.0f} ms per batch), of {available:.2f} s the CPUs had"
    )


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


# --- profiling: py-spy around the server -------------------------------------------------


def _py_spy() -> str | None:
    local = REPO / ".venv" / "bin" / "py-spy"
    return shutil.which("py-spy") or (str(local) if local.exists() else None)


def _py_spy_command(executable: str, output: Path) -> list[str]:
    # --idle keeps the samples of a thread waiting on PostgreSQL or Redis (wall time, not
    # only CPU); --threads names each sample's thread; --nonblocking samples without
    # pausing the server, so that the throughput stays close to the unprofiled one;
    # --subprocesses follows the launcher's daphne workers.
    return [
        executable,
        "record",
        "--subprocesses",
        "--format",
        "raw",
        "--idle",
        "--threads",
        "--nolineno",
        "--full-filenames",
        "--nonblocking",
        "--rate",
        str(PY_SPY_RATE),
        "--output",
        str(output),
        "--",
    ]


_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*)\)$")
_VIEW = "usage/api/views.py:post"


def _py_spy_costs(outputs: Sequence[Path]) -> tuple[list[FunctionCost], float]:
    """Wall-time profile of the threads that ran the ingest view: per function, the samples
    with it anywhere on the stack (cumulative) and on top (own). Their samples outside the
    view are the thread waiting for the next request: HTTP in daphne's event loop and the
    client's turn."""
    by_thread: dict[str, list[tuple[list[str], int]]] = {}
    for output in outputs:
        for line in output.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            parts = stack.split(";")
            # With --subprocesses a stack starts with its process and its ancestors (the
            # launcher), then its thread.
            process = ""
            while parts and parts[0].startswith("process "):
                process = parts.pop(0)
            if not parts:
                continue
            thread, *frames = parts
            named = [_frame_name(frame) for frame in frames]
            key = f"{output.name}/{process}/{thread}"
            by_thread.setdefault(key, []).append((named, int(count_text)))
    cumulative: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for samples in by_thread.values():
        if not any(_VIEW in frames for frames, _ in samples):
            continue
        for full, count in samples:
            # Below the view only: the thread, asgiref and dispatch frames above it are on
            # every sample and would fill the top of the table.
            frames = full[full.index(_VIEW) :] if _VIEW in full else full
            total += count
            own[frames[-1] if frames else "(no frame)"] += count
            for name in set(frames):
                cumulative[name] += count
    costs = [FunctionCost(name, cumulative[name], own[name], "") for name in cumulative]
    return costs, float(total)


def _frame_name(frame: str) -> str:
    found = _FRAME.match(frame)
    if not found:
        return frame
    # py-spy 0.4 names methods by their qualified name ("IngestView.post"); the phases
    # and the view are looked up by the bare function name.
    function = found["function"].rsplit(".", 1)[-1]
    return f"{_short_path(found['path'])}:{function}"


# --- profiling: cProfile around services.ingest_records ---------------------------------


def _profile_in_process(env: BenchEnv, args: argparse.Namespace, deadline: Deadline) -> None:
    """No py-spy: run ingest_records itself, after django.setup() with the same settings."""
    prepare(env)
    env.export()
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections

    from usage import services

    user_id = int(get_user_model().objects.get(username=BENCH_USER).pk)
    warm_up, timed = _bodies(args, warm_up_batches=1)

    def ingest(index: int, body: bytes) -> None:
        records = _decode(body)
        result = services.ingest_records(
            user_id=user_id, records=records, host=HOSTS[index % len(HOSTS)], now=_now()
        )
        if result.accepted != len(records):
            raise RuntimeError(f"batch {index}: accepted {result.accepted} of {len(records)}")

    for index, body in enumerate(warm_up):
        ingest(-1 - index, body)
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    for index, body in enumerate(timed):
        deadline.check("profiling ingest_records")
        ingest(index, body)
    profiler.disable()
    seconds = time.perf_counter() - began
    connections.close_all()
    print(
        f"\nin-process services.ingest_records under cProfile (no HTTP; cProfile slows Python "
        f"code down): {args.records:,} records in {seconds:.1f} s = "
        f"{rate(args.records, seconds)} records/s"
    )
    costs, _ = _cprofile_costs(profiler)
    _print_profile(costs, seconds, unit="seconds")


def _decode(body: bytes) -> list[object]:
    """What the view does to a body: gunzip, one JSON document per line."""
    return [orjson.loads(line) for line in gzip.decompress(body).splitlines() if line]


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _cprofile_costs(profiler: cProfile.Profile) -> tuple[list[FunctionCost], float]:
    """Per function: cumulative and own seconds; and the total of own seconds."""
    stats = pstats.Stats(profiler)
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    costs = [
        FunctionCost(
            f"{_short_path(path)}:{function}",
            cumulative,
            own,
            str(calls) if calls == primitive else f"{calls}/{primitive}",
        )
        for (path, _, function), (primitive, calls, own, cumulative, _) in table.items()
    ]
    total: float = stats.total_tt  # type: ignore[attr-defined]
    return costs, total


# --- profile report ---------------------------------------------------------------------


def _print_profile(costs: list[FunctionCost], total: float, *, unit: str) -> None:
    merged = _merge_same_names(costs)
    print(f"\ntop {TOP_FUNCTIONS} functions by cumulative {unit} (total {total:,.1f} {unit}):")
    print(f"{'cumulative':>11} {'%':>6} {'own':>9} {'calls':>12}  function")
    top = sorted(merged.values(), key=lambda cost: cost.cumulative, reverse=True)
    for cost in top[:TOP_FUNCTIONS]:
        print(
            f"{cost.cumulative:>11,.2f} {100 * cost.cumulative / total:>5.1f}% "
            f"{cost.own:>9,.2f} {cost.calls:>12}  {cost.name}"
        )
    print(f"\nphases of an ingest (cumulative {unit}, % of the profile's total):")
    view = _phase(merged, "usage/api/views.py", "post")
    if view is not None:
        outside = total - view
        label = "outside the view: waiting for a request (daphne's HTTP, the client)"
        print(f"{outside:>11,.2f} {100 * outside / total:>5.1f}%  {label}")
    for label, path, function in PHASES:
        found = _phase(merged, path, function)
        if found is not None:
            print(f"{found:>11,.2f} {100 * found / total:>5.1f}%  {label}")


def _merge_same_names(costs: list[FunctionCost]) -> dict[str, FunctionCost]:
    """cProfile lists a function once per definition line; one row per name is clearer."""
    merged: dict[str, FunctionCost] = {}
    for cost in costs:
        known = merged.get(cost.name)
        if known is None:
            merged[cost.name] = cost
        else:
            merged[cost.name] = FunctionCost(
                cost.name,
                max(known.cumulative, cost.cumulative),  # recursion would double count
                known.own + cost.own,
                known.calls or cost.calls,
            )
    return merged


def _phase(merged: dict[str, FunctionCost], path: str, function: str) -> float | None:
    suffix = f"{path}:{function}"
    found = [cost.cumulative for name, cost in merged.items() if name.endswith(suffix)]
    return max(found) if found else None


def _short_path(path: str) -> str:
    """Repository-relative, or relative to site-packages or the standard library."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    stdlib = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/"
    if stdlib in path:
        return "stdlib/" + path.split(stdlib, 1)[1]
    root = str(REPO) + os.sep
    if path.startswith(root):
        return path[len(root) :]
    return path


if __name__ == "__main__":
    sys.exit(main())
