"""Per-file checkpoints: how far each transcript has been acknowledged by the server.

A checkpoint only ever moves after the server acknowledged every record before it, so a crash
at any moment means re-sending (which the server drops as duplicates), never skipping.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from claude_usage_agent.fileio import write_atomically

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    inode: int
    # Bytes seen at the last read, complete lines or not: an unchanged size means nothing new.
    size: int
    # Just after the last complete line whose records the server acknowledged.
    offset: int


def needs_reading(known: Checkpoint | None, inode: int, size: int) -> bool:
    """Whether the file may hold something not yet acknowledged."""
    return known is None or known.inode != inode or known.size != size


def resume_offset(known: Checkpoint | None, inode: int, size: int) -> int:
    """Where to start reading: 0 for a new, replaced (new inode) or truncated file."""
    if known is None or known.inode != inode or size < known.offset:
        return 0
    return known.offset


@dataclass
class AgentState:
    """Checkpoints for one server; sending to another server starts over."""

    server: str
    files: dict[str, Checkpoint] = field(default_factory=dict)

    def forget_missing(self, discovered: Iterable[str], roots: Iterable[str]) -> bool:
        """Drop checkpoints of files under `roots` that are gone (Claude Code's 30-day cleanup).

        Files outside the scanned roots are left alone: another CLAUDE_CONFIG_DIR may own them.
        Returns whether anything was dropped.
        """
        present = set(discovered)
        prefixes = tuple(os.path.join(root, "") for root in roots)
        gone = [path for path in self.files if path.startswith(prefixes) and path not in present]
        for path in gone:
            del self.files[path]
        return bool(gone)


def load_state(path: Path, server: str) -> AgentState:
    """Read the state file; a missing, unreadable or foreign one means starting from scratch.

    Starting over is always safe: the server drops records it already has.
    """
    try:
        raw = json.loads(path.read_bytes())
        state = _decode_state(raw)
    except FileNotFoundError:
        return AgentState(server)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        log.warning("ignoring unreadable state file %s (%s); re-sending everything", path, error)
        return AgentState(server)
    if state.server != server:
        log.warning(
            "state file %s belongs to %s; re-sending everything to %s", path, state.server, server
        )
        return AgentState(server)
    return state


def _decode_state(raw: Any) -> AgentState:
    if raw.get("version") != STATE_VERSION:
        raise ValueError(f"unknown state version {raw.get('version')!r}")
    files = {
        str(path): Checkpoint(int(entry["inode"]), int(entry["size"]), int(entry["offset"]))
        for path, entry in raw["files"].items()
    }
    return AgentState(str(raw["server"]), files)


def save_state(path: Path, state: AgentState) -> None:
    """Write the whole state atomically (see write_atomically)."""
    document = {
        "version": STATE_VERSION,
        "server": state.server,
        "files": {name: asdict(checkpoint) for name, checkpoint in sorted(state.files.items())},
    }
    write_atomically(path, json.dumps(document, indent=1).encode())


class StateInUseError(RuntimeError):
    """Another agent process holds the same state file."""


@contextlib.contextmanager
def state_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock next to the state file for the life of a sync or watch.

    Two agents on one state file would be safe (all they write was acknowledged) but wasteful;
    refusing the second one also tells the user a `watch` is already running.
    """
    if sys.platform == "win32":  # no flock: run unguarded
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateInUseError(
                f"another claude-usage-agent is already using {path} (a `watch` running?)"
            ) from None
        yield
