"""Makes docs/terminal-monitor.png, the README's picture of `claude-usage-agent monitor`.

    .venv/bin/python -m tests.agent.monitor_screenshot [OUTPUT.png]

Starts the real server on a fresh SQLite database (as the live tests do), loads the reference
samples with `manage.py load_samples --shift-to-now`, fetches the dashboard, renders it with
the monitor's own pure view to SVG (rich's `export_svg`) and has headless Chromium
(/usr/bin/chromium) take a picture of that. Needs the repository's .venv and shared/samples.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.terminal_theme import MONOKAI

from claude_usage_agent.monitor.state import LIVE, DashboardParams, LinkState, Snapshot
from claude_usage_agent.monitor.view import ViewOptions, render
from claude_usage_agent.transport import DASHBOARD_PATH, Endpoint, get_json
from tests.support import REPO

from .conftest import ServerProcess, manage, server_env

CHROMIUM = "/usr/bin/chromium"
COLUMNS = 100
PARAMS = DashboardParams(plan="max20")
BUDGET = 30.0


def dashboard_of_the_samples(workdir: Path) -> dict[str, object]:
    env = server_env(workdir)
    manage(env, "migrate", "--noinput", "-v0")
    token = manage(env, "create_token", "alice").strip()
    manage(env, "load_samples", "--user", "alice", "--shift-to-now")
    server = ServerProcess(env, workdir / "server.log", token=token)
    server.start()
    try:
        endpoint = Endpoint(server.url, token, "screenshot")
        answer: dict[str, object] = get_json(endpoint, f"{DASHBOARD_PATH}?{PARAMS.query()}")
        return answer
    finally:
        server.stop()


def svg_of(dashboard: dict[str, object]) -> str:
    now = datetime.now(UTC)
    console = Console(width=COLUMNS, record=True, file=io.StringIO(), force_terminal=True)
    options = ViewOptions(server="https://usage.example.com", budget=BUDGET)
    console.print(render(Snapshot(dashboard, now), LinkState(LIVE), now, options))
    return console.export_svg(title="claude-usage-agent monitor", theme=MONOKAI)


def photograph(svg: Path, png: Path) -> None:
    width, height = (
        round(float(n)) for n in re.findall(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg.read_text())[0]
    )
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            svg.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def main(output: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        svg = workdir / "monitor.svg"
        svg.write_text(svg_of(dashboard_of_the_samples(workdir)))
        photograph(svg, output.resolve())
    print(f"{output}: {output.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "terminal-monitor.png")
