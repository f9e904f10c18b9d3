"""Polling, for macOS, BSD and Linux without a usable cgroup.

The supervisor measures the whole tree (see :mod:`seqbox.backends.poll.proctree`)
every ``poll_interval`` (0.1 s by default), and sooner as the tree nears a
threshold (the limit, ``--warn-at``, ``--mem-high``): the next sample comes
before the tree, growing at its measured rate, could cross it
(:meth:`PollSandbox.next_sample_in`). It kills the tree when it is over the
memory limit, or over ``--pids`` (polling cannot refuse a fork, so too many
tasks end the tree). On Linux seqbox is a child subreaper, so orphans stay in
its tree; everywhere every pid seen is remembered against re-parenting and
pid reuse. The kill stops the whole tree first (SIGSTOP), round after round
until no new process appears, then SIGKILLs every member: a fork bomb cannot
outrun it.

``SEQBOX_POLL_READER=psutil`` makes Linux poll as macOS does (psutil, no
subreaper): a test switch, so that the suite runs that code path on Linux.

A limit above seqbox (a container's, a cgroup's, an enclosing run's) is the
kernel's to enforce: its OOM killer ends a process of the tree. On Linux the
sandbox reads the OOM counters of the cgroup the tree lives in, and of those
above it, when it is made (:func:`seqbox.backends.cgroup.enclosing.tree_ooms`), and
again only if the command's main process died of a SIGKILL that seqbox did not
send: then the run is a memory kill, and the sandbox says whose limit it was.
"""

from __future__ import annotations

import os
import signal
import time

from seqbox.backends.base import NAME_PREFIX, Backend, Limits, Probe, Sandbox, Usage
from seqbox.backends.base import RUN_ID_ENV as RUN_ID_ENV  # noqa: PLC0414 - re-exported
from seqbox.spawn import prepare

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.backends.cgroup.enclosing import LimitHit, TreeOoms
    from seqbox.backends.poll.proctree import ProcTree, Reading
    from seqbox.backends.poll.treerecord import TreeRecord
    from seqbox.records import SandboxInfo
    from seqbox.spawn import Prepared, Stdio

PR_SET_CHILD_SUBREAPER = 36
STOP_ROUNDS = 1000
#: test-only: ``psutil`` makes Linux use the macOS code path
READER_ENV = "SEQBOX_POLL_READER"
#: the tightest sampling near a threshold, in seconds
MIN_INTERVAL_S = 0.002
#: and never more than this share of a core spent sampling (interval >= CPU cost / share)
MAX_CPU_SHARE = 0.25
#: the exact (PSS) measure above a threshold: at most this share of a core between crossings
EXACT_CPU_SHARE = 0.05
#: sample after this share of the time the tree needs to reach the next threshold
LEAD = 0.5
#: a measured growth rate halves every this many seconds without new growth
RATE_HALF_LIFE_S = 0.05


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux >= 3.4)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class PollBackend(Backend):
    name = "poll"
    kernel_enforced = False
    supports_cpus = False

    def __init__(self, linux: bool) -> None:
        #: the kernel counts OOM kills in cgroups (whichever reader polls)
        self.cgroups = linux
        #: the macOS code path on Linux, asked for by the test switch
        self.switched = linux and os.environ.get(READER_ENV) == "psutil"
        #: read /proc and be the tree's subreaper (else: psutil, as on macOS)
        self.linux = linux and not self.switched

    def probe(self) -> Probe:
        if self.linux:
            return Probe(
                self.name, True, "polling /proc; seqbox is the tree's child subreaper", {"subreaper": True}
            )
        try:
            import psutil  # noqa: F401
        except ImportError as err:  # pragma: no cover - psutil is a dependency
            return Probe(self.name, False, f"psutil is not importable: {err}")
        why = "polling with psutil; every pid seen is remembered"
        if self.switched:
            why += f" (as on macOS: {READER_ENV}=psutil, a test switch)"
        return Probe(self.name, True, why, {"subreaper": False})

    def create(self, limits: Limits, name: str, records: str | None = None) -> Sandbox:
        from seqbox.backends.poll.treerecord import TreeRecord

        record = TreeRecord(records, NAME_PREFIX + name) if records is not None else None
        ooms = _tree_ooms() if self.cgroups else None
        if self.linux:
            from seqbox.backends.poll.proctree import LinuxProcTree

            become_subreaper()
            return PollSandbox(limits, LinuxProcTree(), record, ooms)
        from seqbox.backends.poll.proctree import PsutilProcTree

        return PollSandbox(limits, PsutilProcTree(), record, ooms)


def _tree_ooms() -> TreeOoms | None:
    """The OOM counters above the tree, or None where they cannot be read
    (the run goes on without: a kernel kill is then reported as a signal)."""
    from seqbox.backends.cgroup.enclosing import tree_ooms
    from seqbox.errors import SeqboxError

    try:
        return tree_ooms()
    except (OSError, ValueError, SeqboxError):
        return None


class PollSandbox(Sandbox):
    backend = "poll"

    def __init__(
        self, limits: Limits, tree: ProcTree, record: TreeRecord | None = None, ooms: TreeOoms | None = None
    ) -> None:
        self.limits = limits
        self.tree = tree
        #: the members seen, on disk: the next run ends them if this supervisor dies
        self.record = record
        #: the kernel's OOM counters above the tree (Linux)
        self.ooms = ooms
        self.cgroups = []
        self.sample_interval = limits.poll_interval
        self._peak = 0
        self._mem_exceeded = False  # the sampled tree went over the limit
        self._kernel_hit: LimitHit | None = None  # the kernel's OOM killer ended the command
        self._killed = False  # seqbox sent the tree a SIGKILL
        self._tasks = 0
        self._tasks_peak = 0
        thresholds = [n for n in (limits.mem, *limits.notify_at) if n is not None]
        self._thresholds = sorted(set(thresholds))
        self._last: tuple[float, int] | None = None  # (time, resident total) of the last sample
        self._rate = 0.0  # bytes/s, the tree's recent growth
        self._cost = 0.0  # CPU seconds the last reading of the tree took
        self._next = self.sample_interval
        self._exact: tuple[float, int, int] | None = None  # (time, rss, pss) of the last exact measure
        self._exact_every = self.sample_interval

    def prepare(
        self, argv: list[str], *, cwd: str | None, env: dict[str, str], stdio: Stdio, new_session: bool
    ) -> Prepared:
        run_id = env.get(RUN_ID_ENV)
        if run_id:
            self.tree.mark(RUN_ID_ENV, run_id, time.time() - 2.0)  # create times are coarse
        prepared = prepare(argv, cwd=cwd, env=env, stdio=stdio, new_session=new_session)
        if self.record is not None:  # on disk before the command runs: a crash at once leaves it findable
            self.record.update([prepared.pid])
        return prepared

    def sample(self) -> Usage:
        """The tree's memory: its private pages, while even its whole resident
        set is under every threshold (then so is what the kernel would charge);
        above, the proportional set size (see :meth:`_charged`)."""
        began = time.thread_time()
        reading = self.tree.read()
        self._cost = time.thread_time() - began  # the exact measure is paced on its own
        if self.record is not None and any(pid not in self.record.members for pid in self.tree.tracked):
            self.record.update(list(self.tree.tracked))
        now = time.monotonic()
        mem = self._charged(reading, now)
        self._peak = max(self._peak, mem)
        self._tasks = reading.tasks
        self._tasks_peak = max(self._tasks_peak, reading.tasks)
        self._plan(now, mem, reading.rss)
        return Usage(mem, reading.procs)

    def _charged(self, reading: Reading, now: float) -> int:
        """Above the lowest threshold, the exact proportional set size, which
        costs a walk of every member's page tables (~4 ms for 256 MiB): measured
        every ``poll_interval`` at most (less often when it would take more than
        a twentieth of a core), and whenever the estimate in between (the last
        exact value plus all resident growth since) crosses a threshold, so a
        kill or a warning is always decided on an exact value."""
        if not self._thresholds or reading.rss <= self._thresholds[0]:
            self._exact = None
            return reading.mem
        if self._exact is not None:
            at, rss0, pss0 = self._exact
            estimate = max(0, pss0 + reading.rss - rss0)
            crossing = any(pss0 <= t < estimate for t in self._thresholds)
            if now - at < self._exact_every and not crossing:
                return estimate
        began = time.thread_time()
        pss = self.tree.pss()
        cost = time.thread_time() - began
        self._exact_every = max(self.sample_interval, cost / EXACT_CPU_SHARE)
        if pss is None:
            return reading.rss
        self._exact = (now, reading.rss, pss)
        return pss

    def _plan(self, now: float, mem: int, rss: int) -> None:
        """When to look next: before the tree, at its recent growth rate, could
        reach the nearest threshold it is still under."""
        if self._last is not None:
            # the growth of the resident total: one gauge throughout (the charged
            # figure switches between estimates and exact measures)
            then, rss0 = self._last
            elapsed = now - then
            if elapsed > 0:
                growth = (rss - rss0) / elapsed
                self._rate = max(growth, self._rate * 0.5 ** (elapsed / RATE_HALF_LIFE_S))
        self._last = (now, rss)
        interval = self.sample_interval
        # the gauge each threshold is checked against: the resident total bounds
        # the charged memory from above until it passes; then the exact measure
        headroom = [t - (rss if rss <= t else mem) for t in self._thresholds if mem <= t]
        if headroom and self._rate > 0:
            interval = min(interval, LEAD * min(headroom) / self._rate)
        floor = max(MIN_INTERVAL_S, self._cost / MAX_CPU_SHARE)
        self._next = max(min(floor, self.sample_interval), interval)

    def next_sample_in(self) -> float:
        return self._next

    def memory_exceeded(self, usage: Usage | None) -> bool:
        if not self._mem_exceeded and usage is not None and self.limits.mem is not None:
            self._mem_exceeded = usage.mem > self.limits.mem
        return self._mem_exceeded or self._kernel_hit is not None

    def command_ended(self, status: int) -> None:
        """A main process killed by a SIGKILL seqbox did not send, while the
        kernel's OOM killer acted in the tree's cgroup: a limit above seqbox
        was reached. The counters are read here, once, and nowhere else."""
        if self.ooms is None or self._mem_exceeded or self._killed:
            return
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL and self.ooms.killed():
            self._kernel_hit = self.ooms.which()

    def which_limit(self) -> LimitHit | None:
        if self._kernel_hit is not None:
            return self._kernel_hit
        if not self._mem_exceeded:
            return None
        from seqbox.backends.cgroup.enclosing import LimitHit, own_kind

        return LimitHit(own_kind(self.limits.mem_from_enclosing), self.limits.mem, None)

    def pids_exceeded(self, usage: Usage | None) -> bool:
        return self.limits.pids is not None and self._tasks > self.limits.pids

    def peak_mem(self) -> int | None:
        return self._peak or None

    def tasks_peak(self) -> int | None:
        return self._tasks_peak or None

    def pids(self) -> list[int]:
        return self.tree.members()

    def signal_all(self, sig: int, skip_pgrp: int | None = None) -> None:
        self._killed = self._killed or sig == signal.SIGKILL
        for pid in self.tree.members():
            try:
                if skip_pgrp is not None and os.getpgid(pid) == skip_pgrp:
                    continue
            except ProcessLookupError:
                continue
            self.tree.signal(pid, sig)

    def kill_all(self) -> None:
        """Stop the whole tree first, so a fork bomb cannot outrun us, then
        SIGKILL every member. Stopped processes cannot fork; each round finds
        the children forked before their parent stopped."""
        self._killed = True
        stopped: set[int] = set()
        for _ in range(STOP_ROUNDS):
            fresh = [pid for pid in self.tree.members() if pid not in stopped]
            if not fresh:
                break
            for pid in fresh:
                self.tree.signal(pid, signal.SIGSTOP)
                stopped.add(pid)
        for pid in stopped:
            self.tree.signal(pid, signal.SIGKILL)

    def is_empty(self) -> bool:
        return self.tree.is_empty()

    def describe(self) -> SandboxInfo:
        info: SandboxInfo = {"backend": self.backend, "cgroups": []}
        if self.record is not None:
            info["tree"] = self.record.path
        return info

    def close(self) -> None:
        self.tree.close()
        if self.record is not None:
            self.record.remove()
