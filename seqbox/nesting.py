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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from seqbox.records import Entry


def enclosing_holder(project_key: str, environ: Mapping[str, str] | None = None) -> Entry | None:
    """The running holder (of any lock of the project) that this process runs
    under, or None."""
    from seqbox.housekeeping import project_locks
    from seqbox.queue import view

    holders: list[Entry] = []
    for lockdir in project_locks(project_key, environ):
        try:
            holders.extend(view(lockdir).holders)
        finally:
            lockdir.close()
    if not holders:
        return None
    from seqbox.backends import procinfo
    from seqbox.backends.cgroup.fs import own_cgroup_names

    ancestry = set(procinfo.ancestors())
    my_cgroups = own_cgroup_names()
    for holder in holders:
        if (holder.get("pid"), holder.get("start")) in ancestry:
            return holder
        if any(os.path.basename(path) in my_cgroups for path in holder.get("cgroups", [])):
            return holder
    return None
