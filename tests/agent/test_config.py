"""Settings: command line over environment over config file over defaults."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from claude_usage_agent.config import (
    ConfigError,
    Overrides,
    default_cache_file,
    default_state_file,
    normalize_server,
    resolve_settings,
)


def write_config(home: Path, text: str) -> Path:
    path = home / ".config" / "claude-usage" / "agent.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_the_command_line_wins(tmp_path: Path) -> None:
    write_config(tmp_path, 'server = "https://file.test"\ntoken = "file-token"\n')
    env = {"CLAUDE_USAGE_SERVER": "https://env.test", "CLAUDE_USAGE_TOKEN": "env-token"}
    settings = resolve_settings(Overrides(server="https://cli.test/", token="t"), env, tmp_path)
    assert (settings.server, settings.token) == ("https://cli.test", "t")


def test_the_environment_beats_the_config_file(tmp_path: Path) -> None:
    write_config(tmp_path, 'server = "https://file.test"\ntoken = "file-token"\n')
    env = {"CLAUDE_USAGE_TOKEN": "env-token"}
    settings = resolve_settings(Overrides(), env, tmp_path)
    assert (settings.server, settings.token) == ("https://file.test", "env-token")


def test_the_config_file_can_set_everything(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        'server = "https://file.test"\ntoken = "k"\nhost_name = "desk"\n'
        'state_file = "~/state.json"\n',
    )
    settings = resolve_settings(Overrides(), {}, tmp_path)
    assert settings.host_name == "desk"
    assert settings.state_file == Path("~/state.json").expanduser()


def test_defaults_are_the_hostname_and_the_xdg_state_dir(tmp_path: Path) -> None:
    env = {"CLAUDE_USAGE_SERVER": "http://s.test", "CLAUDE_USAGE_TOKEN": "k"}
    settings = resolve_settings(Overrides(), env, tmp_path)
    assert settings.host_name == socket.gethostname()
    assert settings.state_file == tmp_path / ".local/state/claude-usage/agent-state.json"
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    assert default_state_file(env, tmp_path) == tmp_path / "xdg/claude-usage/agent-state.json"


def test_the_cache_lives_in_the_xdg_cache_dir(tmp_path: Path) -> None:
    assert default_cache_file({}, tmp_path) == tmp_path / ".cache/claude-usage/statusline.json"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no server configured: pass --server URL, set CLAUDE_USAGE_SERVER"),
        ({"CLAUDE_USAGE_SERVER": "http://s.test"}, "no token configured"),
    ],
)
def test_a_missing_server_or_token_says_how_to_fix_it(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_settings(Overrides(), env, tmp_path)


def test_an_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_settings(Overrides(config_file=tmp_path / "nope.toml"), {}, tmp_path)


@pytest.mark.parametrize("text", ["server = ", 'servr = "https://typo.test"'])
def test_a_broken_config_file_is_reported(tmp_path: Path, text: str) -> None:
    write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=r"agent\.toml"):
        resolve_settings(Overrides(), {}, tmp_path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [("https://u.test/", "https://u.test"), (" http://h:8000 ", "http://h:8000")],
)
def test_server_urls_are_normalized(url: str, expected: str) -> None:
    assert normalize_server(url) == expected


@pytest.mark.parametrize("url", ["u.test", "ftp://u.test", "https://"])
def test_server_urls_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match="server URL"):
        normalize_server(url)
