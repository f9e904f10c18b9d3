"""cgroup v1 (legacy or hybrid layout).

One child cgroup per run in each v1 hierarchy we use (memory; pids; cpuacct;
cpu when ``--cpus`` is given; freezer when there is no v2 ``cgroup.kill``),
created under the cgroup seqbox runs in. On a hybrid layout the run also gets a
cgroup in the unified (v2) hierarchy: ``cgroup.kill`` kills the tree in one
write and ``cgroup.events`` says when it is gone.

The OOM verdict comes from the kernel's own counter (``oom_kill`` in
``memory.oom_control``), never from the exit status.
"""

from __future__ import annotations

import os
import time

from seqbox.backends.base import NAME_PREFIX, Backend, Limits, Probe, Sandbox, Usage, kill_pids
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.cgroup.enclosing import (
    MACHINE,
    LimitHit,
    chain,
    classify,
    limit_reached_v1,
    own_kind,
    top_is_root_v1,
)
from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.records import SandboxInfo
    from seqbox.spawn import Prepared, Stdio

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
CFS_PERIOD_US = 100_000


class Cgroup1Layout:
    """Where our cgroups are in each v1 hierarchy (and the unified one)."""

    def __init__(self, mounts: list[cgroupfs.Mount], self_paths: dict[str, str]) -> None:
        self.dirs: dict[str, str] = {}
        self.read_only: set[str] = set()
        # the unified hierarchy is only useful on a hybrid layout, where v1 has the memory controller
        for own in cgroupfs.own_cgroups_in(mounts, self_paths):
            name = "unified" if own.key == cgroupfs.UNIFIED else own.key
            self.dirs[name] = own.path
            if own.mount.read_only:
                self.read_only.add(name)

    @classmethod
    def current(cls) -> Cgroup1Layout:
        return cls(
            cgroupfs.mounts(),
            cgroupfs.parse_proc_cgroup(cgroupfs.read("/proc/self/cgroup")),
        )

    def usable(self, controller: str) -> bool:
        path = self.dirs.get(controller)
        return path is not None and controller not in self.read_only and os.access(path, os.W_OK)


class Cgroup1Backend(Backend):
    name = "cgroup1"

    def probe(self) -> Probe:
        try:
            layout = Cgroup1Layout.current()
        except (BackendError, OSError, ValueError) as err:  # probing must not fail
            return Probe(self.name, False, f"cannot read the cgroup layout: {err}")
        memory = layout.dirs.get("memory")
        details: dict[str, object] = {"dirs": dict(layout.dirs)}
        if memory is None:
            return Probe(self.name, False, "no cgroup v1 memory controller is mounted", details)
        if not layout.usable("memory"):
            return Probe(
                self.name,
                False,
                f"{memory} is not writable (run as root, or delegate it to this user)",
                details,
            )
        details["swap_accounting"] = os.path.exists(os.path.join(memory, "memory.memsw.limit_in_bytes"))
        details["unified"] = layout.usable("unified")
        return Probe(self.name, True, f"cgroup v1 memory controller writable at {memory}", details)

    def create(self, limits: Limits, name: str, records: str | None = None) -> Sandbox:
        layout = Cgroup1Layout.current()
        if limits.ceiling is None or "memory" not in layout.dirs:
            return Cgroup1Sandbox(layout, limits, name)
        from seqbox.ceiling import within  # the lock's parent: its memory cgroup goes in there

        def build(parent: str) -> Sandbox:
            layout.dirs["memory"] = parent
            return Cgroup1Sandbox(layout, limits, name)

        return within(layout.dirs["memory"], limits.ceiling, False, build)


class Cgroup1Sandbox(Sandbox):
    backend = "cgroup1"

    def __init__(self, layout: Cgroup1Layout, limits: Limits, name: str) -> None:
        if not layout.usable("memory"):
            raise BackendError("cgroup1: the v1 memory controller is not mounted or not writable")
        self.limits = limits
        name = NAME_PREFIX + name
        wanted = ["memory"]
        if layout.usable("pids"):
            wanted.append("pids")
        elif limits.pids is not None:
            raise BackendError(
                "cgroup1: --pids needs the pids controller, which is not mounted or not writable"
            )
        if limits.cpus is not None:
            if not layout.usable("cpu"):
                raise BackendError(
                    "cgroup1: --cpus needs the cpu controller, which is not mounted or not writable"
                )
            wanted.append("cpu")
        if layout.usable("cpuacct"):
            wanted.append("cpuacct")  # co-mounted with cpu: the same directory, made once
        if layout.usable("unified"):  # hybrid layout: cgroup.kill and cgroup.events
            wanted.append("unified")
        self.dirs: dict[str, str] = {}
        self.cgroups = []
        self.files = cgroupfs.OpenFiles()
        self.eventfds: list[int] = []
        self._into: cgroupfs.Into | None = None
        self._join_fds: tuple[int, ...] = ()
        self._oom_seen = False
        try:  # whatever fails (EMFILE, say), nothing made here is left behind
            for controller in wanted:
                self._make(layout, controller, name)
            unified = self.dirs.get("unified")
            self.unified_kill = unified is not None and os.path.exists(os.path.join(unified, "cgroup.kill"))
            if not self.unified_kill and layout.usable("freezer"):
                self._make(layout, "freezer", name)
            self._set_limits()
            self._into = cgroupfs.open_into(unified) if unified is not None else None
            for path in self.cgroups:
                if path != unified:
                    self._join_fds = (*self._join_fds, cgroupfs.open_procs(path, v1=True))
            self.memory = self.dirs["memory"]
            memory = self.memory
            self.files.open("usage", os.path.join(memory, "memory.usage_in_bytes"))
            self.files.open("procs", os.path.join(memory, "cgroup.procs"))
            self.files.open("oom", os.path.join(memory, "memory.oom_control"))
            if "pids" in self.dirs:
                self.files.open("tasks_peak", os.path.join(self.dirs["pids"], "pids.peak"))
            if self.unified_kill:
                self.files.open("events", os.path.join(self.dirs["unified"], "cgroup.events"))
            self._oom_watch = self._notify(self.files.fd("oom"), "")
        except BaseException:
            self.close()
            raise

    def _notify(self, target: int | None, argument: str) -> list[int]:
        """An eventfd the kernel bumps on an OOM in the cgroup, or when usage
        crosses a threshold: the supervisor wakes at once instead of polling."""
        if target is None or not hasattr(os, "eventfd"):
            return []
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            cgroupfs.write(os.path.join(self.memory, "cgroup.event_control"), f"{efd} {target}{argument}")
        except (BackendError, OSError):  # no notification: sampling still catches it
            os.close(efd)
            return []
        self.eventfds.append(efd)
        return [efd]

    def watch_fds(self) -> list[tuple[int, int]]:
        import select

        return [(fd, select.POLLIN) for fd in self._oom_watch]

    def watch_later(self) -> list[tuple[int, int]]:
        """--warn-at and --mem-high thresholds (each costs an RCU grace period)."""
        import select

        usage = self.files.fd("usage")
        fds = [fd for threshold in self.limits.notify_at for fd in self._notify(usage, f" {threshold}")]
        return [(fd, select.POLLIN) for fd in fds]

    def acknowledge(self, fds: list[int]) -> None:
        for fd in fds:
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                pass

    def tasks_peak(self) -> int | None:
        return self.files.number("tasks_peak")

    def forks_refused(self) -> int | None:
        if "pids" not in self.dirs:
            return None
        text = cgroupfs.try_read(os.path.join(self.dirs["pids"], "pids.events"))
        return None if text is None else cgroupfs.parse_flat_keyed(text).get("max")

    def _make(self, layout: Cgroup1Layout, controller: str, name: str) -> None:
        path = os.path.join(layout.dirs[controller], name)
        if path not in self.dirs.values():  # co-mounted controllers share a directory
            cgroupfs.make_dir(path)
            self.cgroups.append(path)
        self.dirs[controller] = path

    # -- limits ---------------------------------------------------------------

    def _set_limits(self) -> None:
        memory = self.dirs["memory"]
        limits = self.limits
        if limits.mem is not None:
            cgroupfs.write_checked(os.path.join(memory, "memory.limit_in_bytes"), str(limits.mem), PAGE)
            memsw = os.path.join(memory, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):  # swap accounting: close swap too
                cgroupfs.write_checked(memsw, str(limits.mem), PAGE)
        if limits.pids is not None:
            cgroupfs.write_checked(os.path.join(self.dirs["pids"], "pids.max"), str(limits.pids))
        if limits.cpus is not None:
            cpu = self.dirs["cpu"]
            cgroupfs.write(os.path.join(cpu, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
            quota = max(1000, int(limits.cpus * CFS_PERIOD_US))
            cgroupfs.write_checked(os.path.join(cpu, "cpu.cfs_quota_us"), str(quota))

    # -- running --------------------------------------------------------------

    def prepare(
        self, argv: list[str], *, cwd: str | None, env: dict[str, str], stdio: Stdio, new_session: bool
    ) -> Prepared:
        from seqbox.backends.cgroup.clone3 import prepare_inside

        into, join_fds, self._into, self._join_fds = self._into, self._join_fds, None, ()
        return prepare_inside(into, join_fds, argv, cwd=cwd, env=env, stdio=stdio, new_session=new_session)

    def describe(self) -> SandboxInfo:
        return {
            **super().describe(),
            "mem_file": os.path.join(self.memory, "memory.usage_in_bytes"),
            "procs_file": os.path.join(self.memory, "cgroup.procs"),
        }

    def sample(self) -> Usage:
        mem = self.files.number("usage") or 0
        procs = self.files.text("procs") or ""
        return Usage(mem, len(set(procs.split())))  # v1 may repeat a pid per thread

    def memory_exceeded(self, usage: Usage | None) -> bool:
        if not self._oom_seen:
            text = self.files.text("oom") or ""
            self._oom_seen = cgroupfs.parse_flat_keyed(text).get("oom_kill", 0) > 0
        return self._oom_seen

    def which_limit(self) -> LimitHit | None:
        """Whose limit the kernel enforced: the nearest cgroup, ours or one
        above, whose peak usage reached its limit (its failure counters are
        not kept for memory+swap on current kernels). Ours not reached means
        an enclosing one was (a seqbox run's node, or another cgroup above
        seqbox), or none at all (the machine)."""
        if limit_reached_v1(self.memory) is not None:
            return LimitHit(own_kind(self.limits.mem_from_enclosing), self.limits.mem, self.memory)
        mount = next((c.mount.path for c in cgroupfs.own_cgroups() if c.key == "memory"), None)
        if mount is not None:
            for path in chain(os.path.dirname(self.memory), mount):
                limit = limit_reached_v1(path)
                if limit is not None:  # a seqbox run's node, a container's top, or another cgroup
                    return LimitHit(classify(path, None, mount, top_is_root_v1(mount)), limit, path)
        return LimitHit(MACHINE, None, None)

    def peak_mem(self) -> int | None:
        return cgroupfs.read_int_or_none(os.path.join(self.memory, "memory.max_usage_in_bytes"))

    def cpu_seconds(self) -> float | None:
        path = self.dirs.get("cpuacct")
        if path is None:
            return None
        usage_ns = cgroupfs.read_int_or_none(os.path.join(path, "cpuacct.usage"))
        return None if usage_ns is None else usage_ns / 1e9

    def pids(self) -> list[int]:
        return cgroupfs.tree_pids(self.memory)

    def kill_all(self) -> None:
        if self.unified_kill and cgroupfs.kill_at_once(self.dirs["unified"]):
            return
        freezer = self.dirs.get("freezer")
        if freezer is not None:
            _freeze_and_kill(freezer, self.memory)
        cgroupfs.kill_until_empty(self.memory)  # no freezer, or a task forked before it froze

    def is_empty(self) -> bool:
        text = self.files.text("events")
        if text is not None:
            return cgroupfs.parse_flat_keyed(text).get("populated", 0) == 0
        return not self.pids()

    def close(self) -> None:
        self.files.close()
        for fd in (*self.eventfds, *self._join_fds):
            os.close(fd)
        self.eventfds = []
        self._join_fds = ()
        cgroupfs.close_into(self._into)
        self._into = None
        errors = []
        for path in reversed(self.cgroups):
            try:
                cgroupfs.remove_tree(path)
            except BackendError as err:
                errors.append(err)
        self.cgroups = []
        if errors:
            raise errors[0]


def _freeze_and_kill(freezer: str, memory: str) -> None:
    """Freeze the tree (no forks can happen), SIGKILL every task, thaw."""
    state = os.path.join(freezer, "freezer.state")
    try:
        cgroupfs.write(state, "FROZEN")
        deadline = time.monotonic() + 1.0
        while (cgroupfs.try_read(state) or "").strip() != "FROZEN" and time.monotonic() < deadline:
            time.sleep(0.001)
        kill_pids(cgroupfs.tree_pids(freezer) or cgroupfs.tree_pids(memory))
    finally:
        try:
            cgroupfs.write(state, "THAWED")
        except (BackendError, OSError):
            pass
