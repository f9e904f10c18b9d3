"""Where the command's stdout and stderr go.

* default: inherited untouched (a TTY stays a TTY, nothing is buffered);
* ``--json``: into anonymous temporary files (no pipe to drain, no deadlock),
  read back after the run;
* ``--log FILE``: through pipes, copied live to seqbox's own stdout/stderr and
  appended to FILE. The command then sees pipes, not a TTY: that is the price
  of a copy.
"""

from __future__ import annotations

import os
import threading
import time

from seqbox.spawn import Stdio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO


class Capture:
    """Set up the command's stdio for one try, and collect it afterwards."""

    def __init__(self, *, capture: bool, log: BinaryIO | None) -> None:
        self.capture = capture
        self.log = log
        self._files: list[BinaryIO] = []
        self._child_fds: list[int] = []
        self._threads: list[threading.Thread] = []
        self._pipes: list[tuple[int, int]] = []  # (read end, where to copy it)
        self._log_lock = threading.Lock()
        #: why the log stopped being written (a full disk, say); the output
        #: itself goes on, and the caller warns once
        self.log_error: OSError | None = None

    def stdio(self) -> Stdio:
        if self.capture:
            import tempfile

            out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
            err = tempfile.TemporaryFile()  # noqa: SIM115
            self._files = [out, err]
            return Stdio(None, out.fileno(), err.fileno())
        if self.log is not None:
            fds = []
            for target in (1, 2):
                r, w = os.pipe()
                self._pipes.append((r, target))
                self._child_fds.append(w)
                fds.append(w)
            return Stdio(None, fds[0], fds[1])
        return Stdio()

    def started(self) -> None:
        """The child has its copies: close ours and start copying."""
        for fd in self._child_fds:
            os.close(fd)
        self._child_fds = []
        for r, target in self._pipes:
            thread = threading.Thread(target=self._copy, args=(r, target), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _copy(self, r: int, target: int) -> None:
        try:
            while True:
                chunk = os.read(r, 65536)
                if not chunk:
                    break
                try:
                    _write_all(target, chunk)
                except OSError:
                    pass
                self._to_log(chunk)
        finally:
            os.close(r)

    def _to_log(self, data: bytes) -> None:
        if self.log is None or self.log_error is not None:
            return
        with self._log_lock:
            try:
                self.log.write(data)
                self.log.flush()
            except OSError as err:
                self.log_error = err

    def finish(self, timeout: float = 5.0) -> tuple[str | None, str | None]:
        """Wait for the copies to end; return captured (stdout, stderr) text."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        for fd in self._child_fds:
            os.close(fd)
        self._child_fds = []
        if not self._files:
            return None, None
        texts = []
        for f in self._files:
            f.seek(0)
            data = f.read()
            f.close()
            self._to_log(data)
            texts.append(data.decode("utf-8", "replace"))
        self._files = []
        return texts[0], texts[1]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
