"""How much memory seqbox may count on: the machine's, the limit and usage of
every cgroup seqbox runs inside (a container's or a CI job's), and memory
pressure.

Pure parsers of the kernel's text files (tested on canned text), and
:func:`read_state`, which reads them through a ``read`` function: the real
files by default, canned ones in tests.
"""

from __future__ import annotations

import os

from seqbox.backends.base import LOCK_PREFIX
from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.host import LINUX

if not LINUX:  # where there is no /proc (importing psutil costs a --budget run ~15 ms)
    import psutil

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Reader = Callable[[str], "str | None"]

#: (limit file, usage file) of each cgroup version
V2_FILES = ("memory.max", "memory.current")
V1_FILES = ("memory.limit_in_bytes", "memory.usage_in_bytes")


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo -> {field: bytes} (``MemTotal:  24684084 kB``)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        if not words or not words[0].isdigit():
            continue
        scale = 1024 if len(words) > 1 and words[1].lower() == "kb" else 1
        values[name.strip()] = int(words[0]) * scale
    return values


def parse_pressure(text: str) -> float | None:
    """/proc/pressure/memory -> the ``some avg10`` share, in percent."""
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "some":
            for word in words[1:]:
                key, _, value = word.partition("=")
                if key == "avg10":
                    try:
                        return float(value)
                    except ValueError:
                        return None
    return None


def enclosing_dirs(proc_cgroup: str, mounts: list[cgroupfs.Mount]) -> list[tuple[str, tuple[str, str]]]:
    """The directories of the cgroups holding this process (its own and every
    ancestor up to the mount's root), each with its (limit file, usage file):
    the v2 hierarchy's and the v1 memory controller's."""
    paths = cgroupfs.parse_proc_cgroup(proc_cgroup)
    found: list[tuple[str, tuple[str, str]]] = []
    for mount in mounts:
        if mount.fstype == "cgroup2":
            path, files = paths.get(cgroupfs.UNIFIED), V2_FILES
        elif "memory" in mount.controllers:
            path, files = paths.get("memory"), V1_FILES
        else:
            continue
        if path is None or path.startswith("/.."):  # outside what this mount shows
            continue
        top = mount.path.rstrip("/") or "/"
        here = cgroupfs.host_path(mount, path)
        while True:
            found.append((here, files))
            if here == top or len(here) <= len(top):
                break
            here = os.path.dirname(here)
    return found


class Enclosing:
    """A cgroup above seqbox (or holding it) that limits memory."""

    __slots__ = ("limit", "path", "usage")

    def __init__(self, path: str, limit: int, usage: int) -> None:
        self.path = path
        self.limit = limit
        self.usage = usage

    def __repr__(self) -> str:
        return f"Enclosing({self.path!r}, limit={self.limit}, usage={self.usage})"


class MemoryState:
    """The memory facts of one moment."""

    __slots__ = ("available", "enclosing", "pressure", "total")

    def __init__(
        self, total: int, available: int, enclosing: list[Enclosing], pressure: float | None
    ) -> None:
        self.total = total
        self.available = available
        self.enclosing = enclosing
        #: memory pressure (``some avg10``, percent), None where the kernel has none
        self.pressure = pressure

    def ceiling(self) -> int:
        """The smallest of the machine's memory and every enclosing limit."""
        return min([self.total, *(c.limit for c in self.enclosing)])

    def available_now(self) -> int:
        """What could be allocated now: the machine's available memory, or an
        enclosing cgroup's limit minus its usage, whichever is smaller."""
        return max(0, min([self.available, *(c.limit - c.usage for c in self.enclosing)]))


def _usage(read: Reader, path: str, usage_file: str) -> int | None:
    """A cgroup's usage less its inactive file cache (the kernel reclaims that
    before it fails an allocation): the working set, as the kubelet counts it."""
    text = read(os.path.join(path, usage_file))
    if text is None or not text.strip().isdigit():
        return None
    stat = cgroupfs.parse_flat_keyed(read(os.path.join(path, "memory.stat")) or "")
    inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    return max(0, int(text.strip()) - inactive)


def enclosing_limits(read: Reader, dirs: list[tuple[str, tuple[str, str]]]) -> list[Enclosing]:
    """The cgroups among ``dirs`` that set a memory limit, with their usage.
    A lock's parent (seqbox/ceiling.py; on the laptop path the lock's slice
    around seqbox's own scope) is not one: its limit is the lock's budget
    itself, which admission counts in its own way."""
    found = []
    for path, (limit_file, usage_file) in dirs:
        if os.path.basename(path).startswith(LOCK_PREFIX):
            continue
        text = read(os.path.join(path, limit_file))
        limit = None if text is None else cgroupfs.parse_limit(text)
        if limit is None:
            continue
        usage = _usage(read, path, usage_file)
        found.append(Enclosing(path, limit, limit if usage is None else usage))
    return found


def read_state(read: Reader = cgroupfs.try_read, proc: str = "/proc") -> MemoryState:
    """The memory facts now (``read`` and ``proc`` let tests feed canned files)."""
    if not LINUX and read is cgroupfs.try_read:
        vm = psutil.virtual_memory()
        return MemoryState(vm.total, vm.available, [], None)
    info = parse_meminfo(read(f"{proc}/meminfo") or "")
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", total))
    mounts = cgroupfs.parse_mountinfo(read(f"{proc}/self/mountinfo") or "")
    dirs = enclosing_dirs(read(f"{proc}/self/cgroup") or "", mounts)
    psi = read(f"{proc}/pressure/memory")
    return MemoryState(
        total, available, enclosing_limits(read, dirs), None if psi is None else parse_pressure(psi)
    )
