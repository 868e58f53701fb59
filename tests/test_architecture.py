"""What the import contracts cannot say: only the projection store spells Redis keys."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STORE = REPO / "usage" / "projection" / "redis_store.py"
# The store's key layout (see its docstring): bucket, owner and index keys and their parts.
KEY_TEXT = re.compile(r"^(m|h|p|s|host|pts|sts|hts|win):|:sessions$|^(tot|cp|ts|unpriced)$|\{u:")


def string_literals(path: Path) -> list[tuple[int, str]]:
    """Every string constant in a module, f-strings' literal parts included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_no_module_but_the_projection_store_spells_a_redis_key() -> None:
    modules = [
        path
        for package in ("usage", "realtime", "backend")
        for path in (REPO / package).rglob("*.py")
        if path != STORE and "migrations" not in path.parts
    ]
    spelled = [
        f"{path.relative_to(REPO)}:{line}: {text!r}"
        for path in modules
        for line, text in string_literals(path)
        if KEY_TEXT.search(text)
    ]

    assert spelled == []


def test_the_check_finds_a_key_spelled_outside_the_store(tmp_path: Path) -> None:
    leaky = tmp_path / "selectors.py"
    leaky.write_text('def keys(start):\n    return [f"m:{start}", "tot"]\n')

    found = sorted(text for _, text in string_literals(leaky) if KEY_TEXT.search(text))

    assert found == ["m:", "tot"]
