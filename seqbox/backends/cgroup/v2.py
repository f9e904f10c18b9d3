"""cgroup v2 (the unified hierarchy with the memory controller).

Each run gets a node ``<base>/seqbox-<run id>`` holding the limits
(``memory.max``, ``memory.swap.max=0``, ``memory.high``, ``memory.oom.group=1``,
``pids.max``, ``cpu.max``) and a leaf ``cmd`` below it where the command runs.
The node has no processes of its own, so it may enable controllers for its
children: a nested ``seqbox run`` makes its own node beside ``cmd``, inside the
parent's limits.

Where the base is (v2 allows controllers only in cgroups without processes,
the "no internal processes" rule; only the machine's root cgroup is exempt),
decided by :func:`plan_placement`:

1. seqbox runs in the machine's root cgroup: the root;
2. seqbox runs in a sandbox's ``cmd`` leaf (a nested run): that sandbox's node;
3. seqbox is alone in a writable cgroup (a delegated scope, a CI step's own
   cgroup, the cgroup of a container whose entrypoint is seqbox): it moves
   itself into a leaf ``seqbox-sup-<pid>`` and uses its old cgroup as the base;
4. the cgroup is shared with other processes (they stay where they are) and its
   parent is writable and holds no processes: the parent;
5. the cgroup is shared and there is no usable parent (a container with a
   private cgroup namespace: its cgroup is the top of what it sees), and seqbox
   may take the cgroup over (it is PID 1, the container's init, or
   ``SEQBOX_CGROUP_TAKEOVER=1`` says so): every process of the cgroup moves
   into a leaf ``init`` once, as docker-in-docker's entrypoint and systemd do,
   and the cgroup becomes the base (later runs go beside ``init``, rule 4);
6. otherwise an unprivileged user on a systemd machine gets a delegated scope
   from its user manager (asked for over D-Bus, or ``systemd-run --user --scope
   -p Delegate=yes``; see backends/systemd/scope.py) and is then alone in it (rule 3),
   and failing that seqbox falls back to polling.

Taking over is not done unasked: the moved processes' own cgroup then shows no
limits (programs that size themselves from their cgroup's ``memory.max``, as
JVMs and Go runtimes do, see none), and a process entering the container later
(``docker exec``) is placed beside them by the runtime.
"""

from __future__ import annotations

import errno
import os
import time

from seqbox.backends.base import (
    NAME_PREFIX,
    SUPERVISOR_PREFIX,
    Backend,
    Limits,
    Probe,
    Sandbox,
    Usage,
    kill_pids,
)
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.cgroup.enclosing import (
    ENCLOSING_RUN,
    MACHINE,
    RUN,
    LimitHit,
    OomWatch,
    top_is_root_v2,
)
from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.records import SandboxInfo
    from seqbox.spawn import Prepared, Stdio

CPU_PERIOD_US = 100_000
PAGE = os.sysconf("SC_PAGE_SIZE")
LEAF = "cmd"
#: the leaf a takeover moves a cgroup's processes into (docker-in-docker's name)
TAKEOVER_LEAF = "init"
#: ``1`` allows seqbox to take over a shared cgroup (see the module docstring, rule 5)
TAKEOVER_ENV = "SEQBOX_CGROUP_TAKEOVER"


class Placement:
    """Where runs' nodes go: ``base``; how it was chosen (``kind``), why, and
    when there is none, what would give one (``hint``)."""

    __slots__ = ("base", "hint", "kind", "reason")

    def __init__(self, kind: str, base: str | None, reason: str, hint: str | None = None) -> None:
        self.kind = kind  # root | nested | leaf | sibling | takeover | none
        self.base = base
        self.reason = reason
        self.hint = hint

    def __repr__(self) -> str:
        return f"Placement({self.kind!r}, {self.base!r})"


def plan_placement(
    mount_path: str,
    self_dir: str,
    self_procs: list[int],
    my_pid: int,
    writable: dict[str, bool],
    *,
    top_is_root: bool = True,
    parent_procs: list[int] | tuple[int, ...] = (),
    takeover: bool = False,
) -> Placement:
    """Pure: choose the base cgroup for run nodes (see the module docstring).

    ``writable`` maps a directory to whether we may create cgroups in it.
    ``top_is_root`` says the top of the mount is the machine's root cgroup
    (False in a container with a private cgroup namespace, whose top is the
    container's own cgroup). ``parent_procs`` are the processes in
    ``self_dir``'s parent; ``takeover`` says the user allowed moving the
    processes of a shared cgroup into a leaf (PID 1 may do so unasked).
    """
    mount_path = mount_path.rstrip("/") or "/"
    self_dir = self_dir.rstrip("/") or "/"
    at_top = self_dir == mount_path
    others = sorted(set(self_procs) - {my_pid})
    if at_top and top_is_root:
        if not writable.get(self_dir):
            return Placement("none", None, f"seqbox runs in the root cgroup, and {self_dir} is not writable")
        return Placement("root", mount_path, "seqbox runs in the root cgroup")
    parent = os.path.dirname(self_dir)
    if os.path.basename(self_dir) == LEAF and os.path.basename(parent).startswith(NAME_PREFIX):
        return Placement("nested", parent, "a nested run: inside the parent run's cgroup")
    if os.path.basename(self_dir).startswith(SUPERVISOR_PREFIX):
        # an earlier step already moved us into our own leaf
        return Placement("leaf", parent, "seqbox's own leaf in its cgroup")
    where = "the container's cgroup" if at_top else f"{self_dir}"
    # the parent can hold run nodes when it has no processes (or is the exempt root)
    parent_usable = (
        not at_top
        and writable.get(parent, False)
        and (not parent_procs or (parent == mount_path and top_is_root))
    )
    if not writable.get(self_dir):
        if parent_usable:
            return Placement(
                "sibling", parent, f"{self_dir} is not writable: runs go beside it, in its parent"
            )
        return Placement(
            "none",
            None,
            f"{where} is not writable" + ("" if at_top else f", nor is {parent}"),
            hint="give seqbox a writable cgroup: run it as root with /sys/fs/cgroup mounted read-write, "
            "or in a delegated one (systemd-run --user --scope -p Delegate=yes)",
        )
    if not others:
        return Placement("leaf", self_dir, f"seqbox is alone in {where}: it moves into a leaf")
    if parent_usable:
        return Placement(
            "sibling", parent, "seqbox's cgroup holds other processes: runs go beside it, in its parent"
        )
    shown = ", ".join(map(str, others[:3])) + (", ..." if len(others) > 3 else "")
    if takeover or my_pid == 1:
        why = "seqbox is PID 1" if my_pid == 1 else f"{TAKEOVER_ENV}=1"
        return Placement(
            "takeover",
            self_dir,
            f"{where} holds other processes (pids {shown}); {why}: the first run moves them into "
            f"{os.path.join(self_dir, TAKEOVER_LEAF)}, as docker-in-docker does",
        )
    beside = (
        ""
        if at_top
        else f", and its parent {parent} "
        + ("holds processes too" if writable.get(parent) else "is not writable")
    )
    return Placement(
        "none",
        None,
        f"{where} holds other processes (pids {shown}){beside}, so the kernel lets seqbox enable "
        "no memory controller there (the no-internal-processes rule)",
        hint=f"run seqbox as the container's entrypoint (alone in its cgroup), or set {TAKEOVER_ENV}=1 "
        f"to let it move those processes into {os.path.join(self_dir, TAKEOVER_LEAF)} first "
        "(as docker-in-docker does)",
    )


class Cgroup2Layout:
    """The unified hierarchy as seen from this process."""

    def __init__(self, mount: cgroupfs.Mount | None, self_dir: str | None) -> None:
        self.mount = mount
        self.self_dir = self_dir

    @classmethod
    def current(cls) -> Cgroup2Layout:
        for own in cgroupfs.own_cgroups():
            if own.key == cgroupfs.UNIFIED:
                return cls(own.mount, own.path)
        return cls(None, None)

    def controllers(self, path: str) -> set[str]:
        return set((cgroupfs.try_read(os.path.join(path, "cgroup.controllers")) or "").split())

    def placement(self) -> Placement:
        if self.mount is None or self.self_dir is None:
            return Placement("none", None, "no cgroup2 hierarchy is mounted")
        if self.mount.read_only:
            return Placement(
                "none",
                None,
                f"{self.mount.path} is mounted read-only",
                hint="give seqbox a writable cgroup: in a container, one with /sys/fs/cgroup mounted "
                "read-write (e.g. docker run --privileged)",
            )
        self_dir = self.self_dir
        parent = os.path.dirname(self_dir)
        procs = _procs(self_dir)
        writable = {path: _writable(path) for path in (self_dir, parent)}
        top = self.mount.path.rstrip("/") or "/"
        return plan_placement(
            self.mount.path,
            self_dir,
            procs,
            os.getpid(),
            writable,
            top_is_root=self.top_is_root(),
            parent_procs=_procs(parent) if self_dir != top and writable[parent] else (),
            takeover=os.environ.get(TAKEOVER_ENV) == "1",
        )

    def top_is_root(self) -> bool:
        """Whether the top of the mount is the machine's root cgroup, which is
        exempt from the no-internal-processes rule. In a container with a private
        cgroup namespace it is the container's own cgroup: only non-root cgroups
        have ``cgroup.type``."""
        return self.mount is not None and top_is_root_v2(self.mount.path)


def _procs(path: str) -> list[int]:
    return cgroupfs.parse_pids(cgroupfs.try_read(os.path.join(path, "cgroup.procs")) or "")


def _writable(path: str) -> bool:
    return os.access(path, os.W_OK) and os.access(os.path.join(path, "cgroup.procs"), os.W_OK)


class Cgroup2Backend(Backend):
    name = "cgroup2"

    def __init__(self, scope_failure: str | None = None, lock_slice: str | None = None) -> None:
        #: why the scope step found no delegated scope (see backends/systemd/scope.py),
        #: when it tried: the reason this backend is not usable then
        self.scope_failure = scope_failure
        #: the lock's slice the scope step put seqbox's scope in (seqbox/ceiling.py):
        #: the parent, limited to the budget, of the runs of a lock with a budget
        self.lock_slice = lock_slice

    def probe(self) -> Probe:
        try:
            layout = Cgroup2Layout.current()
        except (BackendError, OSError, ValueError) as err:  # probing must not fail
            return Probe(self.name, False, f"cannot read the cgroup layout: {err}")
        if layout.mount is None or layout.self_dir is None:
            return Probe(self.name, False, "no cgroup2 hierarchy is mounted")
        details: dict[str, object] = {"mount": layout.mount.path, "cgroup": layout.self_dir}
        available = layout.controllers(layout.self_dir)
        details["controllers"] = sorted(available)
        if "memory" not in available:
            return Probe(
                self.name,
                False,
                f"the memory controller is not available in {layout.self_dir} "
                "(hybrid layout: memory is on cgroup v1)",
                details,
            )
        placement = layout.placement()
        details["placement"] = placement.kind
        details["base"] = placement.base
        if placement.hint:
            details["hint"] = placement.hint
        if placement.base is None:
            # The controllers are there, only not ours to use: a delegated scope would do.
            details["delegation"] = not layout.mount.read_only
            reason = placement.reason
            if details["delegation"]:
                if self.scope_failure is not None:
                    answers, why = False, self.scope_failure
                else:
                    from seqbox.backends.systemd.scope import user_manager

                    answers, why = user_manager(os.environ)
                details["user_manager"] = answers
                details["user_manager_reason"] = why
                reason += "; " + ("a delegated systemd scope gives one" if answers else why)
            return Probe(self.name, False, reason, details)
        details["swap_accounting"] = (
            os.path.exists(os.path.join(layout.self_dir, "memory.swap.max")) or placement.kind == "root"
        )
        return Probe(self.name, True, f"cgroup v2 with the memory controller; {placement.reason}", details)

    def create(self, limits: Limits, name: str, records: str | None = None) -> Sandbox:
        layout = Cgroup2Layout.current()
        placement = layout.placement()
        if placement.base is None:
            raise BackendError(f"cgroup2: {placement.reason}")
        supervisor_leaf = None
        if placement.kind == "leaf" and layout.self_dir == placement.base:
            supervisor_leaf = _move_self_into_leaf(placement.base)
        elif placement.kind == "takeover":
            _take_over(placement.base, limits)
            return Cgroup2Sandbox(placement.base, limits, name, None, layout)
        try:
            _enable_controllers(placement.base, limits)
            if limits.ceiling is not None and self.lock_slice is not None:
                # the lock's parent is the slice around our scope: the node goes in the scope
                sandbox = Cgroup2Sandbox(placement.base, limits, name, supervisor_leaf, layout)
                sandbox.lock_parent = self.lock_slice
                return sandbox
            if limits.ceiling is not None:  # the lock's parent: the run's node goes in there
                from seqbox.ceiling import within

                leaf = supervisor_leaf
                return within(placement.base, limits.ceiling, True,
                              lambda into: Cgroup2Sandbox(into, limits, name, leaf, layout))  # fmt: skip
            return Cgroup2Sandbox(placement.base, limits, name, supervisor_leaf, layout)
        except BaseException:
            if supervisor_leaf is not None:
                _leave_leaf(supervisor_leaf)
            raise


def _move_self_into_leaf(base: str) -> str:
    leaf = os.path.join(base, f"{SUPERVISOR_PREFIX}{os.getpid()}")
    cgroupfs.make_dir(leaf, exist_ok=True)
    cgroupfs.write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    return leaf


def _take_over(base: str, limits: Limits) -> None:
    """Move every process of ``base`` (seqbox too) into its leaf ``init`` and
    enable the controllers in ``base``. Processes may arrive meanwhile (a fork,
    a ``docker exec``): they are moved too, until the kernel accepts."""
    leaf = os.path.join(base, TAKEOVER_LEAF)
    cgroupfs.make_dir(leaf, exist_ok=True)
    procs = os.path.join(leaf, "cgroup.procs")
    for _ in range(20):
        for pid in _procs(base):
            try:
                cgroupfs.write(procs, str(pid))
            except BackendError:
                if os.path.exists(f"/proc/{pid}"):  # not a process that just exited
                    raise
        try:
            _enable_controllers(base, limits)
            return
        except BackendError:
            if not _procs(base):
                raise
    raise BackendError(f"cgroup2: cannot take over {base}: processes keep arriving in it")


def _leave_leaf(leaf: str) -> None:
    """Move seqbox back where it was and remove its leaf, when no other run
    still needs the base's controllers. Best effort: ``seqbox clean`` removes a
    leaf whose supervisor has exited."""
    base = os.path.dirname(leaf)
    others = [
        name
        for name in os.listdir(base)
        if os.path.isdir(os.path.join(base, name)) and os.path.join(base, name) != leaf
    ]
    if others:
        return
    try:
        enabled = (cgroupfs.try_read(os.path.join(base, "cgroup.subtree_control")) or "").split()
        if enabled:
            cgroupfs.write(
                os.path.join(base, "cgroup.subtree_control"), " ".join("-" + name for name in enabled)
            )
        cgroupfs.write(os.path.join(base, "cgroup.procs"), str(os.getpid()))
        os.rmdir(leaf)
    except (BackendError, OSError):
        pass


def _enable_controllers(path: str, limits: Limits) -> None:
    """Enable in ``path``'s children the controllers the limits need."""
    available = set((cgroupfs.try_read(os.path.join(path, "cgroup.controllers")) or "").split())
    enabled = set((cgroupfs.try_read(os.path.join(path, "cgroup.subtree_control")) or "").split())
    wanted = {"memory"}
    if "pids" in available:
        wanted.add("pids")
    elif limits.pids is not None:
        raise BackendError(f"cgroup2: --pids needs the pids controller, which {path} does not offer")
    if limits.cpus is not None:
        if "cpu" not in available:
            raise BackendError(f"cgroup2: --cpus needs the cpu controller, which {path} does not offer")
        wanted.add("cpu")
    missing = wanted - enabled
    if "memory" not in available:
        raise BackendError(f"cgroup2: the memory controller is not available in {path}")
    if not missing:
        return
    control = os.path.join(path, "cgroup.subtree_control")
    try:
        fd = os.open(control, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, " ".join("+" + name for name in sorted(missing)).encode())
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno in cgroupfs.SYSTEM_LIMITS:
            raise
        if err.errno == errno.EBUSY:
            raise BackendError(
                f"cgroup2: cannot enable {', '.join(sorted(missing))} in {path}: it holds processes "
                "(the no-internal-processes rule)"
            ) from None
        raise BackendError(f"cgroup2: cannot write {control}: {err.strerror}") from None


class Cgroup2Sandbox(Sandbox):
    backend = "cgroup2"
    throttles_mem_high = True

    def __init__(
        self,
        base: str,
        limits: Limits,
        name: str,
        supervisor_leaf: str | None,
        layout: Cgroup2Layout | None = None,
    ) -> None:
        self.limits = limits
        self.node = os.path.join(base, f"{NAME_PREFIX}{name}")
        self.leaf = os.path.join(self.node, LEAF)
        self.supervisor_leaf = supervisor_leaf
        self.cgroups = []
        self._sampled_peak = 0
        self._oom_seen = False
        try:
            cgroupfs.make_dir(self.node)
            self.cgroups.append(self.node)
            self._set_limits()
            _enable_controllers(self.node, limits)
            cgroupfs.make_dir(self.leaf)
            self._into: cgroupfs.Into | None = cgroupfs.open_into(self.leaf)
        except BaseException:
            self.close()
            raise
        self.has_kill = os.path.exists(os.path.join(self.node, "cgroup.kill"))
        self.files = cgroupfs.OpenFiles()
        for key, path in (
            ("current", self._file("memory.current")),
            ("peak", self._file("memory.peak")),
            ("events", self._file("memory.events")),  # hierarchical: wakes us on any OOM below
            ("events_local", self._file("memory.events.local")),
            ("leaf_events", os.path.join(self.leaf, "memory.events")),
            ("procs", os.path.join(self.leaf, "cgroup.procs")),
            ("tasks_peak", self._file("pids.peak")),
            ("populated", self._file("cgroup.events")),
        ):
            self.files.open(key, path)
        self.files.text("events")  # read once: poll() then reports the next change
        self._ooms: OomWatch | None = None
        if layout is not None and layout.mount is not None:
            self._ooms = OomWatch(self.node, self.node, layout.mount.path, layout.top_is_root())

    def _file(self, name: str) -> str:
        return os.path.join(self.node, name)

    def _set_limits(self) -> None:
        limits = self.limits
        if limits.mem is not None:
            cgroupfs.write_checked(self._file("memory.max"), str(limits.mem), PAGE)
            if os.path.exists(self._file("memory.swap.max")):
                cgroupfs.write_checked(self._file("memory.swap.max"), "0")
        if limits.mem_high is not None:
            cgroupfs.write_checked(self._file("memory.high"), str(limits.mem_high), PAGE)
        if os.path.exists(self._file("memory.oom.group")):
            cgroupfs.write_checked(self._file("memory.oom.group"), "1")
        if limits.pids is not None:
            cgroupfs.write_checked(self._file("pids.max"), str(limits.pids))
        if limits.cpus is not None:
            quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
            cgroupfs.write_checked(self._file("cpu.max"), f"{quota} {CPU_PERIOD_US}")

    def prepare(
        self, argv: list[str], *, cwd: str | None, env: dict[str, str], stdio: Stdio, new_session: bool
    ) -> Prepared:
        from seqbox.backends.cgroup.clone3 import prepare_inside

        into, self._into = self._into, None
        return prepare_inside(into, (), argv, cwd=cwd, env=env, stdio=stdio, new_session=new_session)

    def describe(self) -> SandboxInfo:
        return {
            **super().describe(),
            "mem_file": self._file("memory.current"),
            "procs_file": os.path.join(self.leaf, "cgroup.procs"),
        }

    def watch_fds(self) -> list[tuple[int, int]]:
        """memory.events raises a file-modified event on every change: poll()
        reports POLLPRI (and POLLERR) until it is read again."""
        import select

        fd = self.files.fd("events")
        return [] if fd is None else [(fd, select.POLLPRI | select.POLLERR)]

    def acknowledge(self, fds: list[int]) -> None:
        self.files.text("events")

    def tasks_peak(self) -> int | None:
        return self.files.number("tasks_peak")

    def forks_refused(self) -> int | None:
        """``max`` in pids.events. Kernels before 6.13 count a refused fork in
        the forking task's own cgroup (the leaf), later ones in the cgroup whose
        limit refused it, hierarchically: the larger of the two is the count."""
        counts = [
            cgroupfs.parse_flat_keyed(text).get("max")
            for text in (
                cgroupfs.try_read(os.path.join(where, "pids.events")) for where in (self.node, self.leaf)
            )
            if text is not None
        ]
        found = [n for n in counts if n is not None]
        return max(found) if found else None

    def sample(self) -> Usage:
        mem = self.files.number("current") or 0
        self._sampled_peak = max(self._sampled_peak, mem)
        procs = self.files.text("procs") or ""
        return Usage(mem, len(procs.split()))

    def memory_exceeded(self, usage: Usage | None) -> bool:
        """OOM in this run's own limit (memory.events.local of the node: oom,
        oom_group_kill), or an OOM kill among the command's processes (the
        leaf's memory.events). Nested runs' own OOMs are theirs to report."""
        if not self._oom_seen:
            local = self.files.text("events_local")
            if local is not None:
                events = cgroupfs.parse_flat_keyed(local)
                hit = events.get("oom", 0) + events.get("oom_kill", 0) + events.get("oom_group_kill", 0)
            else:  # kernels before 5.2
                hit = cgroupfs.parse_flat_keyed(self.files.text("events") or "").get("oom_kill", 0)
            leaf = cgroupfs.parse_flat_keyed(self.files.text("leaf_events") or "")
            self._oom_seen = hit > 0 or leaf.get("oom_kill", 0) > 0
        return self._oom_seen

    def which_limit(self) -> LimitHit | None:
        """Whose memory limit the kernel enforced: this run's, an enclosing
        run's, a container's or another cgroup's above (from the ``oom``
        counters of the node and the cgroups above it), or the machine's when
        the command lost a process to the OOM killer and no limit was hit."""
        if self._ooms is None:
            return None
        hit = self._ooms.which()
        if hit is None and self._ooms.before.get(self.node) is not None and self.memory_exceeded(None):
            return LimitHit(MACHINE, None, None)
        if hit is not None and hit.kind == RUN and self.limits.mem_from_enclosing:
            hit.kind = ENCLOSING_RUN  # this run's limit is the one its enclosing run holds it to
        return hit

    def peak_mem(self) -> int | None:
        peak = self.files.number("peak")
        return peak if peak is not None else (self._sampled_peak or None)

    def cpu_seconds(self) -> float | None:
        stat = cgroupfs.parse_flat_keyed(cgroupfs.try_read(self._file("cpu.stat")) or "")
        usage = stat.get("usage_usec")
        return None if usage is None else usage / 1e6

    def pids(self) -> list[int]:
        return cgroupfs.tree_pids(self.node)

    def kill_all(self) -> None:
        if not (self.has_kill and cgroupfs.kill_at_once(self.node)):
            self._freeze_and_kill()

    def _freeze_and_kill(self) -> None:
        freeze = self._file("cgroup.freeze")
        frozen = os.path.exists(freeze)
        try:
            if frozen:
                cgroupfs.write(freeze, "1")
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    events = cgroupfs.parse_flat_keyed(cgroupfs.try_read(self._file("cgroup.events")) or "")
                    if events.get("frozen") == 1:
                        break
                    time.sleep(0.001)
            if frozen:  # a frozen task cannot fork: one round ends them all
                kill_pids(self.pids())
            else:
                cgroupfs.kill_until_empty(self.node)
        finally:
            if frozen:
                try:
                    cgroupfs.write(freeze, "0")
                except (BackendError, OSError):
                    pass

    def is_empty(self) -> bool:
        text = self.files.text("populated")
        if text is None:
            return not os.path.isdir(self.node) or not self.pids()
        return cgroupfs.parse_flat_keyed(text).get("populated", 0) == 0

    def close(self) -> None:
        if hasattr(self, "files"):
            self.files.close()
        cgroupfs.close_into(getattr(self, "_into", None))
        self._into = None
        try:
            for path in reversed(self.cgroups):
                cgroupfs.remove_tree(path)
            self.cgroups = []
        finally:
            if self.supervisor_leaf is not None:
                _leave_leaf(self.supervisor_leaf)
                self.supervisor_leaf = None
