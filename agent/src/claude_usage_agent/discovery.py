"""Finding transcripts where Claude Code writes them."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

CONFIG_DIR_ENV = "CLAUDE_CONFIG_DIR"


def candidate_projects_dirs(env: Mapping[str, str], home: Path) -> list[Path]:
    """The projects directories Claude Code would use, existing or not.

    CLAUDE_CONFIG_DIR (comma-separated) replaces the defaults; each entry is a config dir or its
    `projects/` itself. Without it, both default locations are read, as ccusage does.
    """
    configured = [part.strip() for part in env.get(CONFIG_DIR_ENV, "").split(",") if part.strip()]
    if configured:
        return [_projects_dir(Path(part).expanduser()) for part in configured]
    xdg_config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return [xdg_config / "claude" / "projects", home / ".claude" / "projects"]


def _projects_dir(path: Path) -> Path:
    # A config dir without projects/ yet must not be scanned itself: it holds other JSONL files
    # (history.jsonl with every prompt) that are not transcripts.
    return path if path.name == "projects" else path / "projects"


def projects_dirs(env: Mapping[str, str], home: Path) -> list[Path]:
    """Existing projects directories, each once even when reached through a symlink."""
    found: dict[Path, Path] = {}
    for candidate in candidate_projects_dirs(env, home):
        if candidate.is_dir():
            found.setdefault(candidate.resolve(), Path(os.path.abspath(candidate)))
    return list(found.values())


def transcript_files(roots: Iterable[Path]) -> list[str]:
    """Every `*.jsonl` below the roots, subagent logs included, sorted for a stable order."""
    files: list[str] = []
    for root in roots:
        for directory, _subdirs, names in os.walk(root, onerror=_log_walk_error):
            files.extend(os.path.join(directory, name) for name in names if name.endswith(".jsonl"))
    return sorted(files)


def _log_walk_error(error: OSError) -> None:
    log.warning("cannot read %s: %s", error.filename, error.strerror)
