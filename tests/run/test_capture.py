"""The command's output reaches seqbox's stdout byte for byte, with and without
``--log``, whatever seqbox's stdout is (a pipe, a non-blocking pipe, a file, a
terminal, a pipe closed early), and the ``--log`` file holds exactly the
same bytes between its header and its exit line."""

from __future__ import annotations

import fcntl
import os
import pty
import subprocess
import sys
import threading
import tty
from pathlib import Path

import pytest

from tests.helpers import SeqboxRunner, slack

MIB = 1 << 20


@pytest.fixture(scope="module")
def random_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """50 MiB of random bytes (every byte value, no line structure)."""
    data = os.urandom(50 * MIB)
    path = tmp_path_factory.mktemp("capture") / "random.bin"
    path.write_bytes(data)
    return path, data


class RawTerminal:
    """A terminal in raw mode (no newline translation) for seqbox's output: its
    slave end ``slave``, and ``received``, what a thread reads from its master
    end until every slave end is closed (call :meth:`close_slave` once seqbox
    has it)."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.received = bytearray()
        self._slave_open = True
        self._reader = threading.Thread(target=self._drain)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, MIB)
            except OSError:  # EIO: every slave end is closed
                return
            if not chunk:
                return
            self.received.extend(chunk)

    def close_slave(self) -> None:
        if self._slave_open:
            os.close(self.slave)
            self._slave_open = False

    def __enter__(self) -> RawTerminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_slave()
        self._reader.join(timeout=slack(30))
        os.close(self.master)


def _logged(log: Path) -> bytes:
    """What the --log file holds between the try's header and its exit line."""
    text = log.read_bytes()
    header_end = text.index(b"\n") + 1
    assert text.startswith(b"=== seqbox try 1/1: "), text[:200]
    exit_at = text.rindex(b"=== seqbox exit: ")
    return text[header_end:exit_at]


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("with_log", [False, True], ids=["plain", "log"])
def test_large_binary_output_through_a_pipe(
    sbx: SeqboxRunner, tmp_path: Path, random_file: tuple[Path, bytes], stream: str, with_log: bool
) -> None:
    path, data = random_file
    log = tmp_path / "out.log"
    redirect = "" if stream == "stdout" else " >&2"
    args = ["--log", str(log)] if with_log else []
    res = sbx.run(*args, "--", "sh", "-c", f'cat "$1"{redirect}', "sh", str(path), timeout=120)
    assert res.returncode == 0, res.stderr_bytes[-2000:]
    got = res.stdout_bytes if stream == "stdout" else res.stderr_bytes
    assert len(got) == len(data)
    assert got == data
    if with_log:
        assert _logged(log) == data


def test_large_binary_output_into_a_file(
    sbx: SeqboxRunner, tmp_path: Path, random_file: tuple[Path, bytes]
) -> None:
    path, data = random_file
    log, out = tmp_path / "out.log", tmp_path / "stdout.bin"
    with out.open("wb") as f:
        proc = sbx.start("--log", str(log), "--", "cat", str(path), stdout=f.fileno())
        _, err = proc.communicate(timeout=slack(120))
    assert proc.returncode == 0, err
    assert out.read_bytes() == data
    assert _logged(log) == data


def test_output_into_a_non_blocking_pipe_loses_nothing(
    sbx: SeqboxRunner, tmp_path: Path, random_file: tuple[Path, bytes]
) -> None:
    """A stdout pipe someone else made non-blocking, read slower than it is
    written: seqbox waits for room instead of dropping what does not fit."""
    _, data = random_file
    data = data[: 8 * MIB]
    small = tmp_path / "small.bin"
    small.write_bytes(data)
    log = tmp_path / "out.log"
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        proc = sbx.start("--log", str(log), "--", "cat", str(small), stdout=w)
    finally:
        os.close(w)
    chunks = []
    with os.fdopen(r, "rb", buffering=0) as reader:
        while chunk := reader.read(4096):
            chunks.append(chunk)
    _, err = proc.communicate(timeout=slack(120))
    assert proc.returncode == 0, err
    assert b"".join(chunks) == data
    assert _logged(log) == data


def test_a_reader_gone_early_still_leaves_the_whole_log(
    sbx: SeqboxRunner, tmp_path: Path, random_file: tuple[Path, bytes]
) -> None:
    """``seqbox run --log F -- cmd | head -c 10``: the command is not cut short,
    its exit code is its own, and the log has all of its output."""
    path, data = random_file
    log = tmp_path / "out.log"
    proc = sbx.start("--log", str(log), "--", "sh", "-c", 'cat "$1"; exit 5', "sh", str(path))
    assert proc.stdout is not None
    assert proc.stdout.read(10) == data[:10]
    proc.stdout.close()
    proc.wait(timeout=slack(120))
    assert proc.returncode == 5
    assert _logged(log) == data


def test_output_to_a_terminal_with_log(
    sbx: SeqboxRunner, tmp_path: Path, random_file: tuple[Path, bytes]
) -> None:
    """A terminal in raw mode (no newline translation) gets the bytes as written."""
    _, data = random_file
    data = data[:MIB]
    small = tmp_path / "small.bin"
    small.write_bytes(data)
    log = tmp_path / "out.log"
    with RawTerminal() as terminal:
        proc = sbx.start(
            "--log", str(log), "--", "cat", str(small), stdout=terminal.slave, stderr=subprocess.PIPE
        )
        terminal.close_slave()
        _, err = proc.communicate(timeout=slack(120))
    received = terminal.received
    assert proc.returncode == 0, err
    assert bytes(received) == data
    assert _logged(log) == data


# -- --log whatever the output is, on each backend --------------------------------

#: where a caller's stdout and stderr can be
OUTPUTS = ["pipe", "file", "appended file", "null", "terminal"]


def _high_bit_split(data: bytes) -> tuple[bytes, bytes]:
    return bytes(b for b in data if b < 0x80), bytes(b for b in data if b >= 0x80)


@pytest.mark.parametrize("output", OUTPUTS)
def test_log_and_output_get_every_byte_whatever_the_output(
    sbx: SeqboxRunner, backend: str, tmp_path: Path, output: str
) -> None:
    """stdout and stderr written at once (their bytes never share a value,
    so the log splits back into each), into a pipe, a file, a file opened for
    appending (``>>``), /dev/null or a terminal: each output gets its own
    bytes, the log both."""
    out_data = bytes(b & 0x7F for b in os.urandom(8 * MIB + 1))
    err_data = bytes(b | 0x80 for b in os.urandom(2 * MIB + 3))
    out_path, err_path = tmp_path / "out.bin", tmp_path / "err.bin"
    out_path.write_bytes(out_data)
    err_path.write_bytes(err_data)
    log = tmp_path / "out.log"
    script = 'cat "$1" & cat "$2" >&2; wait'
    argv = ["--log", str(log), "--", "sh", "-c", script, "sh", str(out_path), str(err_path)]
    received: tuple[bytes, bytes] | None = None
    if output == "pipe":
        proc = sbx.start(*argv, backend=backend)
        out, err = proc.communicate(timeout=slack(120))
        received = (out, err)
    elif output in ("file", "appended file"):
        before = b"before\n" if output == "appended file" else b""
        files = [tmp_path / "stdout", tmp_path / "stderr"]
        for path in files:
            path.write_bytes(before)
        mode = "ab" if output == "appended file" else "wb"
        with files[0].open(mode) as out_file, files[1].open(mode) as err_file:
            proc = sbx.start(*argv, backend=backend, stdout=out_file.fileno(), stderr=err_file.fileno())
            proc.wait(timeout=slack(120))
        contents = [path.read_bytes() for path in files]
        assert all(content.startswith(before) for content in contents)
        received = (contents[0][len(before) :], contents[1][len(before) :])
    elif output == "null":
        proc = sbx.start(*argv, backend=backend, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc.wait(timeout=slack(120))
    else:  # one terminal for both, in raw mode (no newline translation)
        with RawTerminal() as terminal:
            proc = sbx.start(*argv, backend=backend, stdout=terminal.slave, stderr=terminal.slave)
            terminal.close_slave()
            proc.wait(timeout=slack(120))
        got = terminal.received
        received = _high_bit_split(bytes(got))
    assert proc.returncode == 0
    assert _high_bit_split(_logged(log)) == (out_data, err_data)
    if received is not None:
        assert received[0] == out_data
        assert received[1] == err_data


#: what --log grows the pipes of the copy to (seqbox/capture.py: three of
#: them, the two pipes and the copy's buffer, stay in a core's cache)
COPY_PIPE = 256 << 10


@pytest.mark.parametrize("with_log", [False, True], ids=["plain", "log"])
def test_a_stdout_pipe_is_grown_to_hold_a_chunk_with_log(
    sbx: SeqboxRunner, backend: str, with_log: bool
) -> None:
    """With --log, seqbox's stdout pipe is grown to 256 KiB, so that a chunk
    of the copy goes in without waiting for the reader, who drains it while
    seqbox writes the log (in a 64 KiB pipe the two took turns; see
    seqbox/capture.py). Without --log, the command writes to it itself and
    seqbox leaves it alone."""
    r, w = os.pipe()
    before = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
    assert before < COPY_PIPE
    args = ["--log", "out.log"] if with_log else []
    try:
        proc = sbx.start(*args, "--", "head", "-c", str(3 * MIB), "/dev/zero", backend=backend, stdout=w)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as reader:
        data = reader.read()
        proc.wait(timeout=slack(60))
        assert fcntl.fcntl(reader.fileno(), fcntl.F_GETPIPE_SZ) == (COPY_PIPE if with_log else before)
    assert proc.returncode == 0
    assert data == bytes(3 * MIB)


def test_with_log_the_pipes_are_no_larger_than_a_cache_holds(sbx: SeqboxRunner, backend: str) -> None:
    """The command writes into a pipe of 256 KiB, and seqbox's stdout pipe
    is grown to that, not to 1 MiB: at 1 MiB each the two pipes and the copy's
    buffer overflowed a core's cache, and ``head -c 500M /dev/zero | reader``
    through --log was slower and bimodal (bench/log_overhead.py). A caller's
    pipe already larger is left as it is."""
    sizes = "import fcntl; print(fcntl.fcntl(1, fcntl.F_GETPIPE_SZ), fcntl.fcntl(2, fcntl.F_GETPIPE_SZ))"
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, MIB)
    try:
        proc = sbx.start("--log", "out.log", "--", sys.executable, "-c", sizes, backend=backend, stdout=w)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as reader:
        data = reader.read()
        proc.wait(timeout=slack(60))
        assert fcntl.fcntl(reader.fileno(), fcntl.F_GETPIPE_SZ) == MIB
    assert proc.returncode == 0
    assert data.split() == [str(COPY_PIPE).encode()] * 2


def test_a_run_stopped_by_its_timeout_still_copies_all_it_wrote(
    sbx: SeqboxRunner, backend: str, tmp_path: Path, random_file: tuple[Path, bytes]
) -> None:
    _, data = random_file
    data = data[: 8 * MIB]
    small = tmp_path / "small.bin"
    small.write_bytes(data)
    log = tmp_path / "out.log"
    res = sbx.run(
        "--log", str(log), "--timeout", "2s", "--", "sh", "-c", 'cat "$1"; exec sleep 60', "sh", str(small),
        backend=backend, timeout=60,
    )  # fmt: skip
    assert res.returncode == 124, res.stderr
    assert res.stdout_bytes == data
    assert _logged(log) == data


def test_the_log_keeps_stdout_and_stderr_in_the_order_written(
    sbx: SeqboxRunner, backend: str, tmp_path: Path
) -> None:
    pause = slack(0.3)
    script = f"for i in 1 2 3; do echo out$i; sleep {pause}; echo err$i >&2; sleep {pause}; done"
    log = tmp_path / "out.log"
    res = sbx.run("--log", str(log), "--", "sh", "-c", script, backend=backend, timeout=60)
    assert res.returncode == 0, res
    assert res.stdout == "out1\nout2\nout3\n"
    assert res.stderr == "err1\nerr2\nerr3\n"
    assert _logged(log) == b"out1\nerr1\nout2\nerr2\nout3\nerr3\n"
