"""What the benchmarks share: a fresh PostgreSQL + Redis, daphne processes, an HTTP client,
realistic Claude Code records, and the machine description printed with every result.

Everything here talks only to 127.0.0.1, and every wait is bounded: a benchmark that hangs
is worse than one that fails.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
from psycopg import sql

from backend.serve import default_workers  # what `make run` starts, in this environment
from tests.support import ServerProcess as Server
from tests.support import free_port, manage

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
API = "/app/claude-usage/"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
DEFAULT_DATABASE = "bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"
BENCH_USER = "bench"
SERVER_START_SECONDS = 60.0
MANAGE_SECONDS = 600.0  # a migration of a large benchmark database
REQUEST_TIMEOUT_SECONDS = 120.0
CPU_CHECK_ITERATIONS = 3_000_000


# --- time limits ------------------------------------------------------------------------


class Deadline:
    """A whole run's time budget; loops call ``check`` so that none runs unbounded."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def check(self, doing: str) -> None:
        if self.remaining() <= 0:
            raise TimeoutError(f"time budget of {self.seconds:.0f} s ran out while {doing}")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that ``finally`` blocks stop the servers we started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


# --- the environment: PostgreSQL database, Redis db, settings ---------------------------


@dataclass(frozen=True)
class BenchEnv:
    """The settings every process of one run shares (server, manage.py, in-process code)."""

    database: str = DEFAULT_DATABASE
    redis_url: str = DEFAULT_REDIS_URL
    redis_prefix: str = "cu"  # distinct prefixes let two logs' projections share a Redis db
    var_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="usage-bench-"))
    # More settings for every process (USAGE_THROTTLE_READ_PER_MINUTE=0 for a read bench).
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return f"{PG_SERVER}/{self.database}"

    def variables(self) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "backend.settings",
            "USAGE_PROFILE": "local",  # plain HTTP and the local key (backend/profiles.py)
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "USAGE_REDIS_PREFIX": self.redis_prefix,
            "USAGE_RETENTION_HOURS": "0",
            "USAGE_VAR_DIR": self.var_dir,  # keeps the repository's var/ out of it
            "DEBUG": "false",
            **self.extra,
        }

    def export(self) -> None:
        """Set this environment in the current process, before ``django.setup()``."""
        os.environ.update(self.variables())

    def cleanup(self) -> None:
        shutil.rmtree(self.var_dir, ignore_errors=True)


def reset_database(name: str) -> None:
    """Drop and create the benchmark database (FORCE ends leftover sessions of a killed run)."""
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def reset_redis(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def prepare(env: BenchEnv, *, flush_redis: bool = True) -> str:
    """A fresh database (and Redis db), migrated, with the benchmark user; its API token."""
    reset_database(env.database)
    if flush_redis:
        reset_redis(env.redis_url)
    variables = env.variables()
    manage(variables, "migrate", "--noinput", timeout=MANAGE_SECONDS, python=PYTHON)
    return manage(variables, "create_token", BENCH_USER, python=PYTHON).strip()


# --- daphne processes ------------------------------------------------------------------


def server(env: BenchEnv, *, wrapper: Sequence[str] = (), workers: int | None = None) -> Server:
    """The server as ``make run`` starts it: ``python -m backend.serve``, one address and
    ``workers`` daphne processes accepting on it (None: the launcher's default, one per CPU,
    as in ``make run``). Not started yet."""
    port = free_port()
    return Server(
        env.variables(),
        Path(env.var_dir) / f"daphne-{port}.log",
        workers=workers if workers is not None else default_workers(),
        python=PYTHON,
        wrapper=wrapper,
        # daphne's -v 0: no access log line per request; warnings and errors still logged
        daphne_options=("-v", "0"),
        port=port,
    )


@contextlib.contextmanager
def servers(
    env: BenchEnv,
    count: int,
    *,
    wrappers: Sequence[Sequence[str]] = (),
    workers: int | None = None,
) -> Iterator[list[Server]]:
    """``count`` servers on addresses of their own, each with ``workers`` daphne processes,
    ready; all stopped on the way out, whatever happened. ``wrappers[i]``, when given, is a
    command prefix for server ``i`` (a profiler)."""
    started: list[Server] = []
    try:
        for index in range(count):
            wrapper = wrappers[index] if index < len(wrappers) else ()
            started.append(server(env, wrapper=wrapper, workers=workers))
            started[-1].launch()
        for each in started:
            each.wait_ready(SERVER_START_SECONDS)
        yield started
    finally:
        for each in started:
            # SIGINT: daphne and a profiler wrapped around it both finish cleanly on it.
            each.stop(signal.SIGINT, timeout=30.0)


# --- HTTP -------------------------------------------------------------------------------


class Client:
    """One HTTP/1.1 client (the standard library's: the lightest, so that as little of the
    2 cores as possible goes to the load generator). Keep-alive, or with
    ``connection_per_request`` a new connection for every request, as the agent makes them
    (urllib): the server's workers then share the requests of one client."""

    def __init__(self, port: int, token: str, *, connection_per_request: bool = False) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_SECONDS)
        self._headers = {"Authorization": f"Token {token}"}
        if connection_per_request:
            # The server closes after its answer; http.client reconnects for the next one.
            self._headers["Connection"] = "close"

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        self._conn.request(method, path, body=body, headers={**self._headers, **(headers or {})})
        response = self._conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._conn.close()


# --- realistic Claude Code records ------------------------------------------------------

# Weights roughly as in shared/samples: Sonnet 4.5 most, then Sonnet 4 and Opus 4.1.
MAIN_MODELS = (
    ("claude-sonnet-4-5-20250929", 55),
    ("claude-sonnet-4-20250514", 25),
    ("claude-opus-4-1-20250805", 20),
)
SMALL_MODEL = "claude-3-5-haiku-20241022"  # Claude Code's side calls (titles, summaries)
PROJECTS = (
    "/home/alice/code/web-dashboard",
    "/home/alice/code/rest-api",
    "/home/alice/code/docs-site",
    "/home/bob/src/ml-pipeline",
    "/home/bob/src/infra-terraform",
    "/Users/carol/work/mobile_app",
    "/Users/carol/work/api",  # shares its last component with a project of another tree
    "/srv/build/api",
)
HOSTS = ("alice-laptop", "build-box", "carol-mbp")
BRANCHES = ("main", "main", "main", "feature/usage", "fix/timeouts")
VERSIONS = ("1.0.83", "1.0.98", "2.0.14")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_SPACE = 62**22
# Odd and not a multiple of 31, hence coprime with 62**22: i -> i * M + salt is a
# bijection, so ids are distinct by construction yet look like Anthropic's random ones.
_MESSAGE_MULTIPLIER = 0x9E3779B97F4A7C15
_REQUEST_MULTIPLIER = 0xC2B2AE3D27D4EB4F


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_BASE62[digit])
    return "".join(chars)


@dataclass
class _Session:
    session_id: str
    cwd: str
    branch: str
    version: str
    model: str
    one_hour_cache: bool  # some sessions write 1-hour cache entries instead of 5-minute ones
    remaining: int
    context: int = 0  # cached prompt size: grows through the session, like a real one


class RecordFactory:
    """Distinct assistant records as the agent sends them: usage kept, ``content`` gone.

    Records come in time order, in sessions of 20-400 messages spread evenly over
    ``[end - span, end)``; ids are unique within a factory (salted by ``seed``).
    """

    def __init__(self, *, seed: int) -> None:
        self._rng = random.Random(seed)
        self._salt = self._rng.getrandbits(120)

    def records(self, count: int, *, end: datetime, span: timedelta) -> Iterator[dict[str, Any]]:
        start = end - span
        step = span / max(count, 1)
        session = self._session()
        for index in range(count):
            if session.remaining <= 0:
                session = self._session()
            session.remaining -= 1
            moment = start + step * (index + self._rng.random())
            yield self._record(index, session, moment)

    def _session(self) -> _Session:
        rng = self._rng
        return _Session(
            session_id=self._uuid(),
            cwd=rng.choice(PROJECTS),
            branch=rng.choice(BRANCHES),
            version=rng.choice(VERSIONS),
            model=rng.choices([m for m, _ in MAIN_MODELS], [w for _, w in MAIN_MODELS])[0],
            one_hour_cache=rng.random() < 0.3,
            remaining=rng.randint(20, 400),
        )

    def _uuid(self) -> str:
        hexed = f"{self._rng.getrandbits(128):032x}"
        return f"{hexed[:8]}-{hexed[8:12]}-4{hexed[13:16]}-a{hexed[17:20]}-{hexed[20:]}"

    def _record(self, index: int, session: _Session, moment: datetime) -> dict[str, Any]:
        small = self._rng.random() < 0.12
        message_number = (index * _MESSAGE_MULTIPLIER + self._salt) % _ID_SPACE
        request_number = (index * _REQUEST_MULTIPLIER + self._salt) % _ID_SPACE
        return {
            "type": "assistant",
            "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sessionId": session.session_id,
            "cwd": session.cwd,
            "isSidechain": self._rng.random() < 0.04,
            "requestId": "req_011C" + _base62(request_number, 22),
            "uuid": self._uuid(),
            "version": session.version,
            "gitBranch": session.branch,
            "message": {
                "id": "msg_01" + _base62(message_number, 22),
                "type": "message",
                "role": "assistant",
                "model": SMALL_MODEL if small else session.model,
                "stop_reason": "tool_use" if self._rng.random() < 0.7 else "end_turn",
                "usage": self._small_usage() if small else self._usage(session),
            },
        }

    def _usage(self, session: _Session) -> dict[str, Any]:
        rng = self._rng
        written = min(int(rng.expovariate(1 / 1800)), 60_000)
        read = session.context
        session.context = 0 if session.context > 160_000 else session.context + written
        one_hour = written if session.one_hour_cache else 0
        return {
            "input_tokens": rng.choice((1, 3, 4, 6, 8, 10))
            if rng.random() < 0.9
            else rng.randint(50, 3000),
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": written - one_hour,
                "ephemeral_1h_input_tokens": one_hour,
            },
            "output_tokens": max(1, min(int(rng.lognormvariate(5.0, 1.2)), 32_000)),
            "service_tier": "standard",
        }

    def _small_usage(self) -> dict[str, Any]:
        rng = self._rng
        return {
            "input_tokens": rng.randint(200, 2500),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": rng.randint(10, 200),
            "service_tier": "standard",
        }


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def ndjson_gzip(records: Sequence[dict[str, Any]]) -> bytes:
    """The agent's request body: one JSON record per line, gzip level 6."""
    return gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in records), compresslevel=6)


# --- statistics and reporting -----------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 500 samples is the 495th)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    return {
        "date (UTC)": datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M"),
        "cpus (nproc)": str(os.cpu_count()),
        "cpu model": _cpu_model(),
        "python": platform.python_version(),
        "postgresql": _postgres_version(),
        "redis": _redis_version(),
        "load average": _load_average(),  # other work on the machine skews latencies
        "cpu speed": _cpu_speed(),
        "code": _code_version(),
    }


def _cpu_speed() -> str:
    """A fixed pure-Python loop, best of 3: the same code and machine kind have run at very
    different speeds on different days, and this tells such days apart."""
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        total = 0
        for number in range(CPU_CHECK_ITERATIONS):
            total += number
        best = min(best, time.perf_counter() - began)
    return f"{CPU_CHECK_ITERATIONS:,} Python additions in {best * 1000:.0f} ms (best of 3)"


def print_machine() -> None:
    for key, value in machine().items():
        print(f"{key:>14}: {value}")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        if found:
            return found.group(1).strip()
    return platform.processor() or "unknown"


def _code_version() -> str:
    """The commit measured, and whether the work tree differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return commit + (f" + uncommitted changes to {len(changed)} files" if changed else "")


def _load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"


def _postgres_version() -> str:
    # bench.abuse runs without a PostgreSQL server (make run's SQLite default).
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.OperationalError:
        return "no server on 127.0.0.1:5432"
    return str(row[0]) if row else "unknown"


def _redis_version(url: str = DEFAULT_REDIS_URL) -> str:
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        info: dict[str, Any] = client.info("server")
    except redis.ConnectionError:
        return f"no server at {url}"
    finally:
        client.close()
    return str(info.get("redis_version", "unknown"))


# --- where the CPU went ------------------------------------------------------------------


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of running processes, from /proc/<pid>/stat."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pids_named(*names: str) -> list[int]:
    """Processes whose command name is one of ``names`` (PostgreSQL's backends, Redis)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
    return found


def services_cpu(server_pids: Sequence[int]) -> dict[str, float]:
    """CPU seconds so far of the server's processes, all of PostgreSQL's and all of Redis's:
    a difference of two readings is where a run's CPU went."""
    return {
        "server (daphne workers)": cpu_seconds(server_pids),
        "PostgreSQL": cpu_seconds(pids_named("postgres", "postmaster")),
        "Redis": cpu_seconds(pids_named("redis-server")),
    }


def tree_pids(root: int) -> list[int]:
    """``root`` and its descendants (bounded: a few levels, as many as /proc lists)."""
    found, frontier = [root], [root]
    for _ in range(5):
        children: list[int] = []
        for pid in frontier:
            with contextlib.suppress(OSError, ValueError):
                text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
                children.extend(int(child) for child in text.split())
        if not children:
            break
        found.extend(children)
        frontier = children
    return found


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "inf"
