"""The copy-ranking cases of ``copy_ranking.json``: which copy of one (message id, request id)
the server keeps. The server's, the agent's and the fake server's tests all read them, so
that the three cannot drift apart (the file's ``about`` explains the cases).

Standard library only: the agent's tests import this where Django is not installed.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CASE_FILE = Path(__file__).with_name("copy_ranking.json")
AGENT_CHOICES = {"decides": True, "defers": False}


@dataclass(frozen=True)
class Copy:
    line: dict[str, Any]  # a whole transcript line; tests read it, never change it
    host: str  # the machine it is shipped from (X-Usage-Host)


@dataclass(frozen=True)
class Case:
    name: str
    step: str  # the step of the order that decides: "sidechain", "total tokens", ...
    agent_decides: bool  # copy_rank alone picks the kept copy; else it leaves it to the server
    copies: tuple[Copy, ...]
    kept: int  # index in ``copies``

    def __str__(self) -> str:
        """The case's name, a sentence: the test id (``ids=str``)."""
        return self.name

    @property
    def kept_copy(self) -> Copy:
        return self.copies[self.kept]

    @property
    def refused(self) -> bool:
        """One of the copies is a record the server refuses."""
        return self.step == "refused"

    @property
    def from_one_machine(self) -> bool:
        """Whether one agent can read all the copies: it ships from one machine only."""
        return len({copy.host for copy in self.copies}) == 1

    def arrival_orders(self) -> Iterator[tuple[Copy, ...]]:
        """Every order the copies can arrive in: the kept copy must not depend on it."""
        return itertools.permutations(self.copies)


def load_cases() -> list[Case]:
    """Fresh objects on every call, so that no test sees another's changes."""
    data = json.loads(CASE_FILE.read_text())
    cases = [_case(raw, data["line"], data["host"]) for raw in data["cases"]]
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), "case names are test ids: they must differ"
    return cases


def _case(raw: dict[str, Any], line: dict[str, Any], host: str) -> Case:
    changes: list[dict[str, Any]] = raw["copies"]
    hosts: list[str] = raw.get("hosts", [host] * len(changes))
    assert len(changes) >= 2, raw["name"]
    assert len(hosts) == len(changes), raw["name"]
    assert 0 <= raw["kept"] < len(changes), raw["name"]
    copies = tuple(
        Copy(line=_merged(line, change), host=machine)
        for change, machine in zip(changes, hosts, strict=True)
    )
    return Case(
        name=raw["name"],
        step=raw["step"],
        agent_decides=AGENT_CHOICES[raw["agent"]],
        copies=copies,
        kept=raw["kept"],
    )


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in: objects key by key, any other value replaced."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
