"""Whose memory limit stopped a run, where the kernel enforces a limit above the
run's sandbox: a cgroup v1 limited by someone else with seqbox inside it, an
enclosing run's cgroup, and a nested run held to its enclosing run's limit.

The poll backend makes no cgroup: a limit above it is the kernel's to enforce,
and the run must still be status ``memory`` with a line naming the limit (the
container case, on cgroup v2, is in tests/backends/test_cgroup2_container.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from seqbox.backends.base import Limits, Usage
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.cgroup.enclosing import (
    CGROUP,
    CONTAINER,
    ENCLOSING_RUN,
    MACHINE,
    RUN,
    LimitHit,
    V1TreeOoms,
    V2TreeOoms,
)
from seqbox.backends.cgroup.v1 import Cgroup1Backend, Cgroup1Sandbox
from seqbox.backends.poll.backend import PollSandbox
from seqbox.backends.poll.proctree import LinuxProcTree
from tests.capabilities import needs
from tests.conftest import Tracker
from tests.helpers import MIB, PROG, Completed, SeqboxRunner, prog, slack

READERS = [
    pytest.param({}, id="proc", marks=needs("poll")),
    pytest.param({"SEQBOX_POLL_READER": "psutil"}, id="psutil", marks=needs("poll-psutil")),
]
LIMIT = 150 * MIB
#: seqbox is told to use much more than the cgroup above it allows
ASKED = ("--mem", "1G")


def _join(path: str) -> Callable[[], None]:
    def move() -> None:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    return move


def _run_in(sbx: SeqboxRunner, cgroup: str, *args: str, env: dict[str, str]) -> Completed:
    """``seqbox run --backend poll ARGS`` started inside ``cgroup`` (v1 memory)."""
    start = time.monotonic()
    proc = sbx.start(*args, backend="poll", env=env, preexec_fn=_join(cgroup))
    try:
        out, err = proc.communicate(timeout=slack(60))
    except subprocess.TimeoutExpired:
        sbx.kill(proc)
        out, err = proc.communicate()
        pytest.fail(f"seqbox did not return: {err[-2000:]!r}")
    return Completed(proc.args, proc.returncode, out, err, time.monotonic() - start)  # type: ignore[arg-type]


def _memory_mount() -> str:
    return next(c.mount.path for c in cgroupfs.own_cgroups() if c.key == "memory")


def _remove(path: str) -> None:
    for _ in range(500):
        for pid in cgroupfs.tree_pids(path):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    raise AssertionError(f"cannot remove {path}")


@pytest.fixture(params=[False, True], ids=["memory", "memory+swap"])
def foreign_cgroup(request: pytest.FixtureRequest, token: str) -> Iterator[str]:
    """A cgroup v1 memory cgroup that is not seqbox's (a CI job's, say), at the
    top of the hierarchy, limited to 150 MiB (its memory+swap too, for the
    second variant: the kernel counts no failures at that limit)."""
    path = os.path.join(_memory_mount(), f"sbxtest-{token[:12]}")
    os.mkdir(path)
    try:
        with open(os.path.join(path, "memory.limit_in_bytes"), "w") as f:
            f.write(str(LIMIT))
        memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
        if request.param:
            if not os.path.exists(memsw):
                pytest.skip("no swap accounting")
            with open(memsw, "w") as f:
                f.write(str(LIMIT))
        yield path
    finally:
        _remove(path)


def _killed_lines(res: Completed) -> list[str]:
    return [line for line in res.seqbox_lines() if "killed" in line]


@needs("cgroup1", "root")
@pytest.mark.parametrize("reader", READERS)
def test_a_polled_run_in_a_limited_cgroup_is_a_memory_kill_that_names_it(
    sbx: SeqboxRunner, foreign_cgroup: str, reader: dict[str, str]
) -> None:
    """Before: status ``signal``, exit 137, not a word."""
    res = _run_in(sbx, foreign_cgroup, "--json", *ASKED, "--", *prog("hog", "--chunk", "16"), env=reader)
    assert res.returncode == 137, res
    doc = res.json()
    assert (doc["backend"], doc["status"], doc["exit_code"]) == ("poll", "memory", 137), res
    lines = _killed_lines(res)
    assert len(lines) == 1, res
    assert lines[0].startswith(
        f"seqbox: killed: the memory limit 150.0 MiB of cgroup {foreign_cgroup} (above seqbox) was reached "
        "(this run's peak "
    ), res


@needs("cgroup1", "root")
def test_a_sigkill_from_elsewhere_is_still_a_signal(sbx: SeqboxRunner, foreign_cgroup: str) -> None:
    """The counters moved by no OOM kill: a SIGKILL is a signal, said by no line."""
    res = _run_in(sbx, foreign_cgroup, "--json", "--", "sh", "-c", "kill -9 $$", env={})
    assert res.returncode == 137, res
    assert res.json()["status"] == "signal", res
    assert _killed_lines(res) == [], res


@needs("cgroup1", "root")
@pytest.mark.parametrize("reader", READERS)
def test_a_polled_run_inside_an_enclosing_runs_cgroup_names_that_run(
    sbx: SeqboxRunner, token: str, reader: dict[str, str]
) -> None:
    """A polled run inside a cgroup1 run's cgroup (the enclosing run's
    supervisor is left out here: it would end the whole tree, this run's
    supervisor with it, before it could say anything)."""
    outer = Cgroup1Backend().create(Limits(mem=LIMIT), f"t{token[:10]}")
    try:
        assert isinstance(outer, Cgroup1Sandbox)
        res = _run_in(sbx, outer.memory, "--json", *ASKED, "--", *prog("hog", "--chunk", "16"), env=reader)
    finally:
        outer.kill_all()
        outer.wait_empty()
        outer.close()
    assert res.returncode == 137, res
    assert res.json()["status"] == "memory", res
    lines = _killed_lines(res)
    assert len(lines) == 1, res
    expected = "seqbox: killed: the enclosing seqbox run's memory limit 150.0 MiB was reached"
    assert lines[0].startswith(expected), res


def test_a_nested_limit_lowered_to_the_enclosing_runs_says_so() -> None:
    assert not Limits(mem=100 * MIB).nested_in(200 * MIB, None).mem_from_enclosing
    assert not Limits(mem=200 * MIB).nested_in(200 * MIB, None).mem_from_enclosing  # asked for as much
    assert not Limits(mem=200 * MIB).nested_in(None, None).mem_from_enclosing
    for asked in (None, 1 << 30):
        nested = Limits(mem=asked).nested_in(200 * MIB, 50)
        assert (nested.mem, nested.mem_from_enclosing) == (200 * MIB, True)


def _hog(total_mib: int, procs: Tracker, join: str | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, PROG, "hog", "--chunk", "8", "--total", str(total_mib), "--hold", "30"]
    proc = subprocess.Popen(argv, preexec_fn=None if join is None else _join(join))  # noqa: PLW1509
    procs.track(proc.pid)
    return proc


@needs("poll")
def test_poll_a_kill_at_the_enclosing_runs_limit_names_that_run(procs: Tracker) -> None:
    """A nested run asked for 1 GiB and is held to its enclosing run's 64 MiB:
    a kill there is the enclosing run's limit, not "memory limit 64 MiB" of a
    run that asked for 1 GiB (before: no word of whose)."""

    limits = Limits(mem=1 << 30).nested_in(64 * MIB, None)
    sandbox = PollSandbox(limits, LinuxProcTree())
    hog = _hog(200, procs)
    try:
        deadline = time.monotonic() + slack(30)
        while not sandbox.memory_exceeded(sandbox.sample()):
            assert hog.poll() is None, "the hog ended on its own"
            assert time.monotonic() < deadline, "the hog was not stopped"
            time.sleep(sandbox.next_sample_in())
        sandbox.kill_all()
        hog.wait(timeout=slack(10))
        hit = sandbox.which_limit()
        assert isinstance(hit, LimitHit)
        assert (hit.kind, hit.limit) == (ENCLOSING_RUN, 64 * MIB)
        assert hit.message(sandbox.peak_mem()).startswith(
            "killed: the enclosing seqbox run's memory limit 64.0 MiB was reached"
        )
    finally:
        sandbox.close()


@needs("poll")
def test_poll_a_kill_at_its_own_limit_is_its_own() -> None:

    sandbox = PollSandbox(Limits(mem=64 * MIB), LinuxProcTree())
    try:
        assert sandbox.which_limit() is None  # nothing was killed

        assert sandbox.memory_exceeded(Usage(65 * MIB, 1))
        hit = sandbox.which_limit()
        assert hit is not None
        assert (hit.kind, hit.limit) == (RUN, 64 * MIB)
    finally:
        sandbox.close()


@needs("cgroup1", "root")
def test_cgroup1_a_kill_at_the_enclosing_runs_limit_names_that_run(procs: Tracker, token: str) -> None:
    sandbox = Cgroup1Backend().create(Limits(mem=1 << 30).nested_in(64 * MIB, None), f"t{token[:10]}")
    try:
        assert isinstance(sandbox, Cgroup1Sandbox)
        hog = _hog(200, procs, join=sandbox.memory)
        hog.wait(timeout=slack(30))
        assert hog.returncode == -9
        assert sandbox.memory_exceeded(None)
        hit = sandbox.which_limit()
        assert hit is not None
        assert (hit.kind, hit.limit) == (ENCLOSING_RUN, 64 * MIB)
    finally:
        sandbox.kill_all()
        sandbox.wait_empty()
        sandbox.close()


# -- the counters' logic, on canned cgroup files -----------------------------------------


def _files(path: Path, **files: str) -> str:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name.replace("__", ".")).write_text(text)
    return str(path)


def _v1_level(path: Path, limit: int | None, peak: int = 0, failcnt: int = 0, oom_kill: int = 0) -> str:
    unlimited = str((1 << 63) - 4096)
    return _files(
        path,
        memory__limit_in_bytes=str(limit) if limit is not None else unlimited,
        memory__memsw__limit_in_bytes=str(limit) if limit is not None else unlimited,
        memory__max_usage_in_bytes=str(peak),
        memory__failcnt=str(failcnt),
        memory__oom_control=f"oom_kill_disable 0\nunder_oom 0\noom_kill {oom_kill}\n",
    )


def test_v1_the_nearest_limit_reached_during_the_run(tmp_path: Path) -> None:
    top = _files(tmp_path, cgroup__sane_behavior="0")
    _v1_level(tmp_path, None)
    job = _v1_level(tmp_path / "job", 300 * MIB, peak=10 * MIB)
    outer = _v1_level(tmp_path / "job" / "seqbox-outer", 200 * MIB, peak=20 * MIB)
    own = _v1_level(tmp_path / "job" / "seqbox-outer" / "me", None)
    ooms = V1TreeOoms(own, top, 0)
    assert not ooms.killed()
    _v1_level(Path(own), None, oom_kill=1)
    assert ooms.killed()
    assert ooms.which().kind == MACHINE  # no limit was reached
    _v1_level(Path(job), 300 * MIB, peak=300 * MIB)
    assert (ooms.which().kind, ooms.which().path) == (CGROUP, job)
    _v1_level(Path(outer), 200 * MIB, peak=20 * MIB, failcnt=3)  # refused at its memory limit
    assert (ooms.which().kind, ooms.which().limit) == (ENCLOSING_RUN, 200 * MIB)


def test_v1_a_peak_reached_before_the_run_is_the_last_resort(tmp_path: Path) -> None:
    top = _files(tmp_path, cgroup__sane_behavior="0")
    _v1_level(tmp_path, None)
    old = _v1_level(tmp_path / "old", 100 * MIB, peak=100 * MIB)  # reached long ago
    fresh = _v1_level(tmp_path / "old" / "fresh", 400 * MIB, peak=MIB)
    ooms = V1TreeOoms(fresh, top, 0)
    assert ooms.which().path == old  # rather than "the machine ran out of memory"
    _v1_level(Path(fresh), 400 * MIB, peak=400 * MIB)
    assert ooms.which().path == fresh


def test_v1_the_top_of_a_containers_hierarchy_is_the_container(tmp_path: Path) -> None:
    top = _v1_level(tmp_path, 256 * MIB)  # not the machine's root: no cgroup.sane_behavior
    ooms = V1TreeOoms(top, top, 0)
    _v1_level(tmp_path, 256 * MIB, peak=256 * MIB)
    assert (ooms.which().kind, ooms.which().limit) == (CONTAINER, 256 * MIB)


def _v2_level(path: Path, oom: int = 0, oom_kill: int = 0, limit: str = "max") -> str:
    return _files(
        path,
        cgroup__type="domain",
        memory__max=limit,
        memory__events=f"low 0\nhigh 0\nmax 0\noom {oom}\noom_kill {oom_kill}\n",
        memory__events__local=f"low 0\nhigh 0\nmax 0\noom {oom}\noom_kill {oom_kill}\n",
    )


def test_v2_the_containers_limit(tmp_path: Path) -> None:
    pod = _v2_level(tmp_path, limit=str(256 * MIB))  # the container's cgroup, seen as the top
    ooms = V2TreeOoms(pod, pod, 0)
    assert not ooms.killed()
    _v2_level(tmp_path, oom_kill=1, limit=str(256 * MIB))
    assert ooms.killed()
    assert ooms.which().kind == MACHINE
    _v2_level(tmp_path, oom=1, oom_kill=1, limit=str(256 * MIB))
    assert (ooms.which().kind, ooms.which().limit) == (CONTAINER, 256 * MIB)
