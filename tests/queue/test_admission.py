# ruff: noqa: E501 - canned kernel text stays verbatim
"""Memory admission as pure functions: reservations, the auto budget, the
verdict for the head of the line; the memory facts (ceiling, available now,
pressure) from canned kernel files of cgroup v1 and v2 machines."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from seqbox import admission
from seqbox.admission import Holder, decide
from seqbox.backends import memory
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.errors import UsageError

if TYPE_CHECKING:
    from seqbox.records import Entry

GIB = 1 << 30
MIB = 1 << 20

MEMINFO = """\
MemTotal:       24684084 kB
MemFree:        23177136 kB
MemAvailable:   24250140 kB
Buffers:           12345 kB
HugePages_Total:       0
"""

PSI = """\
some avg10=12.50 avg60=3.00 avg300=0.50 total=73648
full avg10=1.00 avg60=0.00 avg300=0.00 total=58271
"""

# A CI job on a pure cgroup2 machine: the job's slice limits memory to 8 GiB.
V2_MOUNTINFO = """\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""
V2_SELF = "0::/system.slice/ci.slice/job-7.scope\n"
V2_FILES = {
    "/proc/meminfo": MEMINFO,
    "/proc/self/mountinfo": V2_MOUNTINFO,
    "/proc/self/cgroup": V2_SELF,
    "/proc/pressure/memory": PSI,
    "/sys/fs/cgroup/system.slice/ci.slice/job-7.scope/memory.max": "max\n",
    "/sys/fs/cgroup/system.slice/ci.slice/job-7.scope/memory.current": "1000\n",
    "/sys/fs/cgroup/system.slice/ci.slice/memory.max": f"{8 * GIB}\n",
    "/sys/fs/cgroup/system.slice/ci.slice/memory.current": f"{3 * GIB}\n",
    "/sys/fs/cgroup/system.slice/ci.slice/memory.stat": f"anon {2 * GIB}\nfile {GIB}\ninactive_file {GIB // 2}\n",
    "/sys/fs/cgroup/system.slice/memory.max": "max\n",
    "/sys/fs/cgroup/memory.stat": "anon 1\n",  # the root has no memory.max
}

# A docker container on cgroup v1 without a cgroup namespace: the memory
# controller's mount root is the container's own cgroup, limited to 4 GiB.
V1_MOUNTINFO = """\
473 387 0:143 / / rw,relatime master:181 - overlay overlay rw,lowerdir=/l
480 479 0:32 /docker/0123abcd /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:17 - cgroup cgroup rw,memory
481 479 0:36 /docker/0123abcd /sys/fs/cgroup/pids ro,nosuid,nodev,noexec,relatime master:18 - cgroup cgroup rw,pids
"""
V1_SELF = """\
12:pids:/docker/0123abcd
11:memory:/docker/0123abcd
0::/system.slice/containerd.service
"""
V1_FILES = {
    "/proc/meminfo": MEMINFO,
    "/proc/self/mountinfo": V1_MOUNTINFO,
    "/proc/self/cgroup": V1_SELF,
    "/sys/fs/cgroup/memory/memory.limit_in_bytes": f"{4 * GIB}\n",
    "/sys/fs/cgroup/memory/memory.usage_in_bytes": f"{GIB}\n",
    "/sys/fs/cgroup/memory/memory.stat": f"cache 5\ninactive_file 7\ntotal_inactive_file {256 * MIB}\n",
}

# This machine: hybrid, seqbox in a v1 memory cgroup with no limit of its own,
# a cgroup2 mount without the memory controller.
HYBRID_MOUNTINFO = """\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_SELF = "8:pids:/\n4:memory:/process_api/7012\n0::/\n"
HYBRID_FILES = {
    "/proc/meminfo": MEMINFO,
    "/proc/self/mountinfo": HYBRID_MOUNTINFO,
    "/proc/self/cgroup": HYBRID_SELF,
    "/sys/fs/cgroup/memory/process_api/7012/memory.limit_in_bytes": "9223372036854771712\n",
    "/sys/fs/cgroup/memory/process_api/7012/memory.usage_in_bytes": "174886912\n",
    "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes": "9223372036854771712\n",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
}


def state(files: dict[str, str]) -> memory.MemoryState:
    return memory.read_state(files.get)


# -- parsers ------------------------------------------------------------------------


def test_meminfo_in_bytes() -> None:
    info = memory.parse_meminfo(MEMINFO)
    assert info["MemTotal"] == 24684084 * 1024
    assert info["MemAvailable"] == 24250140 * 1024
    assert info["HugePages_Total"] == 0


def test_limits_of_both_versions() -> None:
    assert cgroupfs.parse_limit("max\n") is None
    assert cgroupfs.parse_limit("9223372036854771712\n") is None  # v1's "no limit"
    assert cgroupfs.parse_limit(f"{8 * GIB}\n") == 8 * GIB


def test_pressure_is_some_avg10() -> None:
    assert memory.parse_pressure(PSI) == 12.5
    assert memory.parse_pressure("full avg10=3.00 avg60=0 avg300=0 total=1\n") is None


def test_enclosing_dirs_walk_up_to_the_mount_root() -> None:
    dirs = memory.enclosing_dirs(V2_SELF, cgroupfs.parse_mountinfo(V2_MOUNTINFO))
    assert [path for path, _ in dirs] == [
        "/sys/fs/cgroup/system.slice/ci.slice/job-7.scope",
        "/sys/fs/cgroup/system.slice/ci.slice",
        "/sys/fs/cgroup/system.slice",
        "/sys/fs/cgroup",
    ]
    dirs = memory.enclosing_dirs(V1_SELF, cgroupfs.parse_mountinfo(V1_MOUNTINFO))
    assert dirs == [("/sys/fs/cgroup/memory", memory.V1_FILES)]


# -- the facts -------------------------------------------------------------------------


def test_v2_ceiling_is_the_enclosing_limit() -> None:
    facts = state(V2_FILES)
    assert facts.ceiling() == 8 * GIB
    # 8 GiB less the working set (3 GiB used, half a GiB of it inactive cache)
    assert facts.available_now() == 8 * GIB - (3 * GIB - GIB // 2)
    assert facts.pressure == 12.5


def test_v1_container_ceiling_and_available() -> None:
    facts = state(V1_FILES)
    assert facts.ceiling() == 4 * GIB
    assert facts.available_now() == 4 * GIB - (GIB - 256 * MIB)
    assert facts.pressure is None  # no PSI file: no pressure check


def test_no_enclosing_limit_means_the_machine() -> None:
    facts = state(HYBRID_FILES)
    assert facts.enclosing == []
    assert facts.ceiling() == 24684084 * 1024
    assert facts.available_now() == 24250140 * 1024


def test_available_is_the_smaller_of_machine_and_cgroup() -> None:
    files = dict(V2_FILES, **{"/proc/meminfo": "MemTotal: 16777216 kB\nMemAvailable: 1048576 kB\n"})
    assert state(files).available_now() == GIB


def test_this_machine_reads_without_error() -> None:
    facts = memory.read_state()
    assert 0 < facts.available_now() <= facts.ceiling() <= facts.total


# -- admission arithmetic ----------------------------------------------------------------


def test_reservation_is_mem_or_the_whole_budget() -> None:
    assert admission.reservation(2 * GIB, 8 * GIB) == 2 * GIB
    assert admission.reservation(None, 8 * GIB) == 8 * GIB


def test_auto_budget_keeps_a_reserve() -> None:
    assert admission.auto_budget(8 * GIB) == 8 * GIB - int(8 * GIB * 0.05)
    assert admission.auto_budget(2 * GIB) == 2 * GIB - 256 * MIB  # 5 % would be under 256 MiB
    assert admission.auto_budget(100 * MIB) == 0


def test_a_run_larger_than_the_budget_can_never_fit() -> None:
    admission.check_can_fit(2 * GIB, 2 * GIB)
    admission.check_can_fit(None, 2 * GIB)
    with pytest.raises(UsageError, match=r"--mem 3.0 GiB can never fit in --budget 2.0 GiB"):
        admission.check_can_fit(3 * GIB, 2 * GIB)
    with pytest.raises(UsageError, match=r"--budget auto \(2.0 GiB here\)"):
        admission.check_can_fit(3 * GIB, 2 * GIB, auto=True)


def test_fits_while_the_reservations_stay_within_the_budget() -> None:
    two = [Holder(2 * GIB), Holder(2 * GIB)]
    assert decide(4 * GIB, two, 8 * GIB).fits
    verdict = decide(5 * GIB, two, 8 * GIB)
    assert not verdict.fits
    assert not verdict.foreign
    assert (verdict.need, verdict.free) == (5 * GIB, 4 * GIB)
    assert decide(8 * GIB, [], 8 * GIB).fits


def test_a_run_without_limit_runs_alone() -> None:
    assert not decide(8 * GIB, [Holder(1)], 8 * GIB).fits
    assert not decide(1, [Holder(8 * GIB)], 8 * GIB).fits


def test_auto_also_needs_what_holders_may_still_grow_into() -> None:
    # two holders of 2 GiB using 0.5 GiB each may still take 3 GiB: with 4 GiB
    # available, 1 GiB is left, not the 4 the budget has
    holders = [Holder(2 * GIB, GIB // 2), Holder(2 * GIB, GIB // 2)]
    verdict = decide(2 * GIB, holders, 8 * GIB, available=4 * GIB)
    assert not verdict.fits
    assert verdict.foreign
    assert verdict.free == GIB
    assert decide(GIB, holders, 8 * GIB, available=4 * GIB).fits
    assert admission.room_to_grow([Holder(2 * GIB, 3 * GIB), Holder(GIB, None)]) == GIB


def test_auto_whole_budget_run_waits_only_for_holders() -> None:
    assert decide(8 * GIB, [], 8 * GIB, available=GIB).fits


def test_pressure_holds_newcomers_back() -> None:
    verdict = decide(GIB, [], 8 * GIB, available=8 * GIB, pressure=12.5)
    assert not verdict.fits
    assert verdict.foreign
    assert verdict.pressure == 12.5
    assert decide(GIB, [], 8 * GIB, available=8 * GIB, pressure=9.9).fits


def test_waits_on_the_oldest_holder_whose_leaving_is_enough() -> None:
    holders = [Holder(GIB, since=1.0), Holder(3 * GIB, since=2.0), Holder(3 * GIB, since=3.0)]
    assert decide(3 * GIB, holders, 8 * GIB).wait_on == 1  # 1 GiB free: needs 2 more
    assert decide(8 * GIB, holders, 8 * GIB).wait_on == 0  # nobody alone is enough: the oldest


def test_waiting_text() -> None:
    verdict = decide(2 * GIB, [Holder(6 * GIB + 819 * MIB)], 8 * GIB)
    assert (
        admission.waiting_text("agents", verdict, 8 * GIB)
        == 'waiting for memory on lock "agents": needs 2.0 GiB, 1.2 GiB of 8.0 GiB free'
    )


def test_gate_reads_reservations_from_slot_entries() -> None:
    gate = admission.Gate("agents", 2 * GIB, 8 * GIB)
    entries: list[Entry] = [{"reservation": 3 * GIB}, {"mem": 2 * GIB}, {"mem": None}]
    assert [h.reservation for h in map(gate.holder, entries)] == [3 * GIB, 2 * GIB, 8 * GIB]
    assert gate.check(entries[:2]).fits
    assert not gate.check(entries).fits
