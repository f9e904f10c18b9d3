"""The process tree the poll backend watches: every descendant of seqbox.

Two readers with one interface:

* :class:`LinuxProcTree` reads /proc directly. seqbox is a child subreaper, so
  every orphan of the tree is re-parented to it and the tree is exactly what
  ``/proc/<pid>/task/<tid>/children`` reaches from seqbox. Each member's
  ``children``, ``statm`` and ``stat`` files stay open: one pread each per
  sample, and an open /proc file pins its process, so a pid reused by an
  unrelated process can never be mistaken for a member. Cost: a few reads per
  member, not per process on the machine.
* :class:`PsutilProcTree` (macOS, BSD) asks psutil for the parent of every
  process and remembers every pid seen (with its create time), since orphans
  are re-parented to launchd there.

Each sample reads every member's resident set (statm): its total, and its
private part (resident minus file-backed and shared pages). The private sum is
what seqbox reports while the total stays under the limit: shared libraries are
not counted once per process. The total is an upper bound of what the kernel
would charge, so while it is under the limit, so is the tree. Above it,
:meth:`ProcTree.pss` measures exactly: each member's proportional set size,
where a page shared by n processes (copy-on-write after fork, shared memory)
counts 1/n in each.
"""

from __future__ import annotations

import abc
import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    import psutil

FULL_SCAN_EVERY = 10  # samples between walks of every thread's children


class Reading:
    """One look at the tree: private and total resident bytes, processes, tasks."""

    __slots__ = ("mem", "procs", "rss", "tasks")

    def __init__(self, mem: int, procs: int, tasks: int, rss: int | None = None) -> None:
        self.mem = mem
        self.procs = procs
        self.tasks = tasks
        self.rss = mem if rss is None else rss


class ProcTree(abc.ABC):
    #: every member being watched, by pid
    tracked: Mapping[int, object]

    @abc.abstractmethod
    def read(self, *, full: bool = False) -> Reading:
        """Find new members, drop the dead ones, and measure the tree."""

    def pss(self) -> int | None:
        """The tree's proportional set size in bytes (shared pages divided among
        the processes sharing them), or None where the system does not say."""
        return None

    @abc.abstractmethod
    def members(self) -> list[int]:
        """Every live member now (a full walk)."""

    @abc.abstractmethod
    def signal(self, pid: int, sig: int) -> bool:
        """Signal a member, never a process that reused its pid."""

    @abc.abstractmethod
    def is_empty(self) -> bool:
        """No live member left (zombies are gone already)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the reader holds open."""


# -- Linux -------------------------------------------------------------------------


class _Member:
    __slots__ = ("children", "pid", "stat", "statm", "threads")

    def __init__(self, pid: int, children: int | None, statm: int | None, stat: int | None) -> None:
        self.pid = pid
        self.children = children
        self.statm = statm
        self.stat = stat
        self.threads = 1


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.EMFILE, errno.ENFILE):
            return None  # out of descriptors: read by path instead (no pid-reuse guard)
        raise


def _pread(fd: int | None, path: str) -> bytes:
    """The file's content through its kept fd, or by path; b"" once the process is gone."""
    try:
        if fd is not None:
            return os.pread(fd, 65536, 0)
        with open(path, "rb") as f:
            return f.read()
    except (ProcessLookupError, FileNotFoundError):
        return b""
    except OSError as err:
        if err.errno in (errno.ESRCH, errno.ENOENT, errno.EINVAL):
            return b""
        raise


def parse_statm(data: bytes, page: int) -> tuple[int, int]:
    """/proc/<pid>/statm -> (resident bytes, private resident bytes: resident - shared)."""
    fields = data.split()
    if len(fields) < 3:
        return 0, 0
    resident, shared = int(fields[1]), int(fields[2])
    return resident * page, max(0, resident - shared) * page


def parse_smaps_rollup(data: bytes) -> int:
    """/proc/<pid>/smaps_rollup -> Pss in bytes."""
    for line in data.splitlines():
        if line.startswith(b"Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def parse_stat(data: bytes) -> tuple[str, int]:
    """/proc/<pid>/stat -> (state letter, number of threads)."""
    rest = data[data.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[17])


class LinuxProcTree(ProcTree):
    def __init__(self, root: int | None = None) -> None:
        self.root = os.getpid() if root is None else root
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.tracked: dict[int, _Member] = {}
        self.reads = 0

    def _track(self, pid: int) -> _Member | None:
        base = f"/proc/{pid}"
        try:
            stat = _open(f"{base}/stat")
        except OSError:
            return None  # gone already
        member = _Member(pid, None, None, stat)
        try:
            member.children = _open(f"{base}/task/{pid}/children")
            member.statm = _open(f"{base}/statm")
        except OSError:
            self._forget(member)
            return None
        self.tracked[pid] = member
        return member

    def _forget(self, member: _Member) -> None:
        for fd in (member.children, member.statm, member.stat):
            if fd is not None:
                os.close(fd)
        self.tracked.pop(member.pid, None)

    def _children_of(self, pid: int, member: _Member | None, every_thread: bool) -> list[int]:
        if member is not None and not every_thread:
            text = _pread(member.children, f"/proc/{pid}/task/{pid}/children")
            return [int(word) for word in text.split()]
        found: list[int] = []
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return found
        for tid in tids:
            found.extend(int(w) for w in _pread(None, f"/proc/{pid}/task/{tid}/children").split())
        return found

    def _walk(self, full: bool) -> None:
        """Reach every member from the root; track the new ones."""
        stack = self._children_of(self.root, None, every_thread=True)
        stack.extend(self.tracked)  # remembered members keep their place (and their children)
        seen: set[int] = set()
        while stack:
            pid = stack.pop()
            if pid in seen or pid == self.root:
                continue
            seen.add(pid)
            member = self.tracked.get(pid) or self._track(pid)
            if member is not None:
                stack.extend(self._children_of(pid, member, every_thread=full or member.threads > 1))

    def read(self, *, full: bool = False) -> Reading:
        self.reads += 1
        full = full or self.reads % FULL_SCAN_EVERY == 1
        self._walk(full)
        mem = rss = procs = tasks = 0
        for member in list(self.tracked.values()):
            statm = _pread(member.statm, f"/proc/{member.pid}/statm")
            if not statm:
                self._forget(member)  # it exited: its fds saw the process, not the pid
                continue
            if full:
                stat = _pread(member.stat, f"/proc/{member.pid}/stat")
                if not stat:
                    self._forget(member)
                    continue
                state, member.threads = parse_stat(stat)
                if state == "Z":
                    continue
            resident, private = parse_statm(statm, self.page)
            rss += resident
            mem += private
            procs += 1
            tasks += member.threads
        return Reading(mem, procs, tasks, rss)

    def pss(self) -> int | None:
        total = 0
        for member in list(self.tracked.values()):
            total += parse_smaps_rollup(_pread(None, f"/proc/{member.pid}/smaps_rollup"))
        return total

    def members(self) -> list[int]:
        self._walk(full=True)
        return [pid for pid, member in self.tracked.items() if self._alive(member)]

    def _alive(self, member: _Member) -> bool:
        stat = _pread(member.stat, f"/proc/{member.pid}/stat")
        return bool(stat) and parse_stat(stat)[0] != "Z"

    def signal(self, pid: int, sig: int) -> bool:
        member = self.tracked.get(pid)
        if member is None or not _pread(member.stat, f"/proc/{pid}/stat"):
            return False  # the process we tracked is gone; the pid may be someone else's
        try:
            os.kill(pid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def is_empty(self) -> bool:
        return not self.members()

    def close(self) -> None:
        for member in list(self.tracked.values()):
            self._forget(member)


# -- elsewhere: psutil -------------------------------------------------------------------


class PsutilProcTree(ProcTree):
    def __init__(self, root: int | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.root = os.getpid() if root is None else root
        self.tracked: dict[int, psutil.Process] = {}

    def _ppid_map(self) -> dict[int, int]:
        ppid_map = getattr(self._psutil, "_ppid_map", None)
        if ppid_map is not None:
            result: dict[int, int] = ppid_map()
            return result
        return {p.pid: p.info["ppid"] for p in self._psutil.process_iter(["ppid"])}  # pragma: no cover

    def _walk(self) -> None:
        ppids = self._ppid_map()
        for pid in [pid for pid in self.tracked if pid not in ppids]:
            del self.tracked[pid]
        children: dict[int, list[int]] = {}
        for pid, ppid in ppids.items():
            children.setdefault(ppid, []).append(pid)
        stack = [self.root, *self.tracked]
        seen = set(stack)
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
                    try:
                        self.tracked[child] = self._psutil.Process(child)
                    except self._psutil.Error:
                        pass

    def read(self, *, full: bool = False) -> Reading:
        self._walk()
        ps = self._psutil
        mem = rss = procs = tasks = 0
        for pid, proc in list(self.tracked.items()):
            try:
                if full and not proc.is_running():  # create time differs: the pid was reused
                    del self.tracked[pid]
                    continue
                info = proc.memory_info()
                rss += info.rss
                mem += max(0, info.rss - getattr(info, "shared", 0))
                if full:
                    tasks += proc.num_threads()
                procs += 1
            except ps.Error:
                del self.tracked[pid]
        return Reading(mem, procs, tasks, rss)

    def members(self) -> list[int]:
        self._walk()
        return list(self.tracked)

    def signal(self, pid: int, sig: int) -> bool:
        proc = self.tracked.get(pid)
        if proc is None:
            return False
        try:
            proc.send_signal(sig)  # psutil checks the create time first
            return True
        except self._psutil.Error:
            return False

    def is_empty(self) -> bool:
        self._walk()
        ps = self._psutil
        for proc in self.tracked.values():
            try:
                if proc.status() != ps.STATUS_ZOMBIE:
                    return False
            except ps.Error:
                continue
        return True

    def close(self) -> None:
        self.tracked.clear()
