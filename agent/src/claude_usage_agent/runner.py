"""`sync` and `watch`: discovery, checkpoints, shipping and retries wired together."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

from claude_usage_agent.backoff import Retrier, RetryPolicy
from claude_usage_agent.checkpoints import AgentState, load_state, save_state, state_lock
from claude_usage_agent.config import Settings
from claude_usage_agent.delivery import deliver
from claude_usage_agent.discovery import candidate_projects_dirs, projects_dirs, transcript_files
from claude_usage_agent.progress import BackfillProgress, NoProgress, Progress
from claude_usage_agent.shipper import Shipper, Totals
from claude_usage_agent.transport import Endpoint, post_events

log = logging.getLogger(__name__)

# Below this a backfill is over before a bar would be worth drawing.
PROGRESS_THRESHOLD_BYTES = 1_000_000


@dataclass(frozen=True)
class RunOptions:
    since: datetime | None = None
    batch_size: int = 1000
    poll_interval: float = 1.0
    # `sync` gives up after this many failed tries of one batch; `watch` never does.
    max_attempts: int = 8
    interactive: bool = False


@dataclass(frozen=True)
class Environment:
    """Where Claude Code's logs are looked for (CLAUDE_CONFIG_DIR, XDG dirs, home)."""

    env: Mapping[str, str]
    home: Path


def run_sync(settings: Settings, options: RunOptions, world: Environment) -> Totals:
    """Ship everything new once."""
    with state_lock(settings.state_file):
        state = load_state(settings.state_file, settings.server)
        shipper = _shipper(settings, options, state, options.max_attempts)
        files = _discover(settings, state, world, warn=True)
        return _backfill(shipper, files, options.interactive)


def run_watch(
    settings: Settings, options: RunOptions, world: Environment, stop: threading.Event
) -> None:
    """Backfill, then poll every `poll_interval` seconds until `stop` is set."""
    with state_lock(settings.state_file):
        state = load_state(settings.state_file, settings.server)
        shipper = _shipper(settings, options, state, None)
        files = _discover(settings, state, world, warn=True)
        log.info(_backfill(shipper, files, options.interactive).summary())
        log.info("watching for new records every %.1f s", options.poll_interval)
        while not stop.wait(options.poll_interval):
            totals = shipper.ship(_discover(settings, state, world, warn=False))
            if totals.records_sent:
                log.info(totals.summary())


def _shipper(
    settings: Settings,
    options: RunOptions,
    state: AgentState,
    max_attempts: int | None,
) -> Shipper:
    post = partial(post_events, Endpoint(settings.server, settings.token, settings.host_name))
    retrier = Retrier(RetryPolicy(max_attempts=max_attempts))
    return Shipper(
        state=state,
        deliver=lambda lines: deliver(lines, post, retrier),
        save=partial(save_state, settings.state_file),
        since=options.since,
        batch_size=options.batch_size,
    )


def _discover(settings: Settings, state: AgentState, world: Environment, warn: bool) -> list[str]:
    roots = projects_dirs(world.env, world.home)
    if not roots and warn:
        looked = ", ".join(str(path) for path in candidate_projects_dirs(world.env, world.home))
        log.warning("no Claude Code logs found (looked in %s; set CLAUDE_CONFIG_DIR?)", looked)
    files = transcript_files(roots)
    if state.forget_missing(files, [str(root) for root in roots]):
        save_state(settings.state_file, state)
    return files


def _backfill(shipper: Shipper, files: list[str], interactive: bool) -> Totals:
    file_count, total_bytes = shipper.plan(files)
    progress: Progress = NoProgress()
    if total_bytes >= PROGRESS_THRESHOLD_BYTES:
        progress = BackfillProgress(sys.stderr, interactive)
    progress.start(file_count, total_bytes)
    try:
        return shipper.ship(files, progress)
    finally:
        progress.finish()
