"""The poll backend's parts, one by one: the psutil reader (the macOS code path)
keeps orphans it saw and finds those it never saw by the run's marker; the
sampler looks sooner as the tree nears a threshold. The contract suite runs
the whole backend both ways (``poll`` and ``poll-psutil``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from seqbox.backends.base import Limits
from seqbox.backends.poll.backend import MIN_INTERVAL_S, RUN_ID_ENV, PollSandbox
from seqbox.backends.poll.proctree import ProcTree, PsutilProcTree, Reading
from tests.capabilities import needs
from tests.conftest import Tracker
from tests.helpers import MIB, SeqboxRunner, is_alive, prog, slack, wait_dead

#: a root that, on a line from stdin, forks an intermediate that forks a
#: grandchild (printing its pid), then waits for a second line before the
#: intermediate exits (with "at once": it exits at once, before any sample)
ROOT = r"""
import os, sys, time
sys.stdin.readline()
at_once = sys.argv[1] == "at-once"
pid = os.fork()
if pid == 0:
    grandchild = os.fork()
    if grandchild == 0:
        os.setsid()
        time.sleep(60)
        os._exit(0)
    print(grandchild, flush=True)
    if not at_once:
        sys.stdin.readline()
    os._exit(0)
os.waitpid(pid, 0)
print("intermediate gone", flush=True)
time.sleep(60)
"""


def _start_root(procs: Tracker, mode: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", ROOT, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    procs.track(proc.pid)
    return proc


def _say(root: subprocess.Popen[str], line: str) -> None:
    assert root.stdin is not None
    root.stdin.write(line + "\n")
    root.stdin.flush()


def _hear(root: subprocess.Popen[str]) -> str:
    assert root.stdout is not None
    return root.stdout.readline().strip()


def _finish(root: subprocess.Popen[str], procs: Tracker, grandchild: int) -> None:
    procs.track(grandchild)
    procs.kill_all()
    root.communicate()
    wait_dead([grandchild])


@needs("poll-psutil")
def test_an_orphan_seen_once_stays_a_member(procs: Tracker) -> None:
    root = _start_root(procs, "wait")
    tree = PsutilProcTree(root=root.pid)
    _say(root, "go")
    grandchild = int(_hear(root))
    try:
        assert grandchild in tree.members()  # seen while its parent lives
        _say(root, "exit")
        assert _hear(root) == "intermediate gone"

        assert psutil.Process(grandchild).ppid() != root.pid  # re-parented
        assert tree.members() == [grandchild]
        assert tree.signal(grandchild, 0)
        reading = tree.read(full=True)
        assert (reading.procs, reading.tasks) == (1, 1)
        assert reading.rss > 0
    finally:
        _finish(root, procs, grandchild)


@needs("poll-psutil")
@pytest.mark.parametrize("marked", [True, False])
def test_an_orphan_never_seen_is_found_by_the_run_marker(procs: Tracker, marked: bool) -> None:
    """The intermediate exits before the reader looks: only the run id in the
    grandchild's environment says it belongs to the tree."""
    run_id = "test-" + os.urandom(4).hex()
    root = _start_root(procs, "at-once", {RUN_ID_ENV: run_id})
    tree = PsutilProcTree(root=root.pid)
    if marked:
        tree.mark(RUN_ID_ENV, run_id, time.time() - 2.0)
    _say(root, "go")
    grandchild = int(_hear(root))
    try:
        assert _hear(root) == "intermediate gone"
        assert tree.members() == ([grandchild] if marked else [])
    finally:
        _finish(root, procs, grandchild)


@needs("poll-psutil")
def test_another_runs_marker_is_not_ours(procs: Tracker) -> None:
    root = _start_root(procs, "at-once", {RUN_ID_ENV: "another-run"})
    tree = PsutilProcTree(root=root.pid)
    tree.mark(RUN_ID_ENV, "this-run", time.time() - 2.0)
    _say(root, "go")
    grandchild = int(_hear(root))
    try:
        assert _hear(root) == "intermediate gone"
        assert tree.members() == []
        assert not tree.signal(grandchild, 0)  # never a member: never signalled
        assert is_alive(grandchild)
    finally:
        _finish(root, procs, grandchild)


@needs("poll")
def test_the_marker_is_in_the_commands_environment(sbx: SeqboxRunner) -> None:
    """What the reader looks for after a crash is what the run put in its
    command's environment: the run id of the summary."""
    show = f"import os; print(os.environ.get({RUN_ID_ENV!r}))"
    res = sbx.run("--json", "--", sys.executable, "-c", show, backend="poll")
    assert res.returncode == 0, res
    doc = res.json()
    assert doc["run_id"]
    assert str(doc["stdout"]).strip() == doc["run_id"]


# -- how soon the next sample comes ---------------------------------------------------


class CannedTree(ProcTree):
    """Readings given by the test, in order."""

    def __init__(self, *rss_mib: int) -> None:
        self.readings = [Reading(n * MIB, 1, 1, n * MIB) for n in rss_mib]

    def read(self, *, full: bool = False) -> Reading:
        return self.readings.pop(0)

    def pss(self) -> int | None:
        return None

    def members(self) -> list[int]:
        return []

    def signal(self, pid: int, sig: int) -> bool:
        return False

    def is_empty(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _intervals(limits: Limits, *rss_mib: int, every: float = 0.01) -> list[float]:
    """next_sample_in() after each canned reading, one every ``every`` s."""
    sandbox = PollSandbox(limits, CannedTree(*rss_mib))
    out = []
    clock = time.monotonic()
    for n in rss_mib:
        clock += every
        sandbox._plan(clock, n * MIB, n * MIB)
        out.append(sandbox.next_sample_in())
    return out


def test_a_steady_tree_is_sampled_every_poll_interval() -> None:
    assert _intervals(Limits(mem=256 * MIB), 100, 100, 100) == [0.1, 0.1, 0.1]


def test_a_growing_tree_is_sampled_before_it_could_cross_the_limit() -> None:
    """10 MiB per 10 ms = 1000 MiB/s: at 200 MiB the limit is 56 ms away."""
    intervals = _intervals(Limits(mem=256 * MIB), 190, 200, 210, 250)
    assert intervals[0] == 0.1  # no rate yet
    assert intervals[1] == pytest.approx(0.5 * 56 / 1000, rel=0.01)
    assert intervals[2] == pytest.approx(0.5 * 46 / 1000, rel=0.01)
    assert intervals[3] == MIN_INTERVAL_S  # 6 MiB away at 4000 MiB/s: as soon as allowed


def test_the_warning_threshold_is_approached_the_same_way() -> None:
    limits = Limits(mem=1024 * MIB, warn_at=0.5)
    near_warning = _intervals(limits, 490, 500)[1]
    assert near_warning == pytest.approx(0.5 * 12 / 1000, rel=0.01)
    past_warning = _intervals(limits, 520, 530)[1]  # the limit is next
    assert past_warning == pytest.approx(min(0.1, 0.5 * 494 / 1000), rel=0.01)


def test_growth_that_stops_is_forgotten() -> None:
    intervals = _intervals(Limits(mem=256 * MIB), 100, 200, *([200] * 20), every=0.05)
    assert intervals[1] < 0.1
    assert intervals[-1] == 0.1


def test_no_limit_no_hurry() -> None:
    assert _intervals(Limits(mem=None), 100, 500, 900) == [0.1, 0.1, 0.1]


@pytest.mark.parametrize(
    "reader",
    [
        pytest.param({}, id="proc", marks=needs("poll")),
        pytest.param({"SEQBOX_POLL_READER": "psutil"}, id="psutil", marks=needs("poll-psutil")),
    ],
)
def test_a_fast_allocator_is_stopped_near_the_limit(sbx: SeqboxRunner, reader: dict[str, str]) -> None:
    """The sampler tightens as the tree nears --mem: the peak seqbox measured
    stays within 10 % of the limit (at a fixed 0.1 s it was +31 %)."""
    res = sbx.run("--json", "--mem", "256M", "--", *prog("hog", "--chunk", "8"), backend="poll", env=reader)
    assert res.returncode == 137, res
    peak = res.json()["peak_mem_bytes"]
    assert isinstance(peak, int)
    assert 256 * MIB < peak <= 256 * MIB * (1 + 0.1 * slack(1)), res
