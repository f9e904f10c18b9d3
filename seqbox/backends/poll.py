"""Polling, for macOS, BSD and Linux without a usable cgroup.

Every ``poll_interval`` (0.1 s by default) the supervisor measures the whole
tree (see :mod:`seqbox.backends.proctree`) and kills it when it is over the
memory limit, or over ``--pids`` (polling cannot refuse a fork, so too many
tasks end the tree). On Linux seqbox is a child subreaper, so orphans stay in
its tree; everywhere every pid seen is remembered against re-parenting and
pid reuse. The kill stops the whole tree first (SIGSTOP), round after round
until no new process appears, then SIGKILLs every member: a fork bomb cannot
outrun it.
"""

from __future__ import annotations

import os
import signal

from seqbox.backends.base import Backend, Limits, Probe, Sandbox, Usage
from seqbox.spawn import prepare

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.backends.proctree import ProcTree
    from seqbox.backends.treerecord import TreeRecord
    from seqbox.records import SandboxInfo
    from seqbox.spawn import Prepared, Stdio

PR_SET_CHILD_SUBREAPER = 36
STOP_ROUNDS = 1000


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
        self.linux = linux

    def probe(self) -> Probe:
        if self.linux:
            return Probe(
                self.name, True, "polling /proc; seqbox is the tree's child subreaper", {"subreaper": True}
            )
        try:
            import psutil  # noqa: F401
        except ImportError as err:  # pragma: no cover - psutil is a dependency
            return Probe(self.name, False, f"psutil is not importable: {err}")
        return Probe(
            self.name, True, "polling with psutil; every pid seen is remembered", {"subreaper": False}
        )

    def create(self, limits: Limits, name: str, records: str | None = None) -> Sandbox:
        from seqbox.backends.treerecord import TreeRecord

        record = TreeRecord(records, f"seqbox-{name}") if records is not None else None
        if self.linux:
            from seqbox.backends.proctree import LinuxProcTree

            become_subreaper()
            return PollSandbox(limits, LinuxProcTree(), record)
        from seqbox.backends.proctree import PsutilProcTree

        return PollSandbox(limits, PsutilProcTree(), record)


class PollSandbox(Sandbox):
    backend = "poll"

    def __init__(self, limits: Limits, tree: ProcTree, record: TreeRecord | None = None) -> None:
        self.limits = limits
        self.tree = tree
        #: the members seen, on disk: the next run ends them if this supervisor dies
        self.record = record
        self.cgroups = []
        self.sample_interval = limits.poll_interval
        self._peak = 0
        self._mem_exceeded = False
        self._tasks = 0
        self._tasks_peak = 0
        thresholds = [n for n in (limits.mem, *limits.notify_at) if n is not None]
        self._threshold = min(thresholds) if thresholds else None

    def prepare(
        self, argv: list[str], *, cwd: str | None, env: dict[str, str], stdio: Stdio, new_session: bool
    ) -> Prepared:
        return prepare(argv, cwd=cwd, env=env, stdio=stdio, new_session=new_session)

    def sample(self) -> Usage:
        """The tree's memory: its private pages, while even its whole resident
        set is under every threshold (then so is what the kernel would charge);
        above, the exact proportional set size."""
        reading = self.tree.read()
        if self.record is not None and any(pid not in self.record.members for pid in self.tree.tracked):
            self.record.update(list(self.tree.tracked))
        mem = reading.mem
        if self._threshold is not None and reading.rss > self._threshold:
            pss = self.tree.pss()
            mem = reading.rss if pss is None else pss
        self._peak = max(self._peak, mem)
        self._tasks = reading.tasks
        self._tasks_peak = max(self._tasks_peak, reading.tasks)
        return Usage(mem, reading.procs)

    def memory_exceeded(self, usage: Usage | None) -> bool:
        if not self._mem_exceeded and usage is not None and self.limits.mem is not None:
            self._mem_exceeded = usage.mem > self.limits.mem
        return self._mem_exceeded

    def pids_exceeded(self, usage: Usage | None) -> bool:
        return self.limits.pids is not None and self._tasks > self.limits.pids

    def peak_mem(self) -> int | None:
        return self._peak or None

    def tasks_peak(self) -> int | None:
        return self._tasks_peak or None

    def pids(self) -> list[int]:
        return self.tree.members()

    def signal_all(self, sig: int, skip_pgrp: int | None = None) -> None:
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
