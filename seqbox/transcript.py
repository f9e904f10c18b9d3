"""``--log FILE``: the command's output appended to a file, framed by one
line per try and the summary. A file that stops taking writes gives one
warning; the command's output and exit code are not affected."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

    from seqbox.output import Output


class Transcript:
    """An open ``--log`` file."""

    __slots__ = ("file", "out", "path", "warned")

    def __init__(self, path: str, file: BinaryIO, out: Output) -> None:
        self.path = path
        self.file = file
        self.out = out
        self.warned = False

    def line(self, text: str) -> None:
        try:
            self.file.write(text.encode("utf-8", "surrogateescape"))
            self.file.flush()
        except OSError:
            pass

    def failed(self, err: OSError) -> None:
        """Say once that the file stopped taking writes."""
        if not self.warned:
            self.warned = True
            self.out.note(
                f"warning: cannot write the log {self.path}: {err.strerror}; "
                "the command's output was not cut, only the log is incomplete"
            )

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as err:
            self.failed(err)


def open_transcript(path: str | None, out: Output) -> Transcript | None:
    """The ``--log`` file opened for appending; None without one, or (with a
    warning) when it cannot be opened: the command runs without it."""
    if path is None:
        return None
    try:
        return Transcript(path, open(path, "ab"), out)
    except OSError as err:
        out.note(f"warning: cannot write the log {path}: {err.strerror}; running without it")
        return None
