"""Command line: `sync`, `watch`, `statusline`, `monitor`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from claude_usage_agent import __version__
from claude_usage_agent.config import ConfigError, Overrides, Settings

if TYPE_CHECKING:
    from claude_usage_agent.runner import Environment, RunOptions

log = logging.getLogger("claude_usage_agent")

EXIT_OK = 0
EXIT_FAILED = 1  # the server stayed unreachable, or refused the requests for another reason
EXIT_CONFIG = 2  # bad command line or configuration (argparse uses 2 as well)
EXIT_AUTH = 3  # the server refused the token
EXIT_INTERRUPTED = 130


def parse_since(text: str) -> datetime:
    """`2025-10-01`, `20251001` or a full ISO time; without a zone it is local time."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date: {text!r} (use YYYY-MM-DD or an ISO 8601 time)"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _batch_size(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("batch size must be between 1 and 1000")
    return value


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help="server URL (env CLAUDE_USAGE_SERVER)")
    parser.add_argument("--token", help="API token (env CLAUDE_USAGE_TOKEN)")
    parser.add_argument("--host-name", help="name this machine reports (default: its hostname)")
    parser.add_argument(
        "--config", type=Path, help="config file (default ~/.config/claude-usage/agent.toml)"
    )


def _add_shipping_options(parser: argparse.ArgumentParser) -> None:
    _add_connection_options(parser)
    parser.add_argument("--state-file", type=Path, help="where checkpoints are kept")
    parser.add_argument("--since", type=parse_since, help="skip records older than this date")
    parser.add_argument("--batch-size", type=_batch_size, default=1000, help=argparse.SUPPRESS)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also log each malformed line ignored"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claude-usage-agent",
        description="Ship Claude Code usage records (token counts, never text) to a usage server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{sync,watch,statusline,monitor}"
    )
    sync = commands.add_parser("sync", help="ship everything new once, then exit")
    _add_shipping_options(sync)
    sync.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    sync.add_argument(
        "--max-tries", type=_positive_int, default=8, help="tries per batch before giving up"
    )
    watch = commands.add_parser(
        "watch", help="keep shipping new records as Claude Code writes them"
    )
    _add_shipping_options(watch)
    watch.add_argument(
        "--poll-interval", type=_positive_float, default=1.0, help="seconds between scans"
    )
    statusline = commands.add_parser("statusline", help="Claude Code statusline command")
    _add_connection_options(statusline)
    commands.add_parser("statusline-worker")  # internal: the statusline's background half
    _add_monitor_parser(commands)
    return parser


PLANS = ("pro", "max5", "max20", "custom")  # the server's (usage.windows.PLAN_LIMITS + custom)


def _add_monitor_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    monitor = commands.add_parser(
        "monitor",
        help="the server's dashboard, live in the terminal",
        description="A full-screen live view of the server's dashboard (needs the [monitor]"
        " extra); a one-shot plain summary when stdout is not a terminal.",
    )
    _add_connection_options(monitor)
    monitor.add_argument("--hours", type=_positive_float, help="hours of history (server: 6)")
    monitor.add_argument("--plan", choices=PLANS, help="plan whose token limit applies")
    monitor.add_argument("--token-limit", type=_positive_int, help="tokens per 5-hour window")
    monitor.add_argument(
        "--window-align", choices=("hour", "exact"), help="window start: the hour or the message"
    )
    monitor.add_argument(
        "--budget", type=_positive_float, metavar="USD", help="budget for the cost bar"
    )
    monitor.add_argument(
        "--message-limit", type=_positive_int, metavar="N", help="limit for the messages bar"
    )
    monitor.add_argument("--once", action="store_true", help="print a summary once and exit")
    monitor.add_argument(
        "--json", action="store_true", help="print the dashboard as JSON once and exit"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "statusline":
        return _statusline(args)
    if args.command == "statusline-worker":
        return _statusline_worker()
    if args.command == "monitor":
        return _monitor(args)
    _setup_logging(args.verbose, args.quiet)
    try:
        return _ship(args)
    except ConfigError as error:
        log.error("%s", error)
        return EXIT_CONFIG


def _overrides(args: argparse.Namespace) -> Overrides:
    return Overrides(
        server=args.server,
        token=args.token,
        host_name=args.host_name,
        state_file=getattr(args, "state_file", None),
        config_file=args.config,
    )


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]  # main() may run more than once in a process (tests)
    log.setLevel(level)


def _ship(args: argparse.Namespace) -> int:
    # Imported here so `statusline` does not pay for urllib and friends on every refresh.
    from claude_usage_agent.backoff import GaveUpError
    from claude_usage_agent.checkpoints import StateInUseError
    from claude_usage_agent.config import resolve_settings
    from claude_usage_agent.runner import Environment, RunOptions
    from claude_usage_agent.transport import AuthenticationFailedError, ServerError

    settings = resolve_settings(_overrides(args), os.environ, Path.home())
    options = RunOptions(
        since=args.since,
        batch_size=args.batch_size,
        poll_interval=getattr(args, "poll_interval", 1.0),
        max_attempts=getattr(args, "max_tries", 8),
        interactive=sys.stderr.isatty(),
    )
    world = Environment(env=os.environ, home=Path.home())
    try:
        if args.command == "sync":
            return _sync(args, settings, options, world)
        return _watch(settings, options, world)
    except AuthenticationFailedError as error:
        log.error("%s; check --token / CLAUDE_USAGE_TOKEN", error)
        return EXIT_AUTH
    except StateInUseError as error:
        log.error("%s", error)
        return EXIT_FAILED
    except (GaveUpError, ServerError) as error:
        log.error("%s; nothing was lost, the next run resumes from the last checkpoint", error)
        return EXIT_FAILED
    except KeyboardInterrupt:
        log.warning("interrupted; the next run resumes from the last checkpoint")
        return EXIT_INTERRUPTED


def _sync(
    args: argparse.Namespace, settings: Settings, options: RunOptions, world: Environment
) -> int:
    from claude_usage_agent.runner import run_sync

    log.info("syncing to %s as %s", settings.server, settings.host_name)
    totals = run_sync(settings, options, world)
    log.info(totals.summary())
    if args.json:
        print(json.dumps(asdict(totals)))
    return EXIT_OK


def _watch(settings: Settings, options: RunOptions, world: Environment) -> int:
    from claude_usage_agent.runner import run_watch

    stop = threading.Event()
    _stop_on_sigterm()
    log.info("watching Claude Code logs for %s as %s", settings.server, settings.host_name)
    try:
        run_watch(settings, options, world, stop)
    except (KeyboardInterrupt, _Stopped):
        log.info("stopped")
    return EXIT_OK


class _Stopped(Exception):
    """SIGTERM: unwind wherever we are; nothing unacknowledged has been checkpointed."""


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    signal.signal(signal.SIGTERM, handler)


def _monitor(args: argparse.Namespace) -> int:
    from claude_usage_agent.monitor.command import MonitorOptions, run
    from claude_usage_agent.monitor.state import DashboardParams

    params = DashboardParams(args.hours, args.plan, args.token_limit, args.window_align)
    options = MonitorOptions(params, args.budget, args.message_limit, args.once, args.json)
    try:
        return run(_overrides(args), options, sys.stdout, sys.stderr)
    except ConfigError as error:
        sys.stderr.write(f"{error}\n")
        return EXIT_CONFIG


def _statusline(args: argparse.Namespace) -> int:
    from claude_usage_agent.statusline import spawn_worker, statusline

    raw = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    try:
        line, job = statusline(raw, _overrides(args), os.environ, Path.home())
    except Exception:  # noqa: BLE001 - a broken status bar helps nobody; show something
        line, job = "claude-usage", None
    # Print first: Claude Code is waiting for this line, the worker is not urgent.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if job is not None:
        spawn_worker(job)
    return EXIT_OK


def _statusline_worker() -> int:
    from claude_usage_agent.statusline_worker import run_worker

    run_worker(json.loads(sys.stdin.buffer.read()))
    return EXIT_OK
