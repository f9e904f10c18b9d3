"""Which memory limit stopped a run: this run's own, an enclosing seqbox run's
(a nested run), or one of a cgroup above seqbox (a container's, a CI job's).

The kernel says so: a cgroup v2 whose own ``memory.max`` was hit counts it in
the ``oom`` line of its ``memory.events.local``. So the counters of the run's
cgroup and of every cgroup above it, up to the top seqbox can see, are read
when the run starts and again when it ends; the nearest one that rose is the
limit that was hit (not the exit status: a 137 says only that a SIGKILL came).
cgroup v1 keeps no such counter for memory+swap: there a cgroup whose peak
usage came up to its limit during the run is the one (see :class:`TreeOoms`).

A polled run makes no cgroup: its tree lives in the cgroup seqbox runs in.
:func:`tree_ooms` watches that cgroup's OOM-kill counter and the limits above
it, so that a command the kernel killed for a container's or an enclosing
run's limit is reported as a memory kill, with whose limit it was.
"""

from __future__ import annotations

import os

from seqbox.backends.base import LOCK_PREFIX, NAME_PREFIX, SUPERVISOR_PREFIX, lock_dir_parts
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.units import format_size

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: kinds of limit, nearest first
RUN, ENCLOSING_RUN, CONTAINER, CGROUP, MACHINE = "run", "enclosing-run", "container", "cgroup", "machine"
#: the parent cgroup of a lock with a budget (seqbox/ceiling.py)
LOCK_BUDGET = "lock-budget"


class LimitHit:
    """The memory limit the kernel enforced: whose (``kind``), its size in
    bytes (None when unknown) and the cgroup that has it."""

    __slots__ = ("kind", "limit", "path")

    def __init__(self, kind: str, limit: int | None, path: str | None) -> None:
        self.kind = kind
        self.limit = limit
        self.path = path

    def message(self, peak: int | None) -> str:
        """The line after ``seqbox: `` for a run this limit stopped."""
        if self.kind == MACHINE:
            return f"killed: the machine ran out of memory (kernel OOM killer; peak {format_size(peak)})"
        return f"killed: {self.what()} was reached (this run's peak {format_size(peak)})"

    def what(self) -> str:
        """``the container's memory limit 1.0 GiB`` (for ``seqbox: killed: ...``)."""
        size = "" if self.limit is None else f" {format_size(self.limit)}"
        if self.kind == RUN:
            return f"this run's memory limit{size}"
        if self.kind == ENCLOSING_RUN:
            return f"the enclosing seqbox run's memory limit{size}"
        if self.kind == CONTAINER:
            return f"the container's memory limit{size}"
        if self.kind == MACHINE:
            return "the machine's memory"
        if self.kind == LOCK_BUDGET and self.path is not None:
            parts = lock_dir_parts(os.path.basename(self.path))
            lock = "?" if parts is None else parts[0]
            return f'the budget{size} of lock "{lock}"'
        return f"the memory limit{size} of cgroup {self.path} (above seqbox)"

    def __repr__(self) -> str:
        return f"LimitHit({self.kind!r}, {self.limit}, {self.path!r})"


def chain(start: str, top: str) -> list[str]:
    """Pure: ``start`` and every directory above it up to ``top`` (inclusive),
    nearest first. Empty when ``start`` is not under ``top``."""
    top = top.rstrip("/") or "/"
    start = start.rstrip("/") or "/"
    if start != top and not start.startswith(top.rstrip("/") + "/"):
        return []
    paths = [start]
    while paths[-1] != top:
        paths.append(os.path.dirname(paths[-1]))
    return paths


def classify(path: str, run_node: str | None, top: str, top_is_root: bool) -> str:
    """Pure: whose limit the cgroup ``path`` holds."""
    name = os.path.basename(path.rstrip("/"))
    if run_node is not None and path == run_node:
        return RUN
    if name.startswith(LOCK_PREFIX):
        return LOCK_BUDGET
    if name.startswith(NAME_PREFIX) and not name.startswith(SUPERVISOR_PREFIX):
        return ENCLOSING_RUN
    if path.rstrip("/") == top.rstrip("/") and not top_is_root:
        return CONTAINER
    return CGROUP


def oom_count(text: str | None) -> int | None:
    """The ``oom`` count of a ``memory.events.local`` text (None: no such file,
    as in the machine's root cgroup or before Linux 5.2)."""
    if text is None:
        return None
    return cgroupfs.parse_flat_keyed(text).get("oom", 0)


def first_risen(before: dict[str, int | None], after: dict[str, int | None], order: list[str]) -> str | None:
    """Pure: the first path in ``order`` whose count rose from ``before`` to ``after``."""
    for path in order:
        old, new = before.get(path), after.get(path)
        if new is not None and new > (old or 0):
            return path
    return None


class OomWatch:
    """The ``oom`` counters of a run's cgroup and every cgroup above it."""

    __slots__ = ("before", "order", "run_node", "top", "top_is_root")

    def __init__(self, run_node: str | None, start: str, top: str, top_is_root: bool) -> None:
        self.run_node = run_node
        self.top = top
        self.top_is_root = top_is_root
        self.order = chain(start, top)
        self.before = self._read()

    def _read(self) -> dict[str, int | None]:
        return {
            path: oom_count(cgroupfs.try_read(os.path.join(path, "memory.events.local")))
            for path in self.order
        }

    def which(self) -> LimitHit | None:
        """The nearest cgroup whose own limit was hit since the watch began."""
        path = first_risen(self.before, self._read(), self.order)
        if path is None:
            return None
        kind = classify(path, self.run_node, self.top, self.top_is_root)
        limit = cgroupfs.try_read(os.path.join(path, "memory.max"))
        return LimitHit(kind, None if limit is None else cgroupfs.parse_limit(limit), path)


def top_is_root_v2(top: str) -> bool:
    """Whether the top of a cgroup2 mount is the machine's root cgroup. In a
    container with a private cgroup namespace it is the container's own
    cgroup: only non-root cgroups have ``cgroup.type``."""
    return not os.path.exists(os.path.join(top, "cgroup.type"))


def top_is_root_v1(top: str) -> bool:
    """The same for a cgroup v1 mount: only the root has ``cgroup.sane_behavior``
    (a container sees its own cgroup as the top, bind-mounted or in a namespace)."""
    return os.path.exists(os.path.join(top, "cgroup.sane_behavior"))


def v1_limit(path: str) -> int | None:
    """The memory limit of the cgroup v1 ``path`` (memory+swap where it is
    lower), or None when it has none."""
    read = cgroupfs.read_int_or_none
    limits = [read(os.path.join(path, f"memory.{n}limit_in_bytes")) for n in ("", "memsw.")]
    finite = [n for n in limits if n is not None and n < cgroupfs.UNLIMITED_V1]
    return min(finite) if finite else None


def v1_peak(path: str) -> int:
    """The most the cgroup v1 ``path`` ever used (memory+swap where it is accounted)."""
    read = cgroupfs.read_int_or_none
    peaks = [read(os.path.join(path, f"memory.{n}max_usage_in_bytes")) for n in ("", "memsw.")]
    return max((n for n in peaks if n is not None), default=0)


def limit_reached_v1(path: str) -> int | None:
    """The cgroup v1 ``path``'s memory limit if its peak usage came up to it
    (see :func:`reached`), else None."""
    limit = v1_limit(path)
    return limit if limit is not None and reached(v1_peak(path), limit) else None


def reached(peak: int, limit: int) -> bool:
    """Pure: the peak came within a page or two (or 1 %) of the limit."""
    return peak >= limit - max(2 * PAGE, limit // 100)


class TreeOoms:
    """The OOM counters that concern a polled tree, read when its sandbox is
    made: the OOM-kill count of the cgroup seqbox runs in (the tree lives
    there), and what tells, for it and every cgroup above it, whether its limit
    is reached. Read again only after the command died of a SIGKILL seqbox did
    not send: no file is read while the run goes on."""

    def killed(self) -> bool:
        """The kernel's OOM killer ended a process in seqbox's cgroup since."""
        raise NotImplementedError

    def which(self) -> LimitHit:
        """The nearest limit reached since (the machine's memory when none was)."""
        raise NotImplementedError


class V2TreeOoms(TreeOoms):
    """cgroup v2: ``oom_kill`` in ``memory.events`` (below included), and the
    ``oom`` counters of :class:`OomWatch` upwards."""

    __slots__ = ("events", "kills", "levels")

    def __init__(self, own: str, top: str, kills: int) -> None:
        self.events = os.path.join(own, "memory.events")
        self.kills = kills
        self.levels = OomWatch(None, own, top, top_is_root_v2(top))

    def killed(self) -> bool:
        return oom_kills(cgroupfs.try_read(self.events)) > self.kills

    def which(self) -> LimitHit:
        return self.levels.which() or LimitHit(MACHINE, None, None)


class V1TreeOoms(TreeOoms):
    """cgroup v1: ``oom_kill`` in ``memory.oom_control`` (counted in the
    victim's cgroup only), and upwards each cgroup's ``memory.failcnt`` (a
    charge refused at its memory limit) and its peak against its limit (the
    failures at a memory+swap limit are not counted on current kernels): the
    nearest cgroup whose counter rose, or whose peak came up to its limit
    during the run, holds the limit that was hit."""

    __slots__ = ("before", "control", "kills", "order", "top", "top_is_root")

    def __init__(self, own: str, top: str, kills: int) -> None:
        self.control = os.path.join(own, "memory.oom_control")
        self.kills = kills
        self.top = top
        self.top_is_root = top_is_root_v1(top)
        self.order = chain(own, top)
        self.before = {path: _v1_level(path) for path in self.order}

    def killed(self) -> bool:
        return oom_kills(cgroupfs.try_read(self.control)) > self.kills

    def which(self) -> LimitHit:
        """The nearest cgroup seen reaching its limit during the run; else the
        nearest whose peak had reached it before (a peak is never lowered, and
        a cgroup that reached its limit once is likelier to again than the
        machine to run out); else the machine's memory."""
        stale: LimitHit | None = None
        for path in self.order:
            limit = v1_limit(path)
            if limit is None:
                continue
            fails, peak = _v1_level(path)
            fails0, peak0 = self.before[path]
            hit = LimitHit(classify(path, None, self.top, self.top_is_root), limit, path)
            if fails > fails0 or (reached(peak, limit) and not reached(peak0, limit)):
                return hit
            if stale is None and reached(peak, limit):
                stale = hit
        return stale or LimitHit(MACHINE, None, None)


def _v1_level(path: str) -> tuple[int, int]:
    return cgroupfs.read_int_or_none(os.path.join(path, "memory.failcnt")) or 0, v1_peak(path)


def oom_kills(text: str | None) -> int:
    """The ``oom_kill`` count of a ``memory.events`` or ``memory.oom_control`` text (-1: none)."""
    return -1 if text is None else cgroupfs.parse_flat_keyed(text).get("oom_kill", -1)


def tree_ooms() -> TreeOoms | None:
    """The watch for a tree that lives in this process's cgroup: on v1's
    memory controller where it is mounted, else on cgroup v2's; None where no
    cgroup counts OOM kills (the machine's root cgroup, no memory controller,
    a kernel before 4.13)."""
    owns = cgroupfs.own_cgroups()
    for own in owns:
        if own.key == "memory":
            kills = oom_kills(cgroupfs.try_read(os.path.join(own.path, "memory.oom_control")))
            return V1TreeOoms(own.path, own.mount.path, kills) if kills >= 0 else None
    for own in owns:
        if own.key == cgroupfs.UNIFIED:
            kills = oom_kills(cgroupfs.try_read(os.path.join(own.path, "memory.events")))
            return V2TreeOoms(own.path, own.mount.path, kills) if kills >= 0 else None
    return None


def own_kind(mem_from_enclosing: bool) -> str:
    """Whose limit a run's own limit is: the enclosing run's when a nested run
    asked for more (or nothing) and was held to its enclosing run's."""
    return ENCLOSING_RUN if mem_from_enclosing else RUN
