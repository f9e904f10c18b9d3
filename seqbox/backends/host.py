"""Which platform this is: the one module that looks (a leaf: it imports
nothing of seqbox). Every other module asks it, or asks a backend."""

from __future__ import annotations

import os
import sys

#: Linux: cgroups, /proc, prctl, systemd may be here
LINUX = sys.platform.startswith("linux")
#: the platform's name, for messages
NAME = sys.platform
#: a Linux-style /proc (else psutil answers for processes)
HAVE_PROC = os.path.isdir("/proc/self")


def cgroup_layout(fstypes: list[tuple[str, bool]]) -> str:
    """Pure: ``v1``, ``v2``, ``hybrid`` or ``none``, from the cgroup mounts
    (each: its fstype, and whether it is a v1 mount with controllers)."""
    v1 = any(fstype == "cgroup" and controllers for fstype, controllers in fstypes)
    v2 = any(fstype == "cgroup2" for fstype, _ in fstypes)
    if v1 and v2:
        return "hybrid"
    return "v1" if v1 else "v2" if v2 else "none"
