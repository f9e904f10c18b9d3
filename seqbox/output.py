"""All of seqbox's own terminal output: one line each, on stderr, prefixed ``seqbox:``.

The command's output never goes through here. Tests capture this module's
stream; nothing else in the library prints.
"""

from __future__ import annotations

import os
import stat
import sys

QUIET, NORMAL, VERBOSE = 0, 1, 2

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO


def one_line(message: str) -> str:
    """``message`` as one line: a line break or other control character in it
    (a command's name, a path, anything a user gave) shown as its escape, ``\\n``."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class Output:
    """seqbox's messages, filtered by verbosity; each is :func:`one_line`."""

    def __init__(self, level: int = NORMAL, stream: TextIO | None = None) -> None:
        self.level = level
        self._stream = stream
        self._live_line = False
        self._tty: bool | None = None  # whether the stream is a terminal, once asked

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def _write(self, text: str) -> None:
        try:
            if self._live_line:
                self.stream.write("\r\033[K")
                self._live_line = False
            elif text:
                self.stream.write(self._fresh_line())
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def error(self, message: str) -> None:
        self._write(f"seqbox: {one_line(message)}\n")

    def note(self, message: str) -> None:
        if self.level >= NORMAL:
            self._write(f"seqbox: {one_line(message)}\n")

    def warning(self, message: str) -> None:
        """A warning while the command runs. On a pipe (a CI log), seqbox cannot see
        whether the command's output there ended its line (pytest's dots often have
        not): the warning starts with a line break so that it stands on a line of its
        own, at the cost of an empty line when the output had ended its line."""
        if self.level >= NORMAL:
            self._write(("\n" if self._on_pipe() else "") + f"seqbox: {one_line(message)}\n")

    def info(self, message: str) -> None:
        if self.level >= VERBOSE:
            self._write(f"seqbox: {one_line(message)}\n")

    def _fresh_line(self) -> str:
        """On a terminal, what moves the cursor to the start of a fresh line
        whether or not the command left it in the middle of one (seqbox cannot
        see the command's output): as many spaces as the terminal is wide, a
        carriage return and erase-to-end. From column 0 the spaces just fill the
        line (the cursor waits at its end), so the return comes back to the
        same, now blank, line; from the middle of a line they wrap onto the next
        one, and the return lands there. This is zsh's PROMPT_SP."""
        if self._tty is None:
            self._tty = self.is_tty()
        if not self._tty:
            return "\n" if self._file_ends_mid_line() else ""
        try:  # asked each time: the terminal may have been resized
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            return ""
        return " " * columns + "\r\033[K"

    def _file_ends_mid_line(self) -> bool:
        """On a regular file (a log written with ``> log 2>&1``), whether its last
        byte, the command's perhaps, leaves a line unfinished: seqbox can look."""
        try:
            fd = self.stream.fileno()
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
                return False
            try:
                last = os.pread(fd, 1, info.st_size - 1)
            except OSError:  # opened write-only (>, >>): read it through a second open
                reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    last = os.pread(reader, 1, info.st_size - 1)
                finally:
                    os.close(reader)
        except (AttributeError, ValueError, OSError):
            return False
        return last not in (b"", b"\n")

    def _on_pipe(self) -> bool:
        try:
            mode = os.fstat(self.stream.fileno()).st_mode
        except (AttributeError, ValueError, OSError):
            return False
        return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)

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
                self.stream.write(f"\r\033[Kseqbox: {one_line(message)}")
                self.stream.flush()
                self._live_line = True
            except (BrokenPipeError, ValueError, OSError):
                pass
        else:
            self._write(f"seqbox: {one_line(message)}\n")

    def end_live(self) -> None:
        if self._live_line:
            self._write("")
