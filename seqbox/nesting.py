"""Nested runs: ``seqbox run`` inside a command that seqbox already runs for
the same project skips the queue (waiting would deadlock).

The bypass is granted only to a real descendant of a running holder: the
holder's pid (with its start time, against pid reuse) is among this process's
ancestors, or this process sits inside the holder's cgroups (which also covers
a daemonized descendant that was re-parented). An environment variable alone
never grants it.
"""

from __future__ import annotations

import os

from seqbox import procinfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def own_cgroup_names() -> set[str]:
    """Every path component of this process's cgroups (all hierarchies)."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return set()
    names: set[str] = set()
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        names.update(part for part in path.split("/") if part)
    return names


def enclosing_holder(project_key: str, environ: Mapping[str, str] | None = None) -> dict[str, object] | None:
    """The running holder (of any lock of the project) that this process runs
    under, or None."""
    from seqbox.queue import project_locks, view

    holders = []
    for lockdir in project_locks(project_key, environ):
        try:
            holders.extend(view(lockdir).holders)
        finally:
            lockdir.close()
    if not holders:
        return None
    ancestry = set(procinfo.ancestors())
    my_cgroups = own_cgroup_names()
    for holder in holders:
        pid, start = holder.get("pid"), holder.get("start")
        if isinstance(pid, int) and (pid, start) in ancestry:
            return holder
        cgroups = holder.get("cgroups")
        if isinstance(cgroups, list) and any(
            isinstance(path, str) and os.path.basename(path) in my_cgroups for path in cgroups
        ):
            return holder
    return None
