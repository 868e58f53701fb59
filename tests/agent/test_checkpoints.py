"""Checkpoints: where reading resumes, when a file is re-read, and how the state file is kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from claude_usage_agent.checkpoints import (
    AgentState,
    Checkpoint,
    StateInUseError,
    load_state,
    needs_reading,
    resume_offset,
    save_state,
    state_lock,
)

SERVER = "http://usage.test"
KNOWN = Checkpoint(inode=7, size=120, offset=100)


@pytest.mark.parametrize(
    ("known", "inode", "size", "offset"),
    [
        (None, 7, 500, 0),  # a new file is read from the start
        (KNOWN, 7, 120, 100),  # unchanged: resume after the last acknowledged line
        (KNOWN, 7, 500, 100),  # grown: resume after the last acknowledged line
        (KNOWN, 7, 100, 100),  # shrunk to exactly the offset: nothing lost, nothing new
        (KNOWN, 7, 99, 0),  # truncated below the offset: read again from the start
        (KNOWN, 8, 500, 0),  # replaced (new inode): read again from the start
    ],
)
def test_it_resumes_where_it_should(
    known: Checkpoint | None, inode: int, size: int, offset: int
) -> None:
    assert resume_offset(known, inode, size) == offset


@pytest.mark.parametrize(
    ("known", "inode", "size", "expected"),
    [(None, 7, 0, True), (KNOWN, 7, 120, False), (KNOWN, 7, 121, True), (KNOWN, 8, 120, True)],
)
def test_only_changed_files_are_opened(
    known: Checkpoint | None, inode: int, size: int, expected: bool
) -> None:
    assert needs_reading(known, inode, size) is expected


def test_state_survives_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent-state.json"
    state = AgentState(SERVER, {"/logs/a.jsonl": KNOWN})
    save_state(path, state)
    assert load_state(path, SERVER) == state


def test_saving_leaves_no_temporary_file_behind(tmp_path: Path) -> None:
    path = tmp_path / "agent-state.json"
    save_state(path, AgentState(SERVER, {"/a": KNOWN}))
    save_state(path, AgentState(SERVER, {"/b": KNOWN}))
    assert os.listdir(tmp_path) == ["agent-state.json"]
    assert list(json.loads(path.read_text())["files"]) == ["/b"]


def test_a_missing_state_file_means_starting_from_scratch(tmp_path: Path) -> None:
    assert load_state(tmp_path / "nothing.json", SERVER) == AgentState(SERVER)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"version": 99, "server": "x", "files": {}}', b'{"version": 1}'],
)
def test_an_unreadable_state_file_means_starting_from_scratch(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "agent-state.json"
    path.write_bytes(content)
    assert load_state(path, SERVER) == AgentState(SERVER)


def test_checkpoints_for_another_server_are_not_used(tmp_path: Path) -> None:
    path = tmp_path / "agent-state.json"
    save_state(path, AgentState("http://old.test", {"/a": KNOWN}))
    assert load_state(path, SERVER) == AgentState(SERVER)


def test_it_forgets_deleted_files_only_under_the_scanned_roots() -> None:
    state = AgentState(
        SERVER, {"/r/p/kept.jsonl": KNOWN, "/r/p/gone.jsonl": KNOWN, "/other/x.jsonl": KNOWN}
    )
    assert state.forget_missing(["/r/p/kept.jsonl"], ["/r"])
    assert set(state.files) == {"/r/p/kept.jsonl", "/other/x.jsonl"}
    assert not state.forget_missing(["/r/p/kept.jsonl"], ["/r"])


def test_a_root_prefix_does_not_match_a_sibling_directory() -> None:
    state = AgentState(SERVER, {"/r2/x.jsonl": KNOWN})
    assert not state.forget_missing([], ["/r"])


def test_a_second_agent_on_the_same_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent-state.json"
    with state_lock(path), pytest.raises(StateInUseError, match="already using"), state_lock(path):
        pass
    with state_lock(path):  # released again
        pass
