"""`monitor` as a command: the plain agent never loads its extra, and a missing extra is one
clear line (the link's tests are in test_monitor_link.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from tests.support import free_port

from .processes import agent_command, agent_env
from .terminal import Terminal


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_agent_and_its_help_do_not_import_rich_or_websockets() -> None:
    done = run_python(
        """
        import contextlib, io, sys
        from claude_usage_agent import cli
        for argv in (["--help"], ["monitor", "--help"], ["sync", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                cli.main(argv)
        print(sorted(name for name in sys.modules if name.split(".")[0] in ("rich", "websockets")))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_the_extra_the_live_screen_says_how_to_install_it() -> None:
    done = run_python(
        """
        import sys
        sys.modules["rich"] = None  # as if not installed: find_spec says None, import fails
        sys.modules["websockets"] = None
        sys.stdout.isatty = lambda: True
        from claude_usage_agent import cli
        sys.exit(cli.main(["monitor", "--server", "http://127.0.0.1:9", "--token", "k"]))
        """
    )
    assert done.returncode == 2
    assert done.stderr == (
        "claude-usage-agent monitor needs rich and websockets:"
        ' pip install "claude-usage-agent[monitor]"\n'
    )


def test_with_no_server_it_says_reconnecting_and_sigterm_restores_the_terminal() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    command = agent_command("monitor", "--server", nobody, "--token", "k")
    terminal = Terminal(command, agent_env(TERM="xterm-256color"))
    try:
        terminal.wait_for("reconnecting in", "attempt 1")
        terminal.child.kill(signal.SIGTERM)
        assert terminal.wait_exit() == 0
        assert terminal.restored()
        assert b"Traceback" not in terminal.output
    finally:
        terminal.stop()
