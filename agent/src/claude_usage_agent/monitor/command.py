"""`claude-usage-agent monitor`: the live screen on a terminal, a one-shot answer otherwise.

The one-shot answers (`--once`, `--json`, or stdout not a terminal) come from the REST
dashboard over the agent's own standard-library transport, so they work without the
`[monitor]` extra; only the live screen needs rich and websockets.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from claude_usage_agent.config import Overrides, Settings, resolve_settings
from claude_usage_agent.monitor.formatting import summary_text
from claude_usage_agent.monitor.state import DashboardParams

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_AUTH = 3
EXTRA_MODULES = ("rich", "websockets")
INSTALL_HINT = 'pip install "claude-usage-agent[monitor]"'


@dataclass(frozen=True)
class MonitorOptions:
    params: DashboardParams
    budget: float | None = None
    message_limit: int | None = None
    once: bool = False
    json: bool = False


def missing_extras() -> list[str]:
    return [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]


def run(overrides: Overrides, options: MonitorOptions, stdout: TextIO, stderr: TextIO) -> int:
    """Raises ConfigError for a missing server or token (the caller's exit 2)."""
    settings = resolve_settings(overrides, os.environ, Path.home())
    if options.once or options.json or not stdout.isatty():
        return one_shot(settings, options, stdout, stderr)
    missing = missing_extras()
    if missing:
        stderr.write(f"claude-usage-agent monitor needs {' and '.join(missing)}: {INSTALL_HINT}\n")
        return EXIT_CONFIG
    return live(settings, options, stderr)


def one_shot(settings: Settings, options: MonitorOptions, stdout: TextIO, stderr: TextIO) -> int:
    from claude_usage_agent.transport import (
        DASHBOARD_PATH,
        AuthenticationFailedError,
        BatchInvalidError,
        Endpoint,
        ServerError,
        get_json,
    )

    endpoint = Endpoint(settings.server, settings.token, settings.host_name)
    query = options.params.query()
    try:
        dashboard: dict[str, Any] = get_json(
            endpoint, DASHBOARD_PATH + (f"?{query}" if query else "")
        )
    except AuthenticationFailedError as error:
        stderr.write(f"{error}; check --token / CLAUDE_USAGE_TOKEN\n")
        return EXIT_AUTH
    except BatchInvalidError as error:
        stderr.write(f"the server refused the settings ({error})\n")
        return EXIT_CONFIG
    except ServerError as error:
        stderr.write(f"{error}\n")
        return EXIT_FAILED
    if options.json:
        stdout.write(json.dumps(dashboard, indent=2) + "\n")
    else:
        now = datetime.now(UTC)
        stdout.write(summary_text(dashboard, now, None, budget=options.budget))
    return EXIT_OK


def live(settings: Settings, options: MonitorOptions, stderr: TextIO) -> int:
    from claude_usage_agent.monitor.link import (
        SettingsRefusedError,
        TokenRefusedError,
        websocket_url,
    )
    from claude_usage_agent.monitor.screen import show
    from claude_usage_agent.monitor.view import ViewOptions

    view_options = ViewOptions(
        server=settings.server, budget=options.budget, message_limit=options.message_limit
    )
    try:
        show(websocket_url(settings.server, settings.token), options.params, view_options)
    except KeyboardInterrupt:
        return EXIT_OK
    except TokenRefusedError as error:
        stderr.write(f"{error}; check --token / CLAUDE_USAGE_TOKEN\n")
        return EXIT_AUTH
    except SettingsRefusedError as error:
        stderr.write(f"{error}\n")
        return EXIT_CONFIG
    return EXIT_OK
