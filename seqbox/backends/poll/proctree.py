"""The process tree the poll backend watches: every descendant of seqbox.

Two readers with one interface:

* :class:`LinuxProcTree` reads /proc directly. seqbox is a child subreaper, so
  every orphan of the tree is re-parented to it and the tree is exactly what
  ``/proc/<pid>/task/<tid>/children`` reaches from seqbox. Each member's
  ``children``, ``statm`` and ``stat`` files stay open: one pread each per
  sample, and an open /proc file pins its process, so a pid reused by an
  unrelated process can never be mistaken for a member. Cost: a few reads per
  member, not per process on the machine.
* :class:`PsutilProcTree` (macOS, BSD) looks at every new pid once: a member
  if its parent is one or if it carries the run's marker in its environment;
  it remembers every member (with its create time), since orphans are
  re-parented to launchd there. On Linux ``SEQBOX_POLL_READER=psutil`` selects
  it (a test switch: the suite runs the macOS code path on Linux).

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

    def mark(self, name: str, value: str, since: float) -> None:  # noqa: B027 - optional hook
        """Members carry ``name=value`` in their environment and started after
        ``since`` (epoch seconds): a reader that cannot keep orphans attached
        recognises them by it."""

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
    """The tree by psutil's documented, portable calls (``pids``, ``Process.ppid``,
    ``create_time``, ``memory_info().rss``, ``memory_full_info().uss``,
    ``num_threads``, ``status``, ``environ``, ``send_signal``): what runs on
    macOS and BSD, where seqbox cannot be a subreaper and an orphan is
    re-parented to launchd (pid 1).

    Membership is decided once per process, when its pid first shows up in
    ``psutil.pids()``: it is a member if its parent is one (or seqbox), or if
    its environment carries the run's marker (an orphan whose parent exited
    before any sample saw it; where the system lets seqbox read that
    environment). A member stays one after re-parenting: it is remembered as a
    ``psutil.Process``, which holds its create time, so a reused pid is never
    measured long nor signalled (psutil checks the create time before every
    signal). A pid that leaves the listing is forgotten.
    """

    def __init__(self, root: int | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.root = os.getpid() if root is None else root
        self.tracked: dict[int, psutil.Process] = {}
        self.threads: dict[int, int] = {}
        self.marker: tuple[str, str] | None = None
        self.since = 0.0
        # every process already there is no member: look at new pids only
        self.judged: set[int] = set(psutil.pids())
        self.reads = 0

    def mark(self, name: str, value: str, since: float) -> None:
        self.marker = (name, value)
        self.since = since

    def _marked(self, proc: psutil.Process) -> bool:
        if self.marker is None:
            return False
        name, value = self.marker
        try:
            if proc.create_time() < self.since:
                return False
            return proc.environ().get(name) == value
        except self._psutil.Error:  # gone, or not ours to read (AccessDenied)
            return False

    def _adopt(self, proc: psutil.Process) -> None:
        self.tracked[proc.pid] = proc
        try:
            self.threads[proc.pid] = proc.num_threads()
        except self._psutil.Error:
            self.threads[proc.pid] = 1

    def _walk(self) -> None:
        ps = self._psutil
        listed = set(ps.pids())
        for pid in [pid for pid in self.tracked if pid not in listed]:
            del self.tracked[pid]
            self.threads.pop(pid, None)
        self.judged &= listed  # a pid that left the listing may come back as another process
        fresh = listed - self.judged - self.tracked.keys()
        fresh.discard(self.root)
        if not fresh:
            return
        parents: dict[int, tuple[psutil.Process, int]] = {}
        for pid in fresh:
            try:
                proc = ps.Process(pid)
                parents[pid] = (proc, proc.ppid())
            except ps.Error:
                continue  # gone already
        self._adopt_children(parents)
        for pid, (proc, _) in list(parents.items()):
            if self._marked(proc):
                self._adopt(proc)
                del parents[pid]
        self._adopt_children(parents)  # children of the orphans just found
        self.judged.update(parents)

    def _adopt_children(self, parents: dict[int, tuple[psutil.Process, int]]) -> None:
        """Adopt (and remove from ``parents``) every process whose parent is a member."""
        found = True
        while found:
            found = False
            for pid, (proc, ppid) in list(parents.items()):
                if ppid == self.root or ppid in self.tracked:
                    self._adopt(proc)
                    del parents[pid]
                    found = True

    def read(self, *, full: bool = False) -> Reading:
        self.reads += 1
        full = full or self.reads % FULL_SCAN_EVERY == 1
        self._walk()
        ps = self._psutil
        rss = procs = tasks = 0
        for pid, proc in list(self.tracked.items()):
            try:
                if full:
                    if not proc.is_running():  # another process has this pid now
                        raise ps.NoSuchProcess(pid)
                    if proc.status() == ps.STATUS_ZOMBIE:
                        continue
                    self.threads[pid] = proc.num_threads()
                rss += proc.memory_info().rss
            except ps.Error:
                self.tracked.pop(pid, None)
                self.threads.pop(pid, None)
                continue
            procs += 1
            tasks += self.threads.get(pid, 1)
        return Reading(rss, procs, tasks, rss)

    def pss(self) -> int | None:
        """No proportional set size outside Linux: the unique set sizes (pages only
        one process maps) plus the largest shared part of any member (pages
        shared among the tree, as copy-on-write after fork leaves them, count
        once). Exact when the members share one set of pages; never more than
        the resident total."""
        ps = self._psutil
        unique = shared = 0
        for proc in list(self.tracked.values()):
            try:
                info = proc.memory_full_info()
            except ps.Error:
                continue
            uss = getattr(info, "uss", info.rss)
            unique += uss
            shared = max(shared, info.rss - uss)
        return unique + shared

    def members(self) -> list[int]:
        self._walk()
        ps = self._psutil
        alive = []
        for pid, proc in list(self.tracked.items()):
            try:
                if proc.is_running() and proc.status() != ps.STATUS_ZOMBIE:
                    alive.append(pid)
            except ps.Error:
                continue
        return alive

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
        return not self.members()

    def close(self) -> None:
        self.tracked.clear()
        self.threads.clear()
