"""Discovery follows Claude Code: CLAUDE_CONFIG_DIR, else both default locations."""

from __future__ import annotations

from pathlib import Path

from claude_usage_agent.discovery import candidate_projects_dirs, projects_dirs, transcript_files


def make_tree(root: Path, *files: str) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


def test_without_the_variable_both_default_locations_are_candidates(tmp_path: Path) -> None:
    assert candidate_projects_dirs({}, tmp_path) == [
        tmp_path / ".config" / "claude" / "projects",
        tmp_path / ".claude" / "projects",
    ]


def test_xdg_config_home_moves_the_first_default(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert candidate_projects_dirs(env, tmp_path)[0] == tmp_path / "xdg" / "claude" / "projects"


def test_only_existing_defaults_are_scanned(tmp_path: Path) -> None:
    (tmp_path / ".claude" / "projects").mkdir(parents=True)
    assert projects_dirs({}, tmp_path) == [tmp_path / ".claude" / "projects"]


def test_both_defaults_are_scanned_when_both_exist(tmp_path: Path) -> None:
    (tmp_path / ".claude" / "projects").mkdir(parents=True)
    (tmp_path / ".config" / "claude" / "projects").mkdir(parents=True)
    assert len(projects_dirs({}, tmp_path)) == 2


def test_the_variable_lists_config_dirs_or_projects_dirs_and_replaces_the_defaults(
    tmp_path: Path,
) -> None:
    (tmp_path / ".claude" / "projects").mkdir(parents=True)
    (tmp_path / "work" / "projects").mkdir(parents=True)
    (tmp_path / "personal" / "projects").mkdir(parents=True)
    env = {"CLAUDE_CONFIG_DIR": f"{tmp_path / 'work'}, {tmp_path / 'personal' / 'projects'},"}
    assert projects_dirs(env, tmp_path) == [
        tmp_path / "work" / "projects",
        tmp_path / "personal" / "projects",
    ]


def test_a_config_dir_without_projects_is_not_scanned_itself(tmp_path: Path) -> None:
    make_tree(tmp_path / "cfg", "history.jsonl")
    assert projects_dirs({"CLAUDE_CONFIG_DIR": str(tmp_path / "cfg")}, tmp_path) == []


def test_a_directory_reached_twice_through_a_symlink_is_scanned_once(tmp_path: Path) -> None:
    (tmp_path / ".claude" / "projects").mkdir(parents=True)
    (tmp_path / ".config").mkdir()
    (tmp_path / ".config" / "claude").symlink_to(tmp_path / ".claude")
    assert len(projects_dirs({}, tmp_path)) == 1


def test_every_jsonl_below_is_found_including_subagent_logs(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        "-home-a-api/s1.jsonl",
        "-home-a-api/agent-abc.jsonl",
        "-home-a-api/s1/subagents/agent-1.jsonl",
        "-home-a-api/notes.txt",
        "-home-b-web/s2.jsonl",
    )
    assert transcript_files([tmp_path]) == [
        str(tmp_path / "-home-a-api/agent-abc.jsonl"),
        str(tmp_path / "-home-a-api/s1.jsonl"),
        str(tmp_path / "-home-a-api/s1/subagents/agent-1.jsonl"),
        str(tmp_path / "-home-b-web/s2.jsonl"),
    ]
