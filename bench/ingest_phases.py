"""Where one ingest batch's time goes, phase by phase, in-process (no HTTP): wall and CPU.

    .venv/bin/python -m bench.ingest_phases                    # live-shaped batches
    .venv/bin/python -m bench.ingest_phases --shape backfill   # a backfill's batches

``services.ingest_records`` runs in this process after ``django.setup()``, on PostgreSQL and
Redis set up as ``bench.ingest`` sets them up, with ``gc.freeze()`` as in daphne. Each phase
is timed by wrapping its function (``time.perf_counter`` and ``time.process_time`` around the
call), so the figures are milliseconds per batch of 1,000 records without a profiler's
overhead: wall clock, waits on PostgreSQL and Redis included, and this process's CPU. Phases
nest: the indented ones are parts of the line above. Under load the CPU is what counts (two
workers, PostgreSQL and Redis share two CPUs), so the CPU PostgreSQL and Redis spent during
the timed batches is printed too.

Shapes: ``live`` is ``bench.ingest``'s records (6 hours, several messages a minute);
``backfill`` is ``bench.agent_backfill``'s (60 days, one message every couple of minutes, so
nearly every message opens its own minute bucket in Redis). The batches are decoded as the
view decodes them (gunzip, one JSON document per line), and that is timed too.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BENCH_USER,
    DEFAULT_DATABASE,
    DEFAULT_REDIS_URL,
    HOSTS,
    BenchEnv,
    RecordFactory,
    batched,
    ndjson_gzip,
    prepare,
    print_machine,
    rate,
    services_cpu,
)

BATCH = 1000
# (label, module, function): wrapped in this order; indented labels are parts of the one above.
PHASES = (
    ("parse records", "usage.services", "_parse"),
    ("events and rows, before the lock", "usage.store", "prepare"),
    ("  pricing", "usage.services", "_cost"),
    ("dedupe query", "usage.store", "latest_entries"),
    ("dedupe decision", "usage.services", "decide"),
    ("last position of the user", "usage.store", "last_position"),
    ("insert (COPY)", "usage.store", "append_prepared"),
    ("events with positions, after the commit", "usage.store", "positioned"),
    ("post-commit projection", "usage.projection.projector", "after_commit"),
    ("  contributions", "usage.projection.projector", "_contributions"),
    ("  aggregate + Lua apply", "usage.projection.redis_store", "apply"),
    ("    aggregate (Python)", "usage.projection.redis_store", "aggregate"),
    ("    keys and fields (Python)", "usage.projection.redis_store", "_payload"),
    ("  broadcast", "usage.notify", "changed"),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    env = BenchEnv(database=args.database, redis_url=args.redis_url)
    try:
        print_machine()
        prepare(env)
        env.export()
        return _measure(args)
    finally:
        env.cleanup()


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=40_000, help="timed records")
    parser.add_argument("--shape", choices=("live", "backfill"), default="live")
    parser.add_argument("--seed", type=int, default=20251005)
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args(argv)
    if args.records < BATCH:
        parser.error(f"--records must be at least {BATCH}")
    return args


def _bodies(args: argparse.Namespace) -> list[bytes]:
    """One warm-up batch, then the timed ones, gzip'd NDJSON as the agent sends them."""
    total = args.records + BATCH
    end = datetime.now(tz=UTC) - timedelta(minutes=1)
    if args.shape == "live":
        records = RecordFactory(seed=args.seed).records(total, end=end, span=timedelta(hours=6))
    else:
        from bench.agent_backfill import backfill_records

        records = islice(backfill_records(args.seed, 60.0, total), total)
    return [ndjson_gzip(chunk) for chunk in batched(records, BATCH)]


def _measure(args: argparse.Namespace) -> int:
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from usage import services, wire

    bodies = _bodies(args)
    user_id = int(get_user_model().objects.get(username=BENCH_USER).pk)
    gc.freeze()  # as backend/asgi.py does once the application is loaded
    spent = {label: 0.0 for label, _, _ in PHASES}
    cpu = {label: 0.0 for label, _, _ in PHASES}
    for label, module, function in PHASES:
        _time_calls(sys.modules[module], function, label, spent, cpu)

    def ingest(index: int, body: bytes) -> tuple[float, float]:
        began, began_cpu = time.perf_counter(), time.process_time()
        lines = gzip.decompress(body).splitlines()
        # The server's own NDJSON reader (usage/api/ingest_body.py) minus its size checks.
        records = [wire.read_line(line) for line in lines if line.strip()]
        decoded, decoded_cpu = time.perf_counter(), time.process_time()
        result = services.ingest_records(
            user_id=user_id, records=records, host=HOSTS[index % len(HOSTS)], now=_now()
        )
        if result.accepted != len(records):
            raise RuntimeError(f"batch {index}: accepted {result.accepted} of {len(records)}")
        return decoded - began, decoded_cpu - began_cpu

    ingest(-1, bodies[0])  # warm-up: imports, price table, connections
    for label in spent:
        spent[label] = cpu[label] = 0.0
    decoding = decoding_cpu = 0.0
    services_before = services_cpu(())
    began, began_cpu = time.perf_counter(), time.process_time()
    for index, body in enumerate(bodies[1:]):
        wall, used = ingest(index, body)
        decoding += wall
        decoding_cpu += used
    seconds, seconds_cpu = time.perf_counter() - began, time.process_time() - began_cpu
    services_after = services_cpu(())
    batches = len(bodies) - 1
    print(
        f"\n{args.shape}-shaped batches: {args.records:,} records in {batches} batches of "
        f"{BATCH:,}, {seconds:.2f} s in all = {rate(args.records, seconds)} records/s in-process"
    )
    print(f"\n{'ms per batch':<36}{'wall':>10}{'CPU':>10}")
    rows = [
        ("decode the body (gunzip + NDJSON)", decoding, decoding_cpu),
        ("services.ingest_records, all of it", seconds - decoding, seconds_cpu - decoding_cpu),
        *((f"  {label}", spent[label], cpu[label]) for label in spent),
    ]
    for label, wall, used in rows:
        print(f"{label:<36}{wall / batches * 1000:>10.2f}{used / batches * 1000:>10.2f}")
    elsewhere = ", ".join(
        f"{name} {(services_after[name] - services_before[name]) / batches * 1000:.1f} ms"
        for name in ("PostgreSQL", "Redis")
    )
    print(f"CPU per batch outside this process (every process of each): {elsewhere}")
    return 0


def _time_calls(
    module: Any, function: str, label: str, spent: dict[str, float], cpu: dict[str, float]
) -> None:
    """Replace ``module.function`` by a wrapper that adds its wall time to ``spent`` and
    this process's CPU time to ``cpu``."""
    original: Callable[..., Any] = getattr(module, function)

    def timed(*args: Any, **kwargs: Any) -> Any:
        began, began_cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - began
            cpu[label] += time.process_time() - began_cpu

    setattr(module, function, timed)


def _now() -> datetime:
    return datetime.now(tz=UTC)


if __name__ == "__main__":
    sys.exit(main())
