"""The command's output reaches seqbox's stdout byte for byte, with and without
``--log``, whatever seqbox's stdout is (a pipe, a non-blocking pipe, a file, a
terminal, a pipe closed early), and the ``--log`` file holds exactly the
same bytes between its header and its exit line."""

from __future__ import annotations

import os
import pty
import subprocess
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
    master, slave = pty.openpty()
    tty.setraw(slave)
    received = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every slave end is closed
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        proc = sbx.start("--log", str(log), "--", "cat", str(small), stdout=slave, stderr=subprocess.PIPE)
        os.close(slave)
        _, err = proc.communicate(timeout=slack(120))
    finally:
        reader.join(timeout=slack(30))
        os.close(master)
    assert proc.returncode == 0, err
    assert bytes(received) == data
    assert _logged(log) == data
