"""Running the agent as a subprocess, the way a user (or Claude Code) runs it."""

from __future__ import annotations

import os
import sys

from .conftest import AGENT_SRC


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "claude_usage_agent", *args]


def agent_env(**extra: str) -> dict[str, str]:
    """This process's environment without agent settings, plus `extra`.

    agent/src goes on PYTHONPATH so the command also runs where the agent is not installed.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(AGENT_SRC), env.get("PYTHONPATH")]))
    return {**env, **extra}
