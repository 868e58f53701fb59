"""Reading complete lines from a transcript that Claude Code may still be writing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

CHUNK_SIZE = 1 << 20


def split_complete_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split into newline-terminated lines (newline removed) and the unterminated tail.

    The tail may be a line Claude Code is still writing: it is only taken once its newline lands,
    so a half-written record is never sent nor checkpointed past.
    """
    *complete, tail = buffer.split(b"\n")
    return complete, tail


def iter_complete_lines(
    handle: BinaryIO, start: int, chunk_size: int = CHUNK_SIZE
) -> Iterator[tuple[bytes, int]]:
    """Yield `(line, offset just after its newline)` for every complete line from `start`."""
    handle.seek(start)
    offset = start
    pending: list[bytes] = []
    while chunk := handle.read(chunk_size):
        if b"\n" not in chunk:
            # Part of one long line: collect the pieces instead of re-joining them every chunk.
            pending.append(chunk)
            continue
        lines, tail = split_complete_lines(b"".join([*pending, chunk]))
        pending = [tail]
        for line in lines:
            offset += len(line) + 1
            yield line, offset


def follows_line_end(handle: BinaryIO, offset: int) -> bool:
    """True when the byte before `offset` is a newline (or `offset` is the start).

    A checkpoint always sits just after a newline; if that byte changed, the file was rewritten in
    place under the same inode and must be read again from the start.
    """
    if offset == 0:
        return True
    handle.seek(offset - 1)
    return handle.read(1) == b"\n"
