"""All of seqbox's own terminal output: one line each, on stderr, prefixed ``seqbox:``.

The command's output never goes through here. Tests capture this module's
stream; nothing else in the library prints.
"""

from __future__ import annotations

import os
import sys

QUIET, NORMAL, VERBOSE = 0, 1, 2

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO


class Output:
    """seqbox's messages, filtered by verbosity."""

    def __init__(self, level: int = NORMAL, stream: TextIO | None = None) -> None:
        self.level = level
        self._stream = stream
        self._live_line = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def _write(self, text: str) -> None:
        try:
            if self._live_line:
                self.stream.write("\r\033[K")
                self._live_line = False
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def error(self, message: str) -> None:
        self._write(f"seqbox: {message}\n")

    def note(self, message: str) -> None:
        if self.level >= NORMAL:
            self._write(f"seqbox: {message}\n")

    def info(self, message: str) -> None:
        if self.level >= VERBOSE:
            self._write(f"seqbox: {message}\n")

    def is_tty(self) -> bool:
        try:
            return os.isatty(self.stream.fileno())
        except (AttributeError, ValueError, OSError):
            return False

    def live(self, message: str) -> None:
        """A status line redrawn in place on a TTY (callers rate-limit it elsewhere)."""
        if self.level < NORMAL:
            return
        if self.is_tty():
            try:
                self.stream.write(f"\r\033[Kseqbox: {message}")
                self.stream.flush()
                self._live_line = True
            except (BrokenPipeError, ValueError, OSError):
                pass
        else:
            self._write(f"seqbox: {message}\n")

    def end_live(self) -> None:
        if self._live_line:
            self._write("")
