"""The ``--log`` copy itself (seqbox.capture), run in this process against
real pipes, files and terminals: an output pipe is grown to hold a whole chunk
(or, where it cannot grow, no chunk is larger than it holds), and whatever the
output is, the output and the log hold every byte."""

from __future__ import annotations

import fcntl
import os
import pty
import threading
import tty
from collections.abc import Callable
from pathlib import Path

import pytest

from seqbox import capture as capture_module
from seqbox.capture import CHUNK, Capture

MIB = 1 << 20
#: stdout's bytes and stderr's never share a value: a log that holds both
#: interleaved splits back into each by the high bit
OUT_DATA = bytes(b & 0x7F for b in os.urandom(6 * MIB + 12345))
ERR_DATA = bytes(b | 0x80 for b in os.urandom(2 * MIB + 777))

Drain = Callable[[], bytes]


def _split(data: bytes) -> tuple[bytes, bytes]:
    return bytes(b for b in data if b < 0x80), bytes(b for b in data if b >= 0x80)


def _drained(fd: int) -> Drain:
    """Read ``fd`` to its end in a thread; the returned function joins it."""
    got = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(fd, MIB)
            except OSError:  # EIO: a terminal's last slave end closed
                return
            if not chunk:
                return
            got.extend(chunk)

    thread = threading.Thread(target=read, daemon=True)  # a failed test must not hang the run
    thread.start()

    def join() -> bytes:
        thread.join(timeout=60)
        assert not thread.is_alive()
        os.close(fd)
        return bytes(got)

    return join


class Output:
    """Where the copy writes: one descriptor for stdout and stderr alike,
    and what it received once the copy is over."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "output"
        self.before = b""
        self._drain: Drain | None = None
        if kind in ("pipe", "non-blocking pipe"):
            r, self.fd = os.pipe()
            if kind == "non-blocking pipe":
                os.set_blocking(self.fd, False)
            self._drain = _drained(r)
        elif kind == "file":
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        elif kind == "appended file":  # sh's >>: O_APPEND, which sendfile(2) refuses
            self.before = b"before\n"
            self.path.write_bytes(self.before)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        elif kind == "null":
            self.fd = os.open(os.devnull, os.O_WRONLY)
        elif kind == "terminal":
            master, self.fd = pty.openpty()
            tty.setraw(self.fd)  # no newline translation
            self._drain = _drained(master)
        else:
            raise AssertionError(kind)

    def received(self) -> bytes | None:
        os.close(self.fd)
        if self._drain is not None:
            return self._drain()
        if self.kind == "null":
            return None
        data = self.path.read_bytes()
        assert data.startswith(self.before)
        return data[len(self.before) :]


def copy_through(log: Path, out: int, err: int, writes: list[tuple[int, bytes]]) -> Capture:
    """Copy what a command writes (``(1 or 2, bytes)`` in order) through a
    Capture whose outputs are ``out`` and ``err``, with ``log`` as the log."""
    with log.open("ab") as file:
        capture = Capture(capture=False, log=file, outputs=(out, err))
        stdio = capture.stdio()
        assert stdio.stdout is not None
        assert stdio.stderr is not None
        child = {1: os.dup(stdio.stdout), 2: os.dup(stdio.stderr)}  # the command's copies
        capture.started()
        try:
            for stream, data in writes:
                view = memoryview(data)
                while view:
                    view = view[os.write(child[stream], view) :]
        finally:
            for fd in child.values():
                os.close(fd)
        assert capture.finish(timeout=60) == (None, None)
    return capture


def _writes() -> list[tuple[int, bytes]]:
    """stdout and stderr in alternating pieces of a few sizes."""
    writes, at_out, at_err = [], 0, 0
    sizes = [8192, 3 * MIB, 1, 65536, 5 * MIB]
    i = 0
    while at_out < len(OUT_DATA) or at_err < len(ERR_DATA):
        size = sizes[i % len(sizes)]
        writes.append((1, OUT_DATA[at_out : at_out + size]))
        writes.append((2, ERR_DATA[at_err : at_err + size // 3 + 1]))
        at_out += size
        at_err += size // 3 + 1
        i += 1
    return [(stream, data) for stream, data in writes if data]


KINDS = ["pipe", "non-blocking pipe", "file", "appended file", "null", "terminal"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_byte_reaches_the_output_and_the_log(tmp_path: Path, kind: str) -> None:
    output = Output(kind, tmp_path)
    log = tmp_path / "out.log"
    log.write_bytes(b"=== header\n")
    capture = copy_through(log, output.fd, output.fd, _writes())
    assert capture.log_error is None
    logged = log.read_bytes()
    assert logged.startswith(b"=== header\n")
    assert _split(logged[len(b"=== header\n") :]) == (OUT_DATA, ERR_DATA)
    received = output.received()
    if received is not None:
        assert len(received) == len(OUT_DATA) + len(ERR_DATA)
        assert _split(received) == (OUT_DATA, ERR_DATA)


def _pipe_size(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


@pytest.mark.parametrize("kind", ["pipe", "non-blocking pipe"])
def test_an_output_pipe_is_grown_to_hold_a_chunk(tmp_path: Path, kind: str) -> None:
    """A chunk then goes into the pipe in one write that does not wait for
    the reader, who drains it while the log is written (in a 64 KiB pipe the
    two took turns)."""
    output = Output(kind, tmp_path)
    assert _pipe_size(output.fd) < CHUNK
    copy_through(tmp_path / "out.log", output.fd, output.fd, _writes())
    assert _pipe_size(output.fd) == CHUNK
    received = output.received()
    assert received is not None
    assert _split(received) == (OUT_DATA, ERR_DATA)


def test_a_larger_output_pipe_is_not_shrunk(tmp_path: Path) -> None:
    output = Output("pipe", tmp_path)
    try:
        fcntl.fcntl(output.fd, fcntl.F_SETPIPE_SZ, 4 * CHUNK)
    except PermissionError:  # beyond pipe-max-size (1 MiB) only with CAP_SYS_RESOURCE
        output.received()
        pytest.skip("no pipe larger than pipe-max-size without CAP_SYS_RESOURCE")
    copy_through(tmp_path / "out.log", output.fd, output.fd, _writes())
    assert _pipe_size(output.fd) == 4 * CHUNK
    received = output.received()
    assert received is not None
    assert _split(received) == (OUT_DATA, ERR_DATA)


def test_where_the_output_pipe_cannot_grow_no_chunk_is_larger_than_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the user's pipe quota the pipe stays as it is: a write of a
    chunk then still fits in it."""
    output = Output("pipe", tmp_path)
    room = _pipe_size(output.fd)
    real_grow = capture_module._grow
    monkeypatch.setattr(capture_module, "_grow", lambda fd: None if fd == output.fd else real_grow(fd))
    biggest = 0
    real_write = os.write

    def write(fd: int, data: bytes | memoryview) -> int:
        nonlocal biggest
        if fd == output.fd:
            biggest = max(biggest, len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    copy_through(tmp_path / "out.log", output.fd, output.fd, _writes())
    assert _pipe_size(output.fd) == room
    assert 0 < biggest <= room
    received = output.received()
    assert received is not None
    assert _split(received) == (OUT_DATA, ERR_DATA)


def test_a_log_that_is_a_pipe_gets_everything(tmp_path: Path) -> None:
    """A FIFO as the log (``--log /dev/stdout`` into a pipe, say)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(reader, True)
    keep_open = os.open(fifo, os.O_WRONLY)  # no end of file before the log is opened
    logged = _drained(reader)
    output = Output("pipe", tmp_path)
    try:
        copy_through(fifo, output.fd, output.fd, _writes())
    finally:
        os.close(keep_open)
    assert _split(logged()) == (OUT_DATA, ERR_DATA)
    received = output.received()
    assert received is not None
    assert _split(received) == (OUT_DATA, ERR_DATA)


def test_another_writer_of_the_log_is_not_overwritten(tmp_path: Path) -> None:
    """The log is appended to (O_APPEND): another process appending to the
    same file meanwhile keeps all of its bytes, and the output gets ours."""
    log = tmp_path / "out.log"
    other = b"\x80" * (4 * MIB)
    stop = threading.Event()

    def append() -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            for i in range(0, len(other), 4096):
                os.write(fd, other[i : i + 4096])
        finally:
            os.close(fd)
            stop.set()

    log.touch()
    writer = threading.Thread(target=append)
    output = Output("pipe", tmp_path)
    writer.start()
    copy_through(log, output.fd, output.fd, [(1, OUT_DATA)])
    writer.join(timeout=60)
    assert stop.is_set()
    assert _split(log.read_bytes()) == (OUT_DATA, other)
    assert output.received() == OUT_DATA


def test_an_output_gone_early_leaves_the_whole_log(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.close(r)
    log = tmp_path / "out.log"
    copy_through(log, w, w, _writes())
    os.close(w)
    assert _split(log.read_bytes()) == (OUT_DATA, ERR_DATA)
