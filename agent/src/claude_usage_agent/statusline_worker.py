"""The statusline's background half: forward official limits, refresh the dashboard copy.

Runs detached, once per job, with short timeouts; failures are silent (the statusline just
keeps showing the last copy) because there is nobody to show them to.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from claude_usage_agent.fileio import write_atomically
from claude_usage_agent.statusline import WINDOWS, load_cache
from claude_usage_agent.transport import (
    DASHBOARD_PATH,
    LIMITS_PATH,
    Endpoint,
    ServerError,
    get_json,
    post_json,
)

TIMEOUT = 5.0


def run_worker(job: Mapping[str, Any]) -> None:
    endpoint = Endpoint(job["server"], job["token"], job["host_name"], timeout=TIMEOUT)
    updates: dict[str, Any] = {"server": job["server"]}
    limits = job.get("limits")
    if limits:
        try:
            post_json(endpoint, LIMITS_PATH, limits)
            sent = {key: value for key, value in limits.items() if key in WINDOWS}
            updates.update(limits_sent=sent, limits_sent_at=time.time())
        except ServerError:
            pass  # re-sent on a later refresh: the limits are still in every status JSON
    if job.get("refresh"):
        try:
            dashboard = get_json(endpoint, DASHBOARD_PATH)
            if isinstance(dashboard, dict):
                updates.update(dashboard=dashboard, fetched_at=time.time())
        except ServerError:
            pass
    update_cache(Path(job["cache_file"]), updates)


def update_cache(path: Path, updates: Mapping[str, Any]) -> None:
    """Merge into the current cache; written atomically so the statusline never reads half."""
    cache = asdict(load_cache(path))
    if cache.get("server") != updates.get("server"):
        cache = {}
    cache.update(updates)
    write_atomically(path, json.dumps(cache).encode())
