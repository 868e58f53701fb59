"""Where the server, token, host name and state file come from.

Precedence: command line, then environment, then the config file
(`~/.config/claude-usage/agent.toml`), then defaults.
"""

from __future__ import annotations

import os
import socket
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVER_ENV = "CLAUDE_USAGE_SERVER"
TOKEN_ENV = "CLAUDE_USAGE_TOKEN"
HOST_ENV = "CLAUDE_USAGE_HOST_NAME"
CONFIG_FILE_KEYS = frozenset({"server", "token", "host_name", "state_file"})


class ConfigError(Exception):
    """The agent cannot run as configured; the message says how to fix it."""


@dataclass(frozen=True)
class Overrides:
    """What the command line said; None means "not given"."""

    server: str | None = None
    token: str | None = None
    host_name: str | None = None
    state_file: Path | None = None
    config_file: Path | None = None


@dataclass(frozen=True)
class Settings:
    server: str
    token: str
    host_name: str
    state_file: Path


def config_home(env: Mapping[str, str], home: Path) -> Path:
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config")


def default_config_file(env: Mapping[str, str], home: Path) -> Path:
    return config_home(env, home) / "claude-usage" / "agent.toml"


def default_state_file(env: Mapping[str, str], home: Path) -> Path:
    if os.name == "nt" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "claude-usage" / "agent-state.json"
    state_home = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state")
    return state_home / "claude-usage" / "agent-state.json"


def default_cache_file(env: Mapping[str, str], home: Path) -> Path:
    if os.name == "nt" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "claude-usage" / "statusline.json"
    cache_home = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
    return cache_home / "claude-usage" / "statusline.json"


def read_config_file(path: Path, required: bool) -> dict[str, Any]:
    """The file's settings; a missing default file is simply empty."""
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except (tomllib.TOMLDecodeError, OSError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    unknown = set(values) - CONFIG_FILE_KEYS
    if unknown:
        raise ConfigError(f"unknown keys in {path}: {', '.join(sorted(unknown))}")
    return values


def normalize_server(url: str) -> str:
    """`https://host/` → `https://host`: paths are appended to it."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"server URL must look like https://usage.example.com, got {url!r}")
    return url.strip().rstrip("/")


def _first(*values: object) -> str | None:
    for value in values:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def resolve_settings(overrides: Overrides, env: Mapping[str, str], home: Path) -> Settings:
    """Settings for `sync` and `watch`; a missing server or token is a ConfigError."""
    config_file = overrides.config_file or default_config_file(env, home)
    file_values = read_config_file(config_file, required=overrides.config_file is not None)
    server = _first(overrides.server, env.get(SERVER_ENV), file_values.get("server"))
    token = _first(overrides.token, env.get(TOKEN_ENV), file_values.get("token"))
    if server is None:
        raise ConfigError(_missing("server", "--server URL", SERVER_ENV, config_file))
    if token is None:
        raise ConfigError(_missing("token", "--token KEY", TOKEN_ENV, config_file))
    host = _first(overrides.host_name, env.get(HOST_ENV), file_values.get("host_name"))
    state = overrides.state_file or _path(file_values.get("state_file"))
    return Settings(
        server=normalize_server(server),
        token=token,
        host_name=host or socket.gethostname(),
        state_file=state or default_state_file(env, home),
    )


def _path(value: object) -> Path | None:
    return Path(value).expanduser() if isinstance(value, str) and value else None


def _missing(what: str, option: str, variable: str, config_file: Path) -> str:
    return (
        f"no {what} configured: pass {option}, set {variable}, "
        f'or put {what} = "..." in {config_file}'
    )
