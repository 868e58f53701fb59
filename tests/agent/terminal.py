"""A program in a pseudo-terminal of fixed size, its screen read through a VT emulator (pyte):
tests wait for what a person would see, not for bytes."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import pexpect
import pyte

from tests.support import WAIT_SECONDS

COLUMNS = 120
ROWS = 40
# What a full-screen program writes to enter and leave the alternate screen, and to hide and
# show the cursor: a program that exits cleanly leaves the terminal as it found it.
ALTERNATE_SCREEN_ON = b"\x1b[?1049h"
ALTERNATE_SCREEN_OFF = b"\x1b[?1049l"
CURSOR_HIDDEN = b"\x1b[?25l"
CURSOR_SHOWN = b"\x1b[?25h"


class Terminal:
    def __init__(self, command: Sequence[str], env: Mapping[str, str]) -> None:
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.output = bytearray()
        self.child = pexpect.spawn(
            command[0], list(command[1:]), env=dict(env), dimensions=(ROWS, COLUMNS)
        )

    def pump(self, timeout: float = 0.1) -> None:
        try:
            data = self.child.read_nonblocking(65536, timeout)
        except (pexpect.TIMEOUT, pexpect.EOF):
            return
        self.output += data
        self.stream.feed(data)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, *needles: str, timeout: float = WAIT_SECONDS) -> str:
        """Until every needle is on the screen at once; the screen then."""
        deadline = time.monotonic() + timeout
        while not all(needle in self.text() for needle in needles):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{needles} not on the screen within {timeout:.0f} s:\n"
                    f"{self.text()}\n(raw tail: {bytes(self.output[-300:])!r})"
                )
            if not self.child.isalive():
                self.pump()
                if not all(needle in self.text() for needle in needles):
                    raise AssertionError(
                        f"exited ({self.child.exitstatus}):\n{self.text()}\n"
                        f"{bytes(self.output[-2000:]).decode(errors='replace')}"
                    )
            self.pump()
        return self.text()

    def wait_exit(self, timeout: float = WAIT_SECONDS) -> int:
        """Reads to the end of the output; the exit status (128 + N for signal N)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.child.read_nonblocking(65536, 0.2)
            except pexpect.TIMEOUT:
                if time.monotonic() > deadline:
                    message = f"still running after {timeout:.0f} s:\n{self.text()}"
                    raise AssertionError(message) from None
                continue
            except pexpect.EOF:
                break
            self.output += data
            self.stream.feed(data)
        self.child.close()
        if self.child.signalstatus is not None:
            return 128 + int(self.child.signalstatus)
        return int(self.child.exitstatus or 0)

    def stop(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)

    def restored(self) -> bool:
        """The alternate screen was left and the cursor shown again after they last changed."""
        out = bytes(self.output)
        return out.rfind(ALTERNATE_SCREEN_OFF) > out.rfind(ALTERNATE_SCREEN_ON) and out.rfind(
            CURSOR_SHOWN
        ) > out.rfind(CURSOR_HIDDEN)
