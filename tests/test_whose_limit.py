"""Whose memory limit stopped a run, where the kernel enforces a limit above the
run's sandbox: a cgroup v1 limited by someone else with seqbox inside it, an
enclosing run's cgroup, and a nested run held to its enclosing run's limit.

The poll backend makes no cgroup: a limit above it is the kernel's to enforce,
and the run must still be status ``memory`` with a line naming the limit (the
container case, on cgroup v2, is in tests/test_cgroup2_container.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from seqbox.backends import cgroupfs
from seqbox.backends.base import Limits
from seqbox.backends.enclosing import ENCLOSING_RUN, RUN, LimitHit
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
    from seqbox.backends.cgroup1 import Cgroup1Backend, Cgroup1Sandbox

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
    from seqbox.backends.poll import PollSandbox
    from seqbox.backends.proctree import LinuxProcTree

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
    from seqbox.backends.poll import PollSandbox
    from seqbox.backends.proctree import LinuxProcTree

    sandbox = PollSandbox(Limits(mem=64 * MIB), LinuxProcTree())
    try:
        assert sandbox.which_limit() is None  # nothing was killed
        from seqbox.backends.base import Usage

        assert sandbox.memory_exceeded(Usage(65 * MIB, 1))
        hit = sandbox.which_limit()
        assert hit is not None
        assert (hit.kind, hit.limit) == (RUN, 64 * MIB)
    finally:
        sandbox.close()


@needs("cgroup1", "root")
def test_cgroup1_a_kill_at_the_enclosing_runs_limit_names_that_run(procs: Tracker, token: str) -> None:
    from seqbox.backends.cgroup1 import Cgroup1Backend, Cgroup1Sandbox

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
