"""Where the command's stdout and stderr go.

* default: inherited untouched (a TTY stays a TTY, nothing is buffered);
* ``--json``: into anonymous temporary files (no pipe to drain, no deadlock),
  read back after the run;
* ``--log FILE``: through pipes, copied live to seqbox's own stdout/stderr and
  appended to FILE. The command then sees pipes, not a TTY: that is the price
  of a copy.

The copy is the cost of ``--log`` on a command that writes a lot, so it is
made cheap: where seqbox's own stdout (stderr) is a pipe and the kernel has
``tee(2)`` (Linux), the pipe's pages are handed on to it without passing
through seqbox and only the log's copy is read; otherwise one reused buffer
takes each chunk to both. The log is appended to through its own descriptor
(``O_APPEND``: another writer of the same file is not overwritten); splicing
the log's copy too would need a descriptor without ``O_APPEND``, and measured
no cheaper (see bench/log_overhead.py).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time

from seqbox.spawn import Stdio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

#: the most taken from a pipe at once (a pipe holds 64 KiB unless grown; growing
#: ours to 1 MiB measured no faster, and would let more of stdout wait behind a
#: line of stderr in the log)
CHUNK = 1 << 18


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
        if self._pipes and self.log is not None:
            self._flush_log()  # what was written through the file object goes first
        for r, target in self._pipes:
            thread = threading.Thread(target=self._copy, args=(r, target), daemon=True)
            thread.start()
            self._threads.append(thread)
        self._pipes = []

    def _copy(self, r: int, target: int) -> None:
        try:
            if _is_pipe(target) and (tee := _tee()) is not None:
                try:
                    self._copy_by_tee(tee, r, target, memoryview(bytearray(CHUNK)))
                    return
                except OSError as err:  # the plain copy goes on from the chunk tee failed on
                    if err.errno == errno.EPIPE:  # our stdout is gone: the log still gets it all
                        target = -1
            self._copy_by_buffer(r, target, memoryview(bytearray(CHUNK)))
        finally:
            os.close(r)

    def _copy_by_tee(
        self, tee: Callable[[int, int, int], int], r: int, target: int, buffer: memoryview
    ) -> None:
        """The kernel duplicates each chunk into ``target``; only the log's
        copy is read (an error of ``tee`` goes up with nothing lost: the
        chunk it failed on is still in the pipe)."""
        while True:
            try:
                size = tee(r, target, CHUNK)
            except BlockingIOError:  # a stdout someone else made non-blocking is full
                _wait_writable(target)
                continue
            if size == 0:
                return
            while size:  # the duplicated bytes are in the pipe: no read blocks here
                got = os.readv(r, [buffer[:size]])
                self._to_log(buffer[:got])
                size -= got

    def _copy_by_buffer(self, r: int, target: int, buffer: memoryview) -> None:
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
    import select

    select.select([], [fd], [])


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


_TEE: list[Callable[[int, int, int], int] | None] = []


def _tee() -> Callable[[int, int, int], int] | None:
    """``tee(2)`` through ctypes (Python does not wrap it), each call's errno
    checked; None where the C library has none."""
    if not _TEE:
        _TEE.append(_load_tee())
    return _TEE[0]


def _load_tee() -> Callable[[int, int, int], int] | None:
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).tee
    except (AttributeError, OSError):
        return None
    function.restype = ctypes.c_ssize_t
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)

    def tee(source: int, target: int, size: int) -> int:
        while True:
            result: int = function(source, target, size, 0)
            if result >= 0:
                return result
            number = ctypes.get_errno()
            if number != errno.EINTR:
                raise OSError(number, os.strerror(number))

    return tee
