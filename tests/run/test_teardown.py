"""The final kill applies to the whole tree: nothing the command started outlives
it, and seqbox interrupted tears the whole tree down first."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.capabilities import needs
from tests.conftest import Tracker
from tests.helpers import (
    SeqboxRunner,
    alive,
    proc_state,
    prog,
    read_pids,
    slack,
    token_pids,
    wait_dead,
)

FAMILY = ("background", "ignorer", "daemon", "main")

pytestmark = pytest.mark.poll_reader  # finding and killing the whole tree: both ways of reading it


@pytest.mark.parametrize("code", [0, 5])
def test_nothing_outlives_the_main_process(
    sbx: SeqboxRunner, backend: str, tmp_path: Path, code: int
) -> None:
    """A background child, a SIGTERM-ignoring child and a double-forked setsid
    daemon: all gone when seqbox returns, and seqbox does not wait for them."""
    pidfile = tmp_path / "family"
    res = sbx.run("--", *prog("family", "--pids", pidfile, "--exit", code), backend=backend)
    assert res.returncode == code, res
    pids = read_pids(pidfile, timeout=1, count=4)
    assert set(pids) == set(FAMILY)
    assert alive(pids.values()) == [], f"survivors: {alive(pids.values())} of {pids}"
    assert token_pids(sbx.token) == []
    assert res.duration < slack(10), res


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=needs("sigint")), signal.SIGTERM])
def test_seqbox_interrupted_tears_the_tree_down(
    sbx: SeqboxRunner, backend: str, tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGINT/SIGTERM sent to seqbox itself (not from a terminal): 130/143, the
    whole tree is gone, and a child ignoring the signal costs at most --grace."""
    pidfile = tmp_path / "family"
    proc = sbx.start(
        "--grace",
        "1",
        "--",
        *prog("family", "--pids", pidfile, "--exit", "wait", "--main-ignores", sig.name[3:]),
        backend=backend,
    )
    pids = read_pids(pidfile, count=4)
    start = time.monotonic()
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=slack(10)) == 128 + sig
    took = time.monotonic() - start
    assert alive(pids.values()) == [], f"survivors: {alive(pids.values())} of {pids}"
    assert token_pids(sbx.token) == []
    assert took < slack(4), f"took {took:.1f}s with --grace 1"


@needs("sigint")
def test_second_interrupt_kills_at_once(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "family"
    proc = sbx.start(
        "--grace",
        "30",
        "--",
        *prog("family", "--pids", pidfile, "--exit", "wait", "--main-ignores", "INT"),
        backend=backend,
    )
    pids = read_pids(pidfile, count=4)
    start = time.monotonic()
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=slack(10)) == 130
    assert time.monotonic() - start < slack(5)
    assert wait_dead(pids.values(), 1) == []


def _first_child(pid: int, timeout: float = 10.0) -> None:
    """Return as soon as process ``pid`` has a child (busy-waiting: the moment matters)."""
    path = f"/proc/{pid}/task/{pid}/children"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                if f.read().strip():
                    return
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}"):
                return
        except OSError:
            return
    raise AssertionError(f"pid {pid} started no child within {timeout}s")


def test_interrupted_as_the_command_starts(sbx: SeqboxRunner, backend: str) -> None:
    """SIGTERM the moment seqbox has forked the command: 143 at once, nothing left
    (no process, no cgroup)."""
    proc = sbx.start("--grace", "1", "--", "sleep", "30", backend=backend)
    _first_child(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    try:
        code = proc.wait(timeout=slack(5))
    except subprocess.TimeoutExpired:
        pytest.fail("seqbox did not stop within 5 s of SIGTERM")
    assert code == 143
    assert wait_dead(token_pids(sbx.token), 1) == []
    _nothing_starts_late(sbx)


def _nothing_starts_late(sbx: SeqboxRunner, settle: float = 0.5) -> None:
    """Look again a while after seqbox is gone: a command let go at the last
    moment may exec only now, after the first look found nothing."""
    time.sleep(slack(settle))
    assert token_pids(sbx.token) == [], "a process of the run started after seqbox had returned"


def _held_in_syscall(pid: int, hold: float = 0.2, timeout: float = 20.0) -> bool:
    """Wait until ``pid`` sits in a tracing stop for ``hold`` seconds (strace is
    delaying the syscall it was told to delay): True; False if it exits first."""
    deadline = time.monotonic() + slack(timeout)
    since = None
    while time.monotonic() < deadline:
        state = proc_state(pid)
        if state is None or state == "Z":
            return False
        if state == "t":
            since = since or time.monotonic()
            if time.monotonic() - since >= hold:
                return True
        else:
            since = None
        time.sleep(0.005)
    raise AssertionError(f"pid {pid} neither exited nor stopped in the delayed syscall")


def _traced_seqbox(strace_pid: int) -> int:
    """The pid of the seqbox strace runs (not one of strace's own feature-test
    children): the child that has exec'ed this interpreter."""
    deadline = time.monotonic() + slack(20)
    while time.monotonic() < deadline:
        for child in psutil.Process(strace_pid).children():
            try:
                if child.cmdline()[:1] == [sys.executable]:
                    return child.pid
            except (psutil.Error, IndexError):
                continue
        time.sleep(0.002)
    raise AssertionError("strace did not start seqbox")


def _run_held_at(
    sbx: SeqboxRunner, procs: Tracker, marker: Path, nth: int, sig: signal.Signals
) -> tuple[bool, int]:
    """Run ``seqbox run -- touch MARKER`` with its ``nth`` open of
    /proc/self/mountinfo held 1 s by strace; send ``sig`` while it is held.
    Returns (whether it got there, exit status)."""
    strace = [
        "strace", "-f", "-o", "/dev/null", "-e", "trace=openat",
        "-e", f"inject=openat:delay_exit=1000000:when={nth}", "-P", "/proc/self/mountinfo",
    ]  # fmt: skip
    seqbox = [sys.executable, "-m", "seqbox", "run", "--grace", "1", "--"]
    tracer = subprocess.Popen(
        [*strace, *seqbox, "touch", str(marker)],
        cwd=sbx.project, env=sbx.env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    procs.track(tracer.pid)
    try:
        seqbox_pid = _traced_seqbox(tracer.pid)
        held = _held_in_syscall(seqbox_pid)
        if held:
            os.kill(seqbox_pid, sig)
        return held, tracer.wait(timeout=slack(30))
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait()


@needs("strace")
@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGINT, marks=needs("sigint")), signal.SIGTERM], ids=["INT", "TERM"]
)
def test_stop_signal_while_preparing_is_not_lost(
    sbx: SeqboxRunner, procs: Tracker, tmp_path: Path, sig: signal.Signals
) -> None:
    """A stop signal that arrives while seqbox gets ready (probing backends,
    reading its cgroups) must stop the run: the command never starts and seqbox
    exits 128+N. Each point where seqbox reads /proc/self/mountinfo is tried."""
    reached = 0
    for nth in range(1, 10):
        marker = tmp_path / f"ran-{nth}"
        held, code = _run_held_at(sbx, procs, marker, nth, sig)
        if not held:
            break  # seqbox reads mountinfo fewer than nth times
        reached += 1
        assert not marker.exists(), (
            f"SIG{sig.name[3:]} at read {nth} of /proc/self/mountinfo: the command ran anyway (exit {code})"
        )
        assert code in (128 + sig, -sig), f"read {nth}: exit {code}"
    assert reached >= 1, "seqbox never read /proc/self/mountinfo: this test needs a new hold point"


def _hold_the_lock(sbx: SeqboxRunner, tmp_path: Path, backend: str) -> subprocess.Popen[bytes]:
    ready = tmp_path / "holder-ready"
    holder = sbx.start("--", "sh", "-c", f"touch {ready}; exec sleep 30", backend=backend)
    deadline = time.monotonic() + 10
    while not ready.exists():
        assert time.monotonic() < deadline, "the first run never started"
        time.sleep(0.01)
    return holder


@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGINT, marks=needs("sigint")), signal.SIGTERM], ids=["INT", "TERM"]
)
def test_interrupted_while_waiting_for_the_lock(
    sbx: SeqboxRunner, backend: str, tmp_path: Path, sig: signal.Signals
) -> None:
    """Cleanup "also on Ctrl-C": a run interrupted in the queue leaves nothing
    (no process, no cgroup) and never starts its command."""
    holder = _hold_the_lock(sbx, tmp_path, backend)
    marker = tmp_path / "ran"
    waiter = sbx.start("--", "touch", str(marker), backend=backend)
    assert waiter.stderr is not None
    ready, _, _ = select.select([waiter.stderr], [], [], slack(10))
    assert ready, "the second run says nothing while it waits"
    assert waiter.stderr.readline().startswith(b"seqbox: waiting for lock")
    assert waiter.poll() is None, "the second run did not wait for the first"
    os.kill(waiter.pid, sig)
    assert waiter.wait(timeout=slack(5)) == 128 + sig
    assert not marker.exists()
    os.kill(holder.pid, signal.SIGTERM)
    assert holder.wait(timeout=slack(10)) == 143
    assert not marker.exists(), "the interrupted run's command ran late"


def test_wait_timeout(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    holder = _hold_the_lock(sbx, tmp_path, backend)
    marker = tmp_path / "ran"
    res = sbx.run("--wait-timeout", "0.3", "--", "touch", str(marker), backend=backend)
    assert res.returncode == 75, res
    assert not marker.exists()
    assert 0.3 <= res.duration < slack(5), res
    os.kill(holder.pid, signal.SIGTERM)
    assert holder.wait(timeout=slack(10)) == 143
    assert not marker.exists(), "the run that timed out ran its command late"


def test_interrupted_json_run_still_reports(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = sbx.start(
        "--json",
        "--retry",
        "3",
        "--grace",
        "1",
        "--",
        *prog("ignore-term", "--ready", ready),
        backend=backend,
    )
    wait_for = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < wait_for:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=slack(10))
    assert proc.returncode == 143
    doc = json.loads(out.decode().strip().splitlines()[-1])
    assert doc["exit_code"] == 143
    assert doc["attempts"] == 1  # an interrupted run is not retried
    assert doc["status"] == "signal"  # not "ok", though the command itself never failed
