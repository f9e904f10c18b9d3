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

On the laptop path (an unprivileged user whose seqbox asks its systemd user
manager for a delegated scope, seqbox/backends/systemd/scope.py) the parent
cannot be made beside the run's own cgroup: each run has its own scope, and a
parent made inside it would be the run's alone. There the lock's parent is a
slice of the user manager, ``seqboxlock-<lock@project key, escaped>.slice``
(:func:`~seqbox.backends.base.lock_slice_name`), whose ``MemoryMax`` is the
budget and ``MemorySwapMax`` 0: the scope step asks for it and puts the run's
scope into it (:func:`slice_dir`, :func:`slice_limit_fault`), and the backend
is handed its directory as the lock's parent. systemd owns that directory:
seqbox never removes it (:func:`leave`) and never stops the slice (which would
stop every run in it). An empty slice stays, with its limit, until the user
manager ends; it costs nothing, and the lock's next run reuses it.

The poll backend has no parent: suspension alone keeps its runs in budget.
"""

from __future__ import annotations

import errno
import os
import time

from seqbox.backends.base import LOCK_PREFIX as PREFIX
from seqbox.backends.base import is_lock_slice, lock_dir_parts
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
    """The lock a parent's directory name (or a lock's slice) belongs to, or None."""
    parts = lock_dir_parts(name)
    return None if parts is None else parts[0]


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
    rmdir of a cgroup with children fails). True when it is gone. A lock's
    systemd slice stays: its directory is systemd's (False)."""
    if is_lock_slice(parent):
        return False
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
            parts = lock_dir_parts(name)
            if parts is not None and (project_key is None or parts[1] == project_key):
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


def slice_dir(scope_dir: str, unit: str) -> str | None:
    """The lock's slice directory a run's scope sits in: ``scope_dir``'s parent
    when that is the slice ``unit``, else None."""
    parent = os.path.dirname(scope_dir.rstrip("/"))
    return parent if os.path.basename(parent) == unit else None


def slice_limit_fault(limit_text: str | None, swap_text: str | None, budget: int) -> str | None:
    """Pure: what is wrong with a lock slice's limits (its ``memory.max`` and
    ``memory.swap.max`` texts, None where the file is not there) for ``budget``,
    or None when they hold the lock's runs to it: a memory limit of at most the
    budget (the kernel rounds it down to pages), swap closed where it is counted."""
    limit = None if limit_text is None else cgroupfs.parse_limit(limit_text)
    if limit is None or limit > budget:
        shown = "no memory.max" if limit_text is None else f"memory.max {limit_text.strip()}"
        return f"its {shown} is not the budget {budget}"
    if swap_text is not None and swap_text.strip() != "0":
        return f"its memory.swap.max {swap_text.strip()} is not 0"
    return None


def slice_limit(path: str) -> int | None:
    """The memory limit of the slice directory ``path`` (None when it has none)."""
    text = cgroupfs.try_read(os.path.join(path, "memory.max"))
    return None if text is None else cgroupfs.parse_limit(text)


def slice_fault(path: str, budget: int) -> str | None:
    """:func:`slice_limit_fault` of the slice directory ``path``."""
    return slice_limit_fault(
        cgroupfs.try_read(os.path.join(path, "memory.max")),
        cgroupfs.try_read(os.path.join(path, "memory.swap.max")),
        budget,
    )
