"""A running holder's memory and processes, as ``seqbox status`` shows them.

A cgroup sandbox named the files to read (``mem_file``, ``procs_file``); a
polled tree is measured the way the poll backend measures it: every
descendant of the holder's supervisor (a child subreaper on Linux).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.host import LINUX
from seqbox.backends.poll.proctree import LinuxProcTree, ProcTree, PsutilProcTree


def usage_of(entry: Mapping[str, object]) -> tuple[int | None, int | None]:
    """(memory in bytes, processes) of the tree the queue entry describes;
    None where it cannot be read."""
    mem_file, procs_file = entry.get("mem_file"), entry.get("procs_file")
    if isinstance(mem_file, str) and isinstance(procs_file, str):
        procs_text = cgroupfs.try_read(procs_file)
        mem = cgroupfs.read_int_or_none(mem_file)
        return mem, (len(set(procs_text.split())) if procs_text is not None else None)
    pid = entry.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return None, None
    return tree_usage(pid)


def tree_usage(pid: int) -> tuple[int | None, int | None]:
    """What the poll backend would measure of ``pid``'s descendants."""
    tree: ProcTree = LinuxProcTree(root=pid) if LINUX else PsutilProcTree(root=pid)
    try:
        reading = tree.read(full=True)
    except OSError:
        return None, None
    finally:
        tree.close()
    return reading.mem, reading.procs
