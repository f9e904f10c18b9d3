"""Polling with psutil, for macOS, BSD and Linux without a usable cgroup.

Every ``poll_interval`` (0.1 s by default) the supervisor sums the RSS of the
whole tree and kills the tree when it is over the limit. Descendants stay
tracked after they are re-parented: on Linux seqbox is a child subreaper (so
orphans are re-parented to it), and everywhere every pid ever seen is
remembered as a psutil.Process, which pins its create time against pid reuse.

Only psutil calls that exist on macOS are used.
"""

from __future__ import annotations

import os
import signal

from seqbox.backends.base import Backend, Limits, Probe, Sandbox, Usage
from seqbox.spawn import prepare

TYPE_CHECKING = False
if TYPE_CHECKING:
    import psutil

    from seqbox.spawn import Prepared, Stdio

PR_SET_CHILD_SUBREAPER = 36
IDENTITY_CHECK_EVERY = 10  # samples between pid-reuse checks of tracked processes


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

    def __init__(self, subreaper: bool) -> None:
        self.subreaper = subreaper

    def probe(self) -> Probe:
        try:
            import psutil  # noqa: F401
        except ImportError as err:  # pragma: no cover - psutil is a dependency
            return Probe(self.name, False, f"psutil is not importable: {err}")
        how = "a child subreaper" if self.subreaper else "remembering every pid seen"
        return Probe(
            self.name, True, f"psutil polling; descendants tracked as {how}", {"subreaper": self.subreaper}
        )

    def create(self, limits: Limits, name: str) -> Sandbox:
        return PollSandbox(limits, self.subreaper)


class PollSandbox(Sandbox):
    backend = "poll"
    kernel_enforced = False

    def __init__(self, limits: Limits, subreaper: bool) -> None:
        import psutil

        self._psutil = psutil
        self.limits = limits
        self.leftovers = []
        self.is_subreaper = subreaper and become_subreaper()
        self.me = os.getpid()
        self.tracked: dict[int, psutil.Process] = {}
        self._peak = 0
        self._mem_exceeded = False
        self._samples = 0
        self._tasks = 0

    def prepare(
        self, argv: list[str], *, cwd: str | None, env: dict[str, str], stdio: Stdio, new_session: bool
    ) -> Prepared:
        prepared = prepare(argv, cwd=cwd, env=env, stdio=stdio, new_session=new_session)
        self._track(prepared.pid)
        return prepared

    # -- the tree ---------------------------------------------------------------

    def _track(self, pid: int) -> None:
        if pid not in self.tracked:
            try:
                self.tracked[pid] = self._psutil.Process(pid)
            except self._psutil.Error:
                pass

    def _ppid_map(self) -> dict[int, int]:
        ppid_map = getattr(self._psutil, "_ppid_map", None)
        if ppid_map is not None:
            result: dict[int, int] = ppid_map()
            return result
        return {p.pid: p.info["ppid"] for p in self._psutil.process_iter(["ppid"])}  # pragma: no cover

    def _discover(self) -> None:
        """Add every new descendant of seqbox or of a tracked process; drop the dead."""
        ppids = self._ppid_map()
        for pid in [pid for pid in self.tracked if pid not in ppids]:
            del self.tracked[pid]
        children: dict[int, list[int]] = {}
        for pid, ppid in ppids.items():
            children.setdefault(ppid, []).append(pid)
        stack = [self.me, *self.tracked]
        seen = set(stack)
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
                    self._track(child)

    def _verify_identities(self) -> None:
        for pid, proc in list(self.tracked.items()):
            if not proc.is_running():
                del self.tracked[pid]

    def sample(self) -> Usage:
        self._discover()
        self._samples += 1
        if self._samples % IDENTITY_CHECK_EVERY == 0:
            self._verify_identities()
        ps = self._psutil
        total, alive, tasks = 0, 0, 0
        for pid, proc in list(self.tracked.items()):
            try:
                total += proc.memory_info().rss
                if self.limits.pids is not None:
                    tasks += proc.num_threads()
                alive += 1
            except ps.Error:
                del self.tracked[pid]
        self._peak = max(self._peak, total)
        self._tasks = tasks
        return Usage(total, alive)

    def memory_exceeded(self, usage: Usage | None) -> bool:
        if not self._mem_exceeded and usage is not None and self.limits.mem is not None:
            self._mem_exceeded = usage.mem > self.limits.mem
        return self._mem_exceeded

    def pids_exceeded(self, usage: Usage | None) -> bool:
        return self.limits.pids is not None and self._tasks > self.limits.pids

    def peak_mem(self) -> int | None:
        return self._peak or None

    def pids(self) -> list[int]:
        self._discover()
        return list(self.tracked)

    def signal_all(self, sig: int, skip_pgrp: int | None = None) -> None:
        self._discover()
        for proc in list(self.tracked.values()):
            try:
                if skip_pgrp is not None and os.getpgid(proc.pid) == skip_pgrp:
                    continue
                proc.send_signal(sig)
            except (self._psutil.Error, ProcessLookupError):
                pass

    def kill_all(self) -> None:
        """Stop the whole tree first, so a fork bomb cannot outrun us, then
        SIGKILL every member. Stopped processes cannot fork; each round finds
        the children forked before their parent stopped."""
        ps = self._psutil
        stopped: dict[int, psutil.Process] = {}
        for _ in range(1000):
            self._discover()
            fresh = [proc for pid, proc in self.tracked.items() if pid not in stopped]
            if not fresh:
                break
            for proc in fresh:
                try:
                    proc.send_signal(signal.SIGSTOP)
                except ps.Error:
                    pass
                stopped[proc.pid] = proc
        for proc in stopped.values():
            try:
                proc.send_signal(signal.SIGKILL)
            except ps.Error:
                pass

    def is_empty(self) -> bool:
        self._discover()
        ps = self._psutil
        for proc in self.tracked.values():
            try:
                if proc.status() != ps.STATUS_ZOMBIE:
                    return False
            except ps.Error:
                continue
        return True

    def close(self) -> None:
        self.tracked.clear()
