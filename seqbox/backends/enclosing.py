"""Which memory limit stopped a run: this run's own, an enclosing seqbox run's
(a nested run), or one of a cgroup above seqbox (a container's, a CI job's).

The kernel says so: a cgroup v2 whose own ``memory.max`` was hit counts it in
the ``oom`` line of its ``memory.events.local``. So the counters of the run's
cgroup and of every cgroup above it, up to the top seqbox can see, are read
when the run starts and again when it ends; the nearest one that rose is the
limit that was hit (not the exit status: a 137 says only that a SIGKILL came).
"""

from __future__ import annotations

import os

from seqbox.backends import cgroupfs
from seqbox.units import format_size

#: how backends/cgroup2.py names a run's node and a supervisor's own leaf
#: (defined here, where they are read back, so that cgroup2 imports this module
#: when it is loaded: never later, when a run may be short of file descriptors)
NODE_PREFIX = "seqbox-"
SUPERVISOR_PREFIX = "seqbox-sup-"

#: kinds of limit, nearest first
RUN, ENCLOSING_RUN, CONTAINER, CGROUP, MACHINE = "run", "enclosing-run", "container", "cgroup", "machine"


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
    if name.startswith(NODE_PREFIX) and not name.startswith(SUPERVISOR_PREFIX):
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
        try:
            size = None if limit is None else cgroupfs.parse_limit(limit)
        except ValueError:
            size = None
        return LimitHit(kind, size, path)
