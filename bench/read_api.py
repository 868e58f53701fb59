"""Read latency of dashboard/, timeseries/ and stats/ with 1,000 and 1,000,000 events in the log.

    .venv/bin/python -m bench.read_api                        # 1,000 and 1,000,000 events
    .venv/bin/python -m bench.read_api --sizes 1000,100000    # a quick run

For each size, its own fresh PostgreSQL database (``bench_1000``, ``bench_1000000``...) and
Redis key prefix (in one Redis db, flushed first): one user's events, spread over the last 30
days in realistic sessions, projects, models and hosts, are ingested in-process through
``services.ingest_records`` in batches of 5,000 (retention 0 keeps them all), in a child
process. Then one daphne process per size serves them, all at once, and each endpoint gets
50 warm-up and 500 timed sequential requests per size over keep-alive connections, the sizes
taking turns request by request: whatever else the machine is doing then weighs on every
size alike, so the ratio of their latencies stays fair. The latency is the client's, from
sending a request to reading the whole response.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.common import (
    API,
    BENCH_USER,
    DEFAULT_DATABASE,
    DEFAULT_REDIS_URL,
    HOSTS,
    PYTHON,
    REPO,
    BenchEnv,
    Client,
    Deadline,
    RecordFactory,
    batched,
    percentile,
    prepare,
    print_machine,
    reset_redis,
    servers,
    stop_on_sigterm,
)

ENDPOINTS = ("dashboard/", "timeseries/", "timeseries/?hours=24&interval=15min", "stats/")
POPULATE_BATCH = 5000
TARGET_P50_MS = 10.0
TARGET_P99_MS = 30.0
TARGET_P50_RATIO = 1.5


@dataclass(frozen=True)
class Latency:
    size: int
    endpoint: str
    milliseconds: list[float]
    response_bytes: int

    @property
    def p50(self) -> float:
        return percentile(self.milliseconds, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.milliseconds, 0.99)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if args.populate is not None:
        _populate(args.populate, days=args.days, seed=args.seed)
        return 0
    stop_on_sigterm()
    deadline = Deadline(args.time_budget)
    print_machine()
    envs = {
        size: BenchEnv(
            database=f"{args.database}_{size}",
            redis_url=args.redis_url,
            redis_prefix=f"bench{size}",
            # It measures reads as fast as they come: the read rate limit would cut them off.
            extra={"USAGE_THROTTLE_READ_PER_MINUTE": "0"},
        )
        for size in args.sizes
    }
    try:
        reset_redis(args.redis_url)
        tokens = {size: _fill(env, size, args, deadline) for size, env in envs.items()}
        results = _serve_and_measure(envs, tokens, args, deadline)
    finally:
        for env in envs.values():
            env.cleanup()
    _report(results, args.sizes)
    return 0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[1000, 1_000_000], help="e.g. 1000,100000")
    parser.add_argument("--warm-up", type=int, default=50, help="untimed requests per endpoint")
    parser.add_argument("--requests", type=int, default=500, help="timed requests per endpoint")
    parser.add_argument("--days", type=float, default=30.0, help="events span the last D days")
    parser.add_argument("--seed", type=int, default=20251005)
    parser.add_argument(
        "--database", default=DEFAULT_DATABASE, help="name prefix: one database NAME_SIZE per size"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="flushed at the start")
    parser.add_argument("--time-budget", type=float, default=3600.0, help="seconds, whole run")
    parser.add_argument("--populate", type=int, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warm_up < 0:
        parser.error("--requests must be at least 1 and --warm-up not negative")
    return args


def _sizes(text: str) -> list[int]:
    sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes are positive event counts, e.g. 1000,100000")
    return sorted(set(sizes))


# --- one size ---------------------------------------------------------------------------


def _fill(env: BenchEnv, size: int, args: argparse.Namespace, deadline: Deadline) -> str:
    """A fresh log of ``size`` events, projected; the user's token."""
    token = prepare(env, flush_redis=False)
    began = time.perf_counter()
    _run_populate(env, size, args, deadline)
    seconds = time.perf_counter() - began
    print(f"{size:,} events ingested in-process in {seconds:.1f} s", flush=True)
    return token


def _serve_and_measure(
    envs: dict[int, BenchEnv], tokens: dict[int, str], args: argparse.Namespace, deadline: Deadline
) -> list[Latency]:
    with contextlib.ExitStack() as stack:
        clients: dict[int, Client] = {}
        for size, env in envs.items():
            (server,) = stack.enter_context(servers(env, 1, workers=1))
            client = Client(server.port, tokens[size])
            stack.callback(client.close)
            _check_count(client, size)
            clients[size] = client
        return [
            latency
            for endpoint in ENDPOINTS
            for latency in _measure(clients, endpoint, args.warm_up, args.requests, deadline)
        ]


def _run_populate(env: BenchEnv, size: int, args: argparse.Namespace, deadline: Deadline) -> None:
    command = [str(PYTHON), "-m", "bench.read_api", "--populate", str(size)]
    command += ["--days", str(args.days), "--seed", str(args.seed)]
    done = subprocess.run(
        command,
        cwd=REPO,
        env=env.variables(),
        timeout=max(deadline.remaining(), 1.0),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"populating {size:,} events failed (exit {done.returncode})")


def _check_count(client: Client, size: int) -> None:
    """The projections hold every event before anything is timed."""
    status, payload = client.get(API + "stats/")
    counted = orjson.loads(payload).get("total_messages") if status == 200 else None
    if counted != size:
        raise RuntimeError(f"stats/ counts {counted} messages, expected {size}")


def _measure(
    clients: dict[int, Client], endpoint: str, warm_up: int, requests: int, deadline: Deadline
) -> list[Latency]:
    """``requests`` timed GETs of ``endpoint`` per size, the sizes taking turns."""
    path = API + endpoint
    for client in clients.values():
        for _ in range(warm_up):
            _get(client, path)
    milliseconds: dict[int, list[float]] = {size: [] for size in clients}
    response_bytes = dict.fromkeys(clients, 0)
    for _ in range(requests):
        deadline.check(f"timing {endpoint}")
        for size, client in clients.items():
            began = time.perf_counter()
            response_bytes[size] = _get(client, path)
            milliseconds[size].append((time.perf_counter() - began) * 1000)
    return [Latency(size, endpoint, milliseconds[size], response_bytes[size]) for size in clients]


def _get(client: Client, path: str) -> int:
    status, payload = client.get(path)
    if status != 200:
        raise RuntimeError(f"GET {path}: HTTP {status}: {payload[:300]!r}")
    return len(payload)


# --- the child: fill the log ------------------------------------------------------------


def _populate(count: int, *, days: float, seed: int) -> None:
    """Runs in a child process whose environment holds the benchmark's settings."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections

    from usage import services

    user_id = int(get_user_model().objects.get(username=BENCH_USER).pk)
    end = datetime.now(tz=UTC) - timedelta(minutes=1)
    records = RecordFactory(seed=seed).records(count, end=end, span=timedelta(days=days))
    done = 0
    step = max(count // 10, POPULATE_BATCH)
    for index, chunk in enumerate(batched(records, POPULATE_BATCH)):
        result = services.ingest_records(
            user_id=user_id,
            records=chunk,
            host=HOSTS[index % len(HOSTS)],
            now=datetime.now(tz=UTC),
        )
        if result.accepted != len(chunk):
            raise RuntimeError(f"batch {index}: accepted {result.accepted} of {len(chunk)}")
        done += len(chunk)
        if done % step < POPULATE_BATCH and done < count:
            print(f"  {done:,} / {count:,}", flush=True)
    connections.close_all()


# --- report -----------------------------------------------------------------------------


def _report(results: list[Latency], sizes: Sequence[int]) -> None:
    print(
        f"\n{'events':>10}  {'endpoint':<38} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'bytes':>7}"
    )
    for row in sorted(results, key=lambda r: (r.size, ENDPOINTS.index(r.endpoint))):
        print(
            f"{row.size:>10,}  {row.endpoint:<38} {row.p50:>8.2f} {row.p99:>8.2f} "
            f"{max(row.milliseconds):>8.2f} {row.response_bytes:>7,}"
        )
    small, large = min(sizes), max(sizes)
    by_key = {(row.size, row.endpoint): row for row in results}
    print(
        f"\nat {large:,} events (targets p50 < {TARGET_P50_MS:g} ms, p99 < {TARGET_P99_MS:g} "
        f"ms), and p50 ratio {large:,} / {small:,} (target < {TARGET_P50_RATIO:g}):"
    )
    for endpoint in ENDPOINTS:
        big = by_key[(large, endpoint)]
        ratio = big.p50 / by_key[(small, endpoint)].p50
        print(
            f"  {endpoint:<38} p50 {_met(big.p50 < TARGET_P50_MS)}, "
            f"p99 {_met(big.p99 < TARGET_P99_MS)}, ratio {ratio:.2f} "
            f"{_met(ratio < TARGET_P50_RATIO)}"
        )


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


if __name__ == "__main__":
    sys.exit(main())
