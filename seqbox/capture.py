"""Where the command's stdout and stderr go.

* default: inherited untouched (a TTY stays a TTY, nothing is buffered);
* ``--json``: into anonymous temporary files (no pipe to drain, no deadlock),
  read back after the run;
* ``--log FILE``: through pipes, copied live to seqbox's own stdout/stderr and
  appended to FILE. The command then sees pipes, not a TTY: that is the price
  of a copy.

The copy is the cost of ``--log`` on a command that writes a lot, so it is
made cheap. Most of what it costs cannot be avoided: the log's bytes go into
the page cache (500 MiB: about 0.12 s of CPU, as much as the whole bare
``head | reader`` when the two share a CPU). The rest is kept small:

* fewer, larger pieces. A command writing fast in small pieces would
  otherwise cost seqbox a few system calls and a turn of Python per piece
  (8 KiB, for ``head``). The command's pipes are grown to CHUNK (256 KiB)
  where the kernel allows, and after a small chunk the copy waits a
  millisecond before the next read, so the pieces add up to whole chunks
  while output streams; the first output after a quiet spell is copied at
  once. Python's share is then a few ms in 500 MiB.
* the reader and the log at once. Where seqbox's stdout (stderr) is a pipe,
  it is grown to hold a whole chunk too (never shrunk): the chunk is then
  handed over in one write that does not wait for the reader, who drains it
  while seqbox writes the log. In the reader's default 64 KiB pipe every
  chunk went over in turns, each waiting for the reader, and only then to
  the log. Where the pipe cannot grow (over the user's pipe quota), a chunk
  is no larger than it holds.
* not larger than that. The command's pipe, the buffer and the reader's
  pipe hold a chunk each; at 256 KiB the three stay in a core's cache (2 MiB
  of L2 on the machine measured). At 1 MiB each a run was slower and bimodal: with the three processes spread
  over two CPUs 0.33-0.56 s against 0.33-0.35 s, and when they share one
  (another process busy on the other CPU) 0.46 s against 0.42 s; 128 KiB
  was slower again (more turns). Numbers: bench/log_overhead.py, ``head -c
  500M /dev/zero | reader``, the same rounds.
* one reused buffer takes each chunk to seqbox's stdout (stderr) and to the
  log, which is appended to through its own descriptor (``O_APPEND``:
  another writer of the same file is not overwritten).

When bare ``head | reader`` runs with both on one CPU (the other busy) it
takes 0.13 s instead of 0.30 s, the copies staying in that CPU's cache; a
``--log`` run then shares that CPU too, and the log's page cache alone is
0.12 s of it, so no copy gets it near bare (a middleman that only splices,
writing no log, is already 1.5x).

Measured against the copy through a buffer, and no faster: ``tee(2)``
(through ctypes) into the stdout pipe and reading the command's pipe for the
log saves the copy into the stdout pipe but makes ``head`` allocate fresh
pages (0.32 s against 0.34 s spread, 0.36 against 0.38 on one CPU: within
the noise, not worth ctypes); ``sendfile(2)`` from the log just appended to
into the stdout pipe; splicing into the log (the splice holds the command's
pipe locked while it writes the log, so the command waits; it also needs a
descriptor without ``O_APPEND``, an offset another writer could race). perf:
most of a ``--log`` run's CPU is the log's bytes going into the page cache
(``copy_folio_from_iter_atomic``), which no way of copying saves.
"""

from __future__ import annotations

import fcntl
import os
import select
import tempfile
import threading
import time

from seqbox.spawn import Stdio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

#: the most taken from a pipe at once, and what the pipes are grown to (the
#: two pipes and the buffer stay in a core's cache; see above)
CHUNK = 256 << 10
#: after a chunk below a quarter of the buffer, how long the copy lets more
#: gather before the next read (the most the next output waits)
GATHER_S = 0.001


class Capture:
    """Set up the command's stdio for one try, and collect it afterwards."""

    def __init__(self, *, capture: bool, log: BinaryIO | None, outputs: tuple[int, int] = (1, 2)) -> None:
        self.capture = capture
        self.log = log
        #: where the command's stdout and stderr are copied to with a log
        self.outputs = outputs
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
            out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
            err = tempfile.TemporaryFile()  # noqa: SIM115
            self._files = [out, err]
            return Stdio(None, out.fileno(), err.fileno())
        if self.log is not None:
            fds = []
            for target in self.outputs:
                if 0 < _pipe_size(target) < CHUNK:  # a pipe of the caller's: grown, never shrunk
                    _grow(target)
                r, w = os.pipe()
                _grow(w)
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
        if self._pipes and self.log is not None:
            self._flush_log()  # what was written through the file object goes first
        for r, target in self._pipes:
            thread = threading.Thread(target=self._copy, args=(r, target), daemon=True)
            thread.start()
            self._threads.append(thread)
        self._pipes = []

    def _copy(self, r: int, target: int) -> None:
        try:
            gather = _pipe_size(r) >= CHUNK  # in a 64 KiB pipe, waiting would slow the command
            # no more than the output pipe holds: the write does not wait for the reader
            room = _pipe_size(target)
            buffer = memoryview(bytearray(room if 0 < room < CHUNK else CHUNK))
            small = len(buffer) // 4
            while True:
                size = os.readv(r, [buffer])
                if size == 0:
                    return
                chunk = buffer[:size]
                if target >= 0:
                    try:
                        _write_all(target, chunk, wait=True)
                    except OSError:  # our stdout is gone: the log still gets it all
                        target = -1
                self._to_log(chunk)
                if gather and size < small:
                    time.sleep(GATHER_S)
        finally:
            os.close(r)

    def _flush_log(self) -> None:
        assert self.log is not None
        with self._log_lock:
            try:
                self.log.flush()
            except OSError as err:
                self.log_error = err

    def _to_log(self, data: bytes | memoryview) -> None:
        if self.log is None or self.log_error is not None:
            return
        with self._log_lock:  # a chunk of stdout and one of stderr do not mix
            try:
                _write_all(self.log.fileno(), data)
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
        for r, _ in self._pipes:  # never started: nothing to copy
            os.close(r)
        self._pipes = []
        if not self._files:
            return None, None
        if self.log is not None:
            self._flush_log()
        texts = []
        for f in self._files:
            f.seek(0)
            data = f.read()
            f.close()
            self._to_log(data)
            texts.append(data.decode("utf-8", "replace"))
        self._files = []
        return texts[0], texts[1]


def _write_all(fd: int, data: bytes | memoryview, *, wait: bool = False) -> None:
    """Write all of ``data``; with ``wait``, wait out a full non-blocking ``fd``."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            if not wait:
                raise
            _wait_writable(fd)
            continue
        view = view[written:]


def _wait_writable(fd: int) -> None:
    select.select([], [fd], [])


def _grow(fd: int) -> None:
    """Grow the pipe to CHUNK where the kernel allows it (Linux); where it does
    not, the copy works as well, only without gathering."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is not None:
        try:
            fcntl.fcntl(fd, setsize, CHUNK)
        except OSError:  # over the user's pipe quota, or a lower pipe-max-size
            pass


def _pipe_size(fd: int) -> int:
    getsize = getattr(fcntl, "F_GETPIPE_SZ", None)
    if getsize is None:
        return 0
    try:
        return fcntl.fcntl(fd, getsize)
    except OSError:
        return 0
