"""What one retention pass costs, by the size of the user's history: in-process, no HTTP.

    .venv/bin/python -m bench.retention                  # histories of 10,000 and 100,000
    .venv/bin/python -m bench.retention --histories 5000,50000 --expired 500

For each history size H, a fresh log (PostgreSQL and Redis, set up as ``bench.ingest`` sets
them up) gets one user's H young records (the last 5 hours) and ``--expired`` records a
minute past the 6-hour horizon, all ingested with retention off, so the projection holds
them all. Then ``services.prune_events`` runs once, as the worker does each minute, and is
timed (wall and this process's CPU), with the Redis commands meanwhile (``INFO
commandstats`` before and after, so server-wide: on a quiet machine, the prune's own; no
``SCAN`` or ``KEYS`` at all).
Beside it, what the earlier retention did after every prune that touched the user: rebuild
the user's projection from the log (``projector.rebuild_user``), timed on the same log.
The user's totals after the prune are checked against the young records alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.common import (
    BENCH_USER,
    DEFAULT_DATABASE,
    DEFAULT_REDIS_URL,
    BenchEnv,
    RecordFactory,
    batched,
    prepare,
    print_machine,
)

BATCH = 1000
RETENTION_HOURS = 6.0
WATCHED_COMMANDS = ("scan", "keys", "del", "unlink", "evalsha", "eval", "get", "mget")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--histories", default="10000,100000", help="young records, per run")
    parser.add_argument("--expired", type=int, default=1000, help="records past the horizon")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--seed", type=int, default=20251205)
    args = parser.parse_args(argv)
    histories = [int(part) for part in args.histories.split(",")]
    env = BenchEnv(database=args.database, redis_url=args.redis_url)
    try:
        print_machine()
        rows = [_run(env, history, args) for history in histories]
    finally:
        env.cleanup()
    print(
        f"\n{'history':>9} {'expired':>8} {'prune ms':>9} {'prune CPU ms':>13} "
        f"{'rebuild ms (before)':>20}  "
        "Redis commands meanwhile (server-wide; scripts' own included)"
    )
    for history, expired, wall, cpu, rebuild, commands in rows:
        calls = ", ".join(f"{name} {count}" for name, count in commands.items() if count)
        print(f"{history:>9,} {expired:>8,} {wall:>9.0f} {cpu:>13.0f} {rebuild:>20.0f}  {calls}")
    return 0


def _run(
    env: BenchEnv, history: int, args: argparse.Namespace
) -> tuple[int, int, float, float, float, dict[str, int]]:
    prepare(env)
    env.export()
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from usage import services
    from usage.projection import projector, redis_store

    user_id = get_user_model().objects.get(username=BENCH_USER).pk
    now = datetime.now(tz=UTC)
    horizon = now - timedelta(hours=RETENTION_HOURS)
    # Two factories: one factory's ids repeat from one records() call to the next.
    young = RecordFactory(seed=args.seed).records(
        history, end=now - timedelta(minutes=1), span=timedelta(hours=5)
    )
    old = RecordFactory(seed=args.seed + 1).records(
        args.expired, end=horizon - timedelta(minutes=1), span=timedelta(hours=1)
    )
    settings.USAGE_RETENTION_HOURS = 0
    for chunk in batched(old, BATCH):
        services.ingest_records(user_id=user_id, records=chunk, host="bench", now=now)
    expiring = redis_store.totals(user_id)[0].messages
    for chunk in batched(young, BATCH):
        services.ingest_records(user_id=user_id, records=chunk, host="bench", now=now)
    kept = redis_store.totals(user_id)[0].messages - expiring

    settings.USAGE_RETENTION_HOURS = RETENTION_HOURS
    client = redis.Redis.from_url(env.redis_url)
    before = _command_calls(client)
    began_wall, began_cpu = time.perf_counter(), time.process_time()
    deleted = services.prune_events(now=now)
    wall, cpu = time.perf_counter() - began_wall, time.process_time() - began_cpu
    commands = {
        name: _command_calls(client).get(name, 0) - before.get(name, 0) for name in WATCHED_COMMANDS
    }
    if deleted != {user_id: args.expired}:
        raise RuntimeError(f"pruned {deleted}, expected {args.expired} of user {user_id}")
    if redis_store.totals(user_id)[0].messages != kept:
        raise RuntimeError("the totals after the prune are not the young records'")

    began = time.perf_counter()
    projector.rebuild_user(user_id)
    rebuild = time.perf_counter() - began
    if redis_store.totals(user_id)[0].messages != kept:
        raise RuntimeError("the rebuilt totals differ from the pruned projection's")
    print(f"history {history:,}: pruned {args.expired:,} in {wall * 1000:.0f} ms")
    from django.db import connection

    connection.close()  # the next run drops and creates the database again
    return history, args.expired, wall * 1000, cpu * 1000, rebuild * 1000, commands


def _command_calls(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


if __name__ == "__main__":
    sys.exit(main())
