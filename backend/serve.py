"""``python -m backend.serve``: daphne in several processes behind one address.

One daphne process runs its Python on one core at a time (the GIL), and an ingest batch is
mostly Python. This launcher binds the listening socket once and starts ``--workers`` daphne
processes that all accept on it (``daphne --fd``). Each new connection goes to the worker
that accepts it first, which is nearly always an idle one: a busy worker's event loop waits
for the GIL while its view runs. The agent opens a connection per batch, so its batches
spread over the workers as they free up.

The workers share the database and Redis as any number of daphne processes do (positions
are serialised in the database; dashboards get prompts through the Redis channel layer).
Before any worker starts, this process runs Django's system checks (a bad setting ends it
with one line naming the setting, its value and what is allowed, or a variable the
production profile needs), then, in the local profile without ``REDIS_URL``, starts the
embedded Redis of a configuration-free install and names it in ``REDIS_URL``, which every
worker inherits; it stops that server when it exits, after the workers. It collects the
web dashboard's static files (``collect_static``) and gives the workers a fresh directory
for their Prometheus metrics, so that ``/metrics`` on any worker sums them all
(``operations/multiprocess.py``). ``--with-worker`` also runs the periodic jobs
(``manage.py run_worker``) as a child, as ``make run`` does: one process tree that one
Ctrl-C stops.

A worker (or the periodic worker) that exits stops the others and the launcher, with its
exit status: restarting is left to whatever started the launcher (make, a Procfile
platform, systemd).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from django.conf import settings

from backend import embedded_redis
from operations import multiprocess as metrics_files
from usage import pricing

log = logging.getLogger("backend.serve")

# Beyond a few processes each worker's database pool (up to DB_POOL_SIZE connections) costs
# more than another core gains: more needs WEB_CONCURRENCY or --workers, deliberately.
DEFAULT_MAX_WORKERS = 4
STOP_SECONDS = 15.0
POLL_SECONDS = 0.2
MANAGE_PY = Path(__file__).resolve().parent.parent / "manage.py"


class _Stop(Exception):
    """SIGTERM or SIGINT arrived: stop the workers and exit 0."""


def default_workers() -> int:
    """WEB_CONCURRENCY if set, else one worker per usable CPU, at most DEFAULT_MAX_WORKERS.
    Raises ValueError when WEB_CONCURRENCY is not a whole number."""
    configured = os.environ.get("WEB_CONCURRENCY", "").strip()
    if configured:
        return int(configured)
    return max(1, min(_usable_cpus(), DEFAULT_MAX_WORKERS))


def _usable_cpus() -> int:
    # The CPUs this process may run on (a container's share); macOS has no such call.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def listen(host: str, port: int) -> socket.socket:
    """The one listening socket every worker accepts on, inherited by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.create_server((host.strip("[]"), port), family=family, backlog=1024)
    server.set_inheritable(True)
    return server


def daphne_command(fd: int, extra: Sequence[str], *, trust_proxies: bool = False) -> list[str]:
    # `python -m daphne` with this interpreter: the `daphne` script need not sit beside it.
    # X-Forwarded-* only behind configured proxies, and then only theirs (backend/proxies.py).
    proxy_headers = ["--proxy-headers"] if trust_proxies else []
    return [
        sys.executable,
        "-m",
        "daphne",
        "--fd",
        str(fd),
        *proxy_headers,
        *extra,
        "backend.asgi:application",
    ]


def jobs_command() -> list[str]:
    return [sys.executable, str(MANAGE_PY), "run_worker"]


def serve(
    host: str, port: int, workers: int, extra: Sequence[str] = (), *, with_jobs: bool = False
) -> int:
    try:
        listener = listen(host, port)
    except OSError as error:
        log.error("cannot listen on %s:%s: %s", host, port, error.strerror or error)
        return 2
    trust_proxies = bool(settings.USAGE_TRUSTED_PROXIES)
    command = daphne_command(listener.fileno(), extra, trust_proxies=trust_proxies)
    processes: list[subprocess.Popen[bytes]] = []
    for handled in (signal.SIGTERM, signal.SIGINT):
        signal.signal(handled, _raise_stop)
    # Before any child starts: every one counts its metrics into this directory, and the
    # worker that answers /metrics sums them (operations/multiprocess.py).
    metrics_directory = metrics_files.prepare(settings.VAR_DIR)
    try:
        for _ in range(workers):
            processes.append(subprocess.Popen(command, pass_fds=[listener.fileno()]))
        pids = ", ".join(str(process.pid) for process in processes)
        log.info("serving http://%s:%s with %s daphne worker(s): %s", host, port, workers, pids)
        if with_jobs:
            processes.append(subprocess.Popen(jobs_command()))
            log.info("periodic jobs (manage.py run_worker): %s", processes[-1].pid)
        listener.close()  # the workers hold it now; a dead launcher must not keep the port
        return _wait_for_a_worker(processes)
    except _Stop:
        return 0
    finally:
        _stop_all(processes)
        metrics_files.remove(metrics_directory)


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _wait_for_a_worker(processes: Sequence[subprocess.Popen[bytes]]) -> int:
    # Polling, not os.wait(): that would also reap children that are not workers (the
    # embedded redis-server may be one).
    while True:
        for process in processes:
            code = process.poll()
            if code is not None:
                metrics_files.process_exited(process.pid)
                log.error("worker %s exited with %s; stopping the others", process.pid, code)
                return code or 1
        time.sleep(POLL_SECONDS)


def _stop_all(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    # A second Ctrl-C or SIGTERM must not cut this short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    running = [process for process in processes if process.returncode is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        metrics_files.process_exited(process.pid)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backend.serve",
        description="Serve HTTP and WebSocket with several daphne processes on one address.",
    )
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    # A string default goes through `type` as an argument would: PORT=abc is a usage error.
    parser.add_argument("--port", type=int, default=os.environ.get("PORT", "8000"))
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="daphne processes (default: WEB_CONCURRENCY, else one per CPU, at most "
        f"{DEFAULT_MAX_WORKERS})",
    )
    parser.add_argument(
        "--with-worker",
        action="store_true",
        help="also run the periodic jobs (manage.py run_worker) as a child, as make run does",
    )
    parser.add_argument("daphne_args", nargs="*", help="after --: more arguments for daphne")
    args = parser.parse_args(argv)
    try:
        workers = args.workers if args.workers is not None else default_workers()
    except ValueError:
        parser.error(
            f"WEB_CONCURRENCY must be a whole number, not {os.environ['WEB_CONCURRENCY']!r}"
        )
    if workers < 1:
        parser.error("--workers (or WEB_CONCURRENCY) must be at least 1")

    problems = _system_check_problems()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    # Only now, so that a refused start starts nothing. The settings of this process loaded
    # before the embedded server's URL was set, which is harmless: it never talks to Redis,
    # it only holds the server for its children, which read the URL from the environment.
    embedded_redis.ensure_redis_url()
    collect_static()
    log.info("price data: %s", pricing.price_data().describe())  # read by the checks above
    return serve(args.host, args.port, workers, args.daphne_args, with_jobs=args.with_worker)


def collect_static() -> None:
    """The web dashboard's files, hashed, into STATIC_ROOT, once, before any worker starts:
    each worker reads the manifest of hashed names when it first renders the page. Files
    that have not changed are not copied again."""
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)
    log.info("static files: %s", settings.STATIC_ROOT)


def _system_check_problems() -> list[str]:
    """Sets Django up in this process (its logging too: settings.LOGGING) and runs the
    system checks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import django

    from backend.checks import start_up_errors

    django.setup()
    return start_up_errors()


if __name__ == "__main__":
    sys.exit(main())
