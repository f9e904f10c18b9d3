"""What the cgroup backends put in the kernel, and that they take it away again
(the backends). Checked from inside the command: it reads its own cgroups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqbox.backends.base import Limits
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.cgroup.v1 import Cgroup1Backend, Cgroup1Layout, Cgroup1Sandbox
from seqbox.errors import StateError
from seqbox.project import project_key
from seqbox.queue import LockDir, holders
from seqbox.records import Entry
from tests.capabilities import needs
from tests.conftest import Tracker
from tests.helpers import MIB, PROG, SeqboxRunner, prog, seqbox_cgroups, slack, wait_dead, wait_for_file


def _seqbox_dirs(info: dict[str, dict[str, str]]) -> list[str]:
    return [path for path in info["dirs"].values() if "/seqbox-" in path]


def test_limits_are_in_the_kernel(sbx: SeqboxRunner, cgroup_backend: str) -> None:
    res = sbx.run(
        "--mem",
        "256M",
        "--mem-high",
        "128M",
        "--pids",
        "50",
        "--cpus",
        "0.5",
        "--",
        *prog("cgroupinfo"),
        backend=cgroup_backend,
    )
    assert res.returncode == 0, res
    info = json.loads(res.stdout)
    limits: dict[str, list[str]] = info["limits"]
    for name, (path, _) in limits.items():
        if name != "cpu.cfs_period_us":  # every limit is set on a cgroup of the run
            assert "/seqbox-" in path, (name, path)
    if cgroup_backend == "cgroup1":
        assert limits["memory.limit_in_bytes"][1] == str(256 * MIB)
        memsw = os.path.join(limits["memory.limit_in_bytes"][0], "memory.memsw.limit_in_bytes")
        if "memory.memsw.limit_in_bytes" in limits or os.path.exists(memsw):
            assert limits["memory.memsw.limit_in_bytes"][1] == str(256 * MIB)  # no escape into swap
        assert limits["pids.max"][1] == "50"
        assert limits["cpu.cfs_quota_us"][1] == "50000"
        assert limits["cpu.cfs_period_us"][1] == "100000"
    else:
        assert limits["memory.max"][1] == str(256 * MIB)
        assert limits["memory.high"][1] == str(128 * MIB)
        assert limits["memory.oom.group"][1] == "1"
        assert limits["pids.max"][1] == "50"
        assert limits["cpu.max"][1] == "50000 100000"
        if "memory.swap.max" in limits:
            assert limits["memory.swap.max"][1] == "0"
    dirs = _seqbox_dirs(info)
    assert dirs, info
    assert [path for path in dirs if os.path.exists(path)] == []


ENDINGS = {
    "ok": (["sh", "-c", "exit 0"], [], 0),
    "failed": (["sh", "-c", "exit 3"], [], 3),
    "memory": (prog("hog", "--chunk", "64"), ["--mem", "128M"], 137),
    "timeout": (["sleep", "30"], ["--timeout", "TIMEOUT"], 124),
    "signal": (prog("die", "--signal", "USR1"), [], 128 + signal.SIGUSR1),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_cgroups_removed_however_the_run_ends(
    sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path, ending: str
) -> None:
    command, options, code = ENDINGS[ending]
    # time enough for the command to record its cgroups before the timeout
    options = [f"{slack(1.0):.2f}" if word == "TIMEOUT" else word for word in options]
    info_file = tmp_path / "info.json"
    # the command records its cgroups first (via a shell), then ends its way
    script = f'"$@" > {info_file}; exec ' + " ".join(f"'{word}'" for word in command)
    res = sbx.run(*options, "--", "sh", "-c", script, "sh", *prog("cgroupinfo"), backend=cgroup_backend)
    assert res.returncode == code, res
    dirs = _seqbox_dirs(json.loads(info_file.read_text()))
    assert dirs
    assert [path for path in dirs if os.path.exists(path)] == []


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=needs("sigint")), signal.SIGTERM])
def test_cgroups_removed_when_seqbox_is_interrupted(
    sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path, sig: signal.Signals
) -> None:
    info_file = tmp_path / "info.json"
    proc = sbx.start(
        "--grace",
        "1",
        "--",
        "sh",
        "-c",
        f'"$@" > {info_file}.tmp; mv {info_file}.tmp {info_file}; sleep 30',
        "sh",
        *prog("cgroupinfo"),
        backend=cgroup_backend,
    )
    wait_for_file(info_file)
    dirs = _seqbox_dirs(json.loads(info_file.read_text()))
    assert dirs
    assert all(os.path.exists(path) for path in dirs)
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=slack(10)) == 128 + sig
    assert [path for path in dirs if os.path.exists(path)] == []


def test_next_run_cleans_up_after_a_killed_supervisor(
    sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path
) -> None:
    info_file, pid_file = tmp_path / "info.json", tmp_path / "pid"
    proc = sbx.start(
        "--",
        "sh",
        "-c",
        f'echo $$ > {pid_file}; "$@" > {info_file}.tmp; mv {info_file}.tmp {info_file}; exec sleep 60',
        "sh",
        *prog("cgroupinfo"),
        backend=cgroup_backend,
    )
    wait_for_file(info_file)
    sleeper = int(pid_file.read_text())
    dirs = _seqbox_dirs(json.loads(info_file.read_text()))
    # and its own leaf, where it moved itself (rule 3 of placement, as in a delegated scope)
    dirs += [path for path in seqbox_cgroups() if os.path.basename(path) == f"seqbox-sup-{proc.pid}"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=slack(10))
    assert all(os.path.exists(path) for path in dirs)  # left behind, as the spec says
    res = sbx.run("--", "true", backend=cgroup_backend)
    assert res.returncode == 0, res
    assert wait_dead([sleeper], 2) == [], "what was left in the cgroup is still running"
    assert [path for path in dirs if os.path.exists(path)] == []


@needs("cgroup1", "root")
def test_cgroup1_names_the_enclosing_limit_the_kernel_enforced(procs: Tracker) -> None:
    """A run inside another (its cgroup under the outer's): the outer holds
    30 MiB, the inner grows towards its own 100 MiB, and the outer's 100 MiB
    stops it. The inner sandbox says the enclosing run's limit was reached."""

    hog = [sys.executable, PROG, "hog", "--chunk", "10", "--hold", "30"]
    outer = Cgroup1Backend().create(Limits(mem=100 << 20), "test-outer")
    started: list[subprocess.Popen[bytes]] = []
    inner = None
    try:
        assert isinstance(outer, Cgroup1Sandbox)
        mount = next(c.mount for c in cgroupfs.own_cgroups() if c.key == "memory")
        relative = "/" + os.path.relpath(outer.memory, mount.path)
        layout = Cgroup1Layout(cgroupfs.mounts(), {"memory": relative})
        inner = Cgroup1Sandbox(layout, Limits(mem=100 << 20), "t-in")
        for where, total in ((outer.memory, "30"), (inner.memory, "90")):
            join = f'echo $$ > "{where}/cgroup.procs"; exec "$@"'
            started.append(subprocess.Popen(["sh", "-c", join, "sh", *hog, "--total", total]))
            time.sleep(1.0)
        started[1].wait(timeout=30)
        assert started[1].returncode == -9
        hit = inner.which_limit()
        assert hit is not None
        assert (hit.kind, hit.limit, hit.path) == ("enclosing-run", 100 << 20, outer.memory)
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
        if inner is not None:
            inner.kill_all()
            inner.close()
        outer.kill_all()
        outer.close()


def test_a_holders_entry_names_its_sandbox_files(
    sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path
) -> None:
    """A holder's queue entry carries its sandbox's ``describe()``: the backend and
    its cgroups (the base class's part), and the two files ``seqbox status`` reads
    the tree's usage from, inside those cgroups."""
    gate = tmp_path / "gate"
    proc = sbx.start(
        "--", "sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.01; done', "sh", str(gate), backend=cgroup_backend
    )
    try:
        key = project_key(os.path.realpath(sbx.project))
        deadline = time.monotonic() + slack(20)
        entry = Entry()
        while "procs_file" not in entry:
            assert time.monotonic() < deadline, entry
            time.sleep(0.01)
            try:
                lockdir = LockDir(key, "default", create=False)
            except StateError:
                continue
            try:
                entry = next(iter(holders(lockdir)), Entry())
            finally:
                lockdir.close()
        assert entry.get("backend") == cgroup_backend
        cgroups = entry.get("cgroups") or []
        assert cgroups
        assert all("/seqbox-" in path for path in cgroups), cgroups
        for name in ("mem_file", "procs_file"):
            path = str(entry.get(name))
            assert any(path.startswith(cgroup + "/") for cgroup in cgroups), path
            assert os.path.isfile(path), path
    finally:
        gate.touch()
        proc.wait(timeout=slack(20))
    assert proc.returncode == 0
