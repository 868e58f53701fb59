"""Line scanning: only complete lines, exact offsets, a half-written tail left for later."""

from __future__ import annotations

import io

import pytest

from claude_usage_agent.lines import follows_line_end, iter_complete_lines, split_complete_lines


@pytest.mark.parametrize(
    ("buffer", "lines", "tail"),
    [
        (b"", [], b""),
        (b"a\n", [b"a"], b""),
        (b"a\nb", [b"a"], b"b"),
        (b"a\n\nb\n", [b"a", b"", b"b"], b""),
        (b'{"half":', [], b'{"half":'),
    ],
)
def test_it_splits_complete_lines_from_the_unterminated_tail(
    buffer: bytes, lines: list[bytes], tail: bytes
) -> None:
    assert split_complete_lines(buffer) == (lines, tail)


def test_it_yields_each_line_with_the_offset_just_after_its_newline() -> None:
    handle = io.BytesIO(b"one\ntwo\nthree\n")
    assert list(iter_complete_lines(handle, 0)) == [(b"one", 4), (b"two", 8), (b"three", 14)]


def test_it_leaves_a_half_written_last_line_for_later() -> None:
    handle = io.BytesIO(b'{"a":1}\n{"b":')
    assert list(iter_complete_lines(handle, 0)) == [(b'{"a":1}', 8)]


def test_it_resumes_from_an_offset() -> None:
    handle = io.BytesIO(b"one\ntwo\nthree\n")
    assert list(iter_complete_lines(handle, 4)) == [(b"two", 8), (b"three", 14)]


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 64])
def test_chunk_boundaries_do_not_change_the_lines(chunk_size: int) -> None:
    data = b"alpha\nbe\n\na much longer line than any chunk\nend"
    lines = list(iter_complete_lines(io.BytesIO(data), 0, chunk_size=chunk_size))
    assert lines == [
        (b"alpha", 6),
        (b"be", 9),
        (b"", 10),
        (b"a much longer line than any chunk", 44),
    ]


def test_a_carriage_return_stays_in_the_line_and_counts_in_the_offset() -> None:
    assert list(iter_complete_lines(io.BytesIO(b"a\r\nb\r\n"), 0)) == [(b"a\r", 3), (b"b\r", 6)]


@pytest.mark.parametrize(
    ("data", "offset", "expected"),
    [(b"a\nb\n", 0, True), (b"a\nb\n", 2, True), (b"a\nb\n", 3, False), (b"xxxxb\n", 2, False)],
)
def test_it_checks_that_a_checkpoint_still_follows_a_line_end(
    data: bytes, offset: int, expected: bool
) -> None:
    assert follows_line_end(io.BytesIO(data), offset) is expected
