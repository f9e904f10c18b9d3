"""The names of a run's cgroups and records, ``seqbox-<key>-<UTC time>-<pid>``:
what says a crashed run left one. The time is read by hand (the standard
library's parser costs every run 4-8 ms of imports); it must agree with it,
and a name whose time is no time is no run's name."""

from __future__ import annotations

import calendar
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from seqbox.backends import procinfo
from seqbox.backends.cgroup import leftovers
from tests.capabilities import needs
from tests.helpers import SeqboxRunner, self_cgroups, slack, wait_dead, write_file

STAMPS = [
    "19700101T000000",
    "20261206T101232",
    "20240229T235959",  # a leap day
    "20000229T120000",  # 2000 is a leap year
    "21001231T235960",  # a leap second (strptime takes 60 and 61)
    "20991231T235961",
    "99991231T235959",
    "16000301T000000",
]
NOT_TIMES = [
    "20261399T000000",  # month 13
    "20261300T000000",
    "20260230T000000",  # February 30
    "19000229T000000",  # 1900 was no leap year
    "20261130T240000",
    "20261130T006000",
    "20261130T000062",
    "2026113T0558300",
    "20261130X055830",
    "20261130T05583",
    "\uff12\uff10\uff12\uff161130T055830",  # digits, but not ASCII ones
]


@pytest.mark.parametrize("stamp", STAMPS)
def test_a_time_reads_as_the_standard_library_reads_it(stamp: str) -> None:
    assert leftovers.stamp_epoch(stamp) == calendar.timegm(time.strptime(stamp, leftovers.TIME_FORMAT))


def test_every_day_of_two_centuries_reads_alike() -> None:
    for day in range(0, 2 * 36525, 7):
        stamp = time.strftime(leftovers.TIME_FORMAT, time.gmtime(day * 86400 + 45296))
        assert leftovers.stamp_epoch(stamp) == day * 86400 + 45296, stamp


@pytest.mark.parametrize("text", NOT_TIMES)
def test_a_name_whose_time_is_no_time_is_no_runs_name(text: str) -> None:
    assert leftovers.stamp_epoch(text) is None
    assert leftovers.parse_name(f"seqbox-key-{text}-1") is None
    assert leftovers.parse_name(f"seqbox-key-{text}-1-2") is None


def test_a_run_started_now_is_its_owners() -> None:
    stamp = leftovers.run_stamp()
    assert leftovers.parse_name(f"seqbox-k-{stamp}-{os.getpid()}") == ("k", stamp, os.getpid())
    assert leftovers.owner_alive(os.getpid(), stamp)
    assert not leftovers.owner_alive(os.getpid(), "20000101T000000")  # before we started: pid reused


@needs("cgroup1", "root")
def test_clean_passes_over_a_cgroup_named_with_no_time(sbx: SeqboxRunner) -> None:
    """``seqbox clean`` ended with an internal error (ValueError from strptime)
    on a cgroup named like a run's, with a time that is no time and the pid of
    a live process (pid 1)."""
    with open("/proc/self/cgroup") as f:
        own = self_cgroups(f.read())["memory"]
    path = os.path.join("/sys/fs/cgroup/memory", own.lstrip("/"), "seqbox-x-20261399T000000-1")
    os.mkdir(path)
    try:
        res = sbx.cli("clean")
        assert res.returncode == 0, res
        assert "internal error" not in res.stderr
        assert os.path.isdir(path)  # not a run's: left alone
    finally:
        os.rmdir(path)


@needs("root")
def test_a_dead_supervisors_leaf_is_removed_by_the_next_run(sbx: SeqboxRunner) -> None:
    """A cgroup v2 supervisor moves itself into ``seqbox-sup-<pid>``; killed, it
    leaves that leaf. It names no project: the next run of any project removes
    it when nothing is in it (in a delegated scope systemd trimmed it only some
    time after the scope emptied, and the laptop lane saw it left once), and
    leaves one with a process in it to ``seqbox clean``."""
    with open("/proc/self/cgroup") as f:
        own = self_cgroups(f.read())[""]
    mounts = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")  # hybrid, or unified alone
    unified = next(m for m in mounts if os.path.exists(f"{m}/cgroup.procs"))
    dead = []
    for _ in range(2):
        gone = subprocess.Popen(["true"])
        gone.wait()
        dead.append(gone.pid)
    empty, busy = (os.path.join(unified, own.lstrip("/"), f"seqbox-sup-{pid}") for pid in dead)
    os.mkdir(empty)
    os.mkdir(busy)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        write_file(os.path.join(busy, "cgroup.procs"), str(sleeper.pid))
        res = sbx.run("--", "true")
        assert res.returncode == 0, res
        assert not os.path.exists(empty)  # nobody's: removed by a run
        assert os.path.isdir(busy)  # not this project's to kill
        assert sleeper.poll() is None
        res = sbx.cli("clean")
        assert res.returncode == 0, res
        assert not os.path.exists(busy)
        assert wait_dead([sleeper.pid], 5) == []
    finally:
        sleeper.kill()
        sleeper.wait()
        for path in (empty, busy):
            if os.path.isdir(path):
                os.rmdir(path)


def _free_pid() -> int:
    """A pid no process has here, below the last one handed out (so not handed
    out again until the counter wraps)."""
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    return next(pid for pid in range(last - 100, 300, -1) if not os.path.exists(f"/proc/{pid}"))


def _sleeps_inside(pid: int) -> dict[int, int]:
    """The ``sleep`` processes below ``pid``: {pid in their namespace: pid here}."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.name() == "sleep":
                found[procinfo.parse_nspid(Path(f"/proc/{child.pid}/status").read_text()) or 0] = child.pid
        except (psutil.Error, OSError):  # not exec'd yet, or gone
            continue
    return found


@needs("cgroup1", "root")
def test_clean_leaves_a_live_run_of_another_pid_namespace(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """A container's run, seen from the host, is named with the pid its seqbox
    has in the container's pid namespace: here that pid may be no process, and
    ``seqbox clean`` took the run for a crashed one and killed it. A stand-in:
    in a new pid namespace a "supervisor" gets a pid free here, and the run's
    cgroup (named with that pid) holds a "command" of the same namespace. Once
    the supervisor is gone, the run is a leftover like any other."""
    pid = _free_pid()
    pids_file = tmp_path / "pids"
    script = 'echo "$1" > /proc/sys/kernel/ns_last_pid; sleep 60 & echo $! > "$2"; sleep 60 & wait'
    box = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script, "sh", str(pid - 1), str(pids_file)]
    )
    with open("/proc/self/cgroup") as f:
        own = self_cgroups(f.read())["memory"]
    path = os.path.join("/sys/fs/cgroup/memory", own.lstrip("/"), f"seqbox-x-{leftovers.run_stamp()}-{pid}")
    try:
        deadline = time.monotonic() + slack(10)
        while True:  # the two sleeps, by their pid in the namespace
            inside = _sleeps_inside(box.pid)
            if len(inside) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert sorted(inside) == [pid, pid + 1], inside
        assert int(pids_file.read_text()) == pid
        supervisor, command = inside[pid], inside[pid + 1]
        os.mkdir(path)
        write_file(os.path.join(path, "cgroup.procs"), str(command))
        res = sbx.cli("clean")
        assert res.returncode == 0, res
        assert psutil.pid_exists(command), res  # a live run: its seqbox runs, in its namespace
        assert os.path.isdir(path)
        os.kill(supervisor, signal.SIGKILL)
        assert wait_dead([supervisor], 5) == []
        res = sbx.cli("clean")
        assert res.returncode == 0, res
        assert wait_dead([command], 5) == [], res  # now a crashed run's
        assert not os.path.exists(path)
    finally:
        box.kill()  # unshare: its namespace's init dies, and every process in it
        box.wait()
        if os.path.isdir(path):
            os.rmdir(path)


@pytest.mark.parametrize(
    ("status", "inner"),
    [
        ("Name:\tsleep\nNSpid:\t17454\n", 17454),  # in the reader's own namespace
        ("Name:\tsleep\nPid:\t20001\nNSpid:\t20001\t7\n", 7),  # a container's pid 7
        ("NSpid:\t20001\t300\t1\n", 1),  # two namespaces deep: the innermost
        ("Name:\tsleep\nPid:\t20001\n", None),  # a kernel without NSpid (before 4.1)
        ("NSpid:\n", None),
    ],
)
def test_a_process_pid_in_its_own_namespace(status: str, inner: int | None) -> None:
    assert procinfo.parse_nspid(status) == inner
