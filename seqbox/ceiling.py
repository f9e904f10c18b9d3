"""A kernel ceiling per lock (section 3b): the runs of a lock with a budget
live under one parent cgroup whose memory limit is the budget (swap closed).

However wrong a learned reservation is, the lock's runs together never take
more than the budget: the kernel holds them to it. The parent is named
``seqboxlock-<lock>@<project key>`` and sits where the run's own cgroup would
have gone. The first run makes it (and sets its limit), the last removes it:
removal is a plain ``rmdir``, which the kernel refuses (EBUSY) while a run's
cgroup is still inside, and a run that finds the parent gone between making it
and making its own cgroup in it makes it again. So no lock is needed between
concurrent runs. A crashed run's cgroup inside a parent is found by the
leftover search (seqbox/backends/cgroup/leftovers.py looks inside parents), and an
empty parent is removed by the next run and by ``seqbox clean``.

The poll backend has no parent: suspension alone keeps its runs in budget.
"""

from __future__ import annotations

import errno
import os
import time

from seqbox.backends.base import LOCK_PREFIX as PREFIX
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.cgroup import leftovers
from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import TypeVar

    T = TypeVar("T")

#: how often a run tries again when the parent vanished under it (another run's last rmdir)
ATTEMPTS = 5


class Ceiling:
    """The parent cgroup a run of a lock with a budget goes into."""

    __slots__ = ("budget", "lock", "name")

    def __init__(self, lock: str, project_key: str, budget: int) -> None:
        self.lock = lock
        self.budget = budget
        self.name = dir_name(lock, project_key)

    def __repr__(self) -> str:
        return f"Ceiling({self.name!r}, {self.budget})"


def dir_name(lock: str, project_key: str) -> str:
    """Lock names have no ``@``: the name splits back unambiguously."""
    return f"{PREFIX}{lock}@{project_key}"


def lock_of(name: str) -> str | None:
    """The lock a parent's directory name belongs to, or None."""
    if not name.startswith(PREFIX) or "@" not in name:
        return None
    return name[len(PREFIX) :].split("@", 1)[0] or None


def is_parent(path: str) -> bool:
    return os.path.basename(path.rstrip("/")).startswith(PREFIX)


def parent_of(cgroups: Iterable[str]) -> str | None:
    """The lock's parent among a sandbox's cgroups' parents, if any."""
    for path in cgroups:
        parent = os.path.dirname(path)
        if is_parent(parent):
            return parent
    return None


def within(base: str, ceiling: Ceiling, v2: bool, build: Callable[[str], T]) -> T:
    """Make (or join) the lock's parent under ``base`` and ``build`` the run's
    sandbox in it; again if another run removed the parent meanwhile."""
    for attempt in range(ATTEMPTS):
        try:
            return build(make(base, ceiling, v2))
        except BackendError:
            # gone (another run's last rmdir), or not set up yet (made by
            # another run a moment ago): look again
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")


def make(base: str, ceiling: Ceiling, v2: bool) -> str:
    """The parent under ``base``, made with its limit if it was not there."""
    parent = os.path.join(base, ceiling.name)
    control = os.path.join(base, "cgroup.subtree_control")
    try:
        os.mkdir(parent)
    except FileExistsError:
        if v2:  # this run may need a controller (cpu) the parent's first run did not
            _enable(parent, control)
        return parent
    except OSError as err:
        raise BackendError(f"cannot create the lock's cgroup {parent}: {err.strerror}") from None
    try:
        set_limit(parent, ceiling.budget, v2)
        if v2:
            _enable(parent, control)
    except BaseException:
        leave(parent)
        raise
    return parent


def set_limit(parent: str, budget: int, v2: bool) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    if v2:
        cgroupfs.write_checked(os.path.join(parent, "memory.max"), str(budget), page)
        swap = os.path.join(parent, "memory.swap.max")
        if os.path.exists(swap):
            cgroupfs.write_checked(swap, "0")
        return
    # v1: memsw may not be set below the memory limit: memory first
    cgroupfs.write_checked(os.path.join(parent, "memory.limit_in_bytes"), str(budget), page)
    memsw = os.path.join(parent, "memory.memsw.limit_in_bytes")
    if os.path.exists(memsw):
        cgroupfs.write_checked(memsw, str(budget), page)


def _enable(parent: str, base_control: str) -> None:
    """Give the parent's children the controllers its own parent gives it."""
    wanted = set((cgroupfs.try_read(base_control) or "").split())
    mine = os.path.join(parent, "cgroup.subtree_control")
    missing = wanted - set((cgroupfs.try_read(mine) or "").split())
    if missing:
        try:
            cgroupfs.write(mine, " ".join("+" + c for c in sorted(missing)))
        except BackendError:  # another run of the lock enabled them meanwhile, or the parent went
            if wanted - set((cgroupfs.try_read(mine) or "").split()):
                raise


def leave(parent: str) -> bool:
    """Remove the parent if no run's cgroup is left in it (the kernel decides:
    rmdir of a cgroup with children fails). True when it is gone."""
    try:
        os.rmdir(parent)
    except FileNotFoundError:
        return True
    except OSError as err:
        if err.errno in (errno.EBUSY, errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise BackendError(f"cannot remove the lock's cgroup {parent}: {err.strerror}") from None
    return True


def parents_in(places: Iterable[str], project_key: str | None = None) -> list[str]:
    """The lock parents directly under ``places`` (of one project, or all)."""
    found = []
    for place in places:
        try:
            names = os.listdir(place)
        except OSError:
            continue
        for name in names:
            if lock_of(name) is not None and (project_key is None or name.endswith("@" + project_key)):
                found.append(os.path.join(place, name))
    return sorted(found)


def sweep(project_key: str | None = None) -> list[str]:
    """Remove the empty lock parents (of one project, or all) that crashed runs
    left; a parent still holding a run's cgroup stays. Returns those removed."""
    removed = []
    for parent in parents_in(leftovers.places(), project_key):
        try:
            if leave(parent):
                removed.append(parent)
        except BackendError:
            continue
    return removed


def usage(parent: str) -> int | None:
    """The memory the lock's runs use together now (the parent's own counter)."""
    for name in ("memory.current", "memory.usage_in_bytes"):
        value = cgroupfs.read_int_or_none(os.path.join(parent, name))
        if value is not None:
            return value
    return None


def failcnt(parent: str) -> int | None:
    return cgroupfs.read_int_or_none(os.path.join(parent, "memory.failcnt"))
