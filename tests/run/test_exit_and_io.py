"""Exit status and stdio pass through seqbox untouched, on every backend."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest

from tests.capabilities import needs
from tests.helpers import SeqboxRunner, prog, slack, wait_dead


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_code_passthrough(sbx: SeqboxRunner, backend: str, code: int) -> None:
    res = sbx.run("--json", "--", "sh", "-c", f"exit {code}", backend=backend)
    assert res.returncode == code, res
    doc = res.json()
    assert doc["exit_code"] == code
    assert doc["status"] == ("ok" if code == 0 else "failed")
    assert doc["signal"] is None
    assert doc["backend"] == backend


def test_exit_137_by_itself_is_not_a_memory_kill(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--json", "--mem", "256M", "--", "sh", "-c", "exit 137", backend=backend)
    assert res.returncode == 137, res
    assert (res.json()["status"], res.json()["signal"]) == ("failed", None)
    assert res.seqbox_lines() == []


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP, signal.SIGKILL])
def test_death_by_signal(sbx: SeqboxRunner, backend: str, sig: signal.Signals) -> None:
    """128+N and status "signal"; a SIGKILL that was not a memory kill is not called one."""
    res = sbx.run("--json", "--", *prog("die", "--signal", sig.name[3:]), backend=backend)
    assert res.returncode == 128 + sig, res
    doc = res.json()
    assert doc["status"] == "signal"
    assert doc["signal"] == sig
    assert doc["exit_code"] == 128 + sig
    assert not any("memory" in line for line in res.seqbox_lines()), res


def test_stdout_and_stderr_pass_through(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--", "sh", "-c", "echo out; echo err >&2; printf 'no newline'", backend=backend)
    assert res.returncode == 0, res
    assert res.stdout == "out\nno newline"
    assert res.stderr == "err\n"  # nothing of seqbox's own on a normal run


def test_stdin_passes_through(sbx: SeqboxRunner, backend: str) -> None:
    data = os.urandom(256 * 1024) + b"\nlast line without newline"
    res = sbx.run("--", "cat", input=data, backend=backend)
    assert res.returncode == 0, res
    assert res.stdout_bytes == data


def test_json_captures_large_output(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run(
        "--json",
        "--",
        "sh",
        "-c",
        "head -c 3000000 /dev/zero | tr '\\0' a; head -c 1000000 /dev/zero | tr '\\0' b >&2",
        backend=backend,
    )
    assert res.returncode == 0, res
    doc = res.json()
    assert doc["stdout"] == "a" * 3_000_000
    assert doc["stderr"] == "b" * 1_000_000


def test_command_words_are_not_options(sbx: SeqboxRunner) -> None:
    """Options end at ``--`` or at the command's first word."""
    res = sbx.run("--", "echo", "--", "--mem", "x")
    assert (res.returncode, res.stdout) == (0, "-- --mem x\n"), res
    res = sbx.run("echo", "--mem", "1G", "--timeout")
    assert (res.returncode, res.stdout) == (0, "--mem 1G --timeout\n"), res


@pytest.mark.poll_reader
def test_procs_peak_counts_the_tree(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--json", "--", "sh", "-c", "sleep 0.6 & sleep 0.6 & sleep 0.6 & wait", backend=backend)
    assert res.returncode == 0, res
    assert res.json()["procs_peak"] >= 4  # type: ignore[operator]


def test_json_still_passes_stdin(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run(
        "--json",
        "--",
        "sh",
        "-c",
        "cat; printf '\\377\\376' >&2",
        input="through\n",
        backend=backend,
    )
    doc = res.json()
    assert doc["stdout"] == "through\n"
    assert doc["stderr"] == "\ufffd\ufffd"  # invalid UTF-8 replaced


def test_no_file_descriptors_leak_into_the_command(sbx: SeqboxRunner, backend: str) -> None:
    """The command gets the descriptors seqbox got, and none of seqbox's own
    (cgroup files, pipes, lock files)."""
    direct = subprocess.run(
        prog("fds"), stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=30
    )
    for options in ([], ["--mem", "256M", "--pids", "100", "--timeout", "1m"]):
        res = sbx.run(*options, "--", *prog("fds"), backend=backend)
        assert res.returncode == 0, res
        assert res.stdout == direct.stdout.decode(), res


def test_not_executable_is_126(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)
    res = sbx.run("--", str(script), backend=backend)
    assert res.returncode == 126, res
    assert res.stdout == ""
    assert str(script) in res.one_line()


def test_not_found_is_127(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--", "no-such-command-seqbox-test", "arg", backend=backend)
    assert res.returncode == 127, res
    assert "no-such-command-seqbox-test" in res.one_line()


def _read_line_with(fd: int, marker: bytes, timeout: float) -> bytes:
    """Read from ``fd`` until a whole line containing ``marker`` arrived."""
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out or b"\n" not in out[out.index(marker) :]:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        out += chunk
    return out


@needs("sigint")
def test_tty_stays_a_tty_and_ctrl_c_works(sbx: SeqboxRunner, backend: str) -> None:
    """Under a terminal the command sees a TTY on stdin, stdout and stderr, is in
    the terminal's foreground group, and Ctrl-C stops the whole run (130)."""
    master, slave = os.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        proc = sbx.start(
            "--grace",
            "1",
            "--",
            *prog("ttyinfo"),
            backend=backend,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        slave = -1
        out = _read_line_with(master, b"TTYINFO", slack(10))
        assert b"TTYINFO TTT fg=1" in out, out
        child = int(out.split(b"pid=")[1].split()[0])
        os.write(master, b"\x03")  # Ctrl-C: SIGINT to the terminal's foreground group
        assert proc.wait(timeout=slack(10)) == 130
        assert wait_dead([child], 2) == []
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)


def test_not_a_tty_without_a_terminal(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--", *prog("ttyinfo", "--hold", "0"), backend=backend)
    assert res.returncode == 0, res
    assert "TTYINFO --- fg=0" in res.stdout


def test_cwd_and_env(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    work = tmp_path / "work dir"
    work.mkdir()
    res = sbx.run(
        "--cwd",
        str(work),
        "--env",
        "SBX_A=1",
        "--env",
        "SBX_B=x=y",
        "--",
        "sh",
        "-c",
        'pwd; echo "$SBX_A $SBX_B"',
        backend=backend,
    )
    assert res.returncode == 0, res
    assert res.stdout.splitlines() == [str(work), "1 x=y"]
