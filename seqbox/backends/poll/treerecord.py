"""A polled tree stays findable after its supervisor dies.

No cgroup holds a poll run's tree, so the run keeps a record of every member
it has seen (pid and start time) in a file of the per-user state directory,
named like a run's cgroups (``seqbox-<project>-<UTC time>-<supervisor pid>``)
and rewritten as new members appear; and its run id is in the command's
environment (``SEQBOX_RUN_ID``), which a member forked since the last sample
still carries. After a crash, the next run or ``seqbox clean`` ends every such
process that is still alive: the same pid and start time, or the run id in its
environment; only the user's own processes.
"""

from __future__ import annotations

import os
import signal

from seqbox.backends import procinfo
from seqbox.backends.base import RUN_ID_ENV
from seqbox.backends.host import HAVE_PROC

SUFFIX = ".tree"
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeRecord:
    """The file of one run's members, kept up to date by its sandbox."""

    def __init__(self, directory: str, name: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, name + SUFFIX)
        self.members: dict[int, float] = {}
        self._dir_fd: int | None = None
        self._broken = False

    def update(self, pids: list[int]) -> None:
        """Note the members not seen before (their start times) and rewrite
        the file when there are any. Best effort: a full disk only means the
        environment is all that finds them after a crash."""
        new = False
        for pid in pids:
            if pid not in self.members:
                start = procinfo.start_time(pid)
                if start is not None:
                    self.members[pid] = start
                    new = True
        if new and not self._broken:
            self._write()

    def _write(self) -> None:
        name = os.path.basename(self.path)
        text = "".join(f"{pid} {start!r}\n" for pid, start in self.members.items()).encode()
        try:
            if self._dir_fd is None:
                self._dir_fd = _open_private_dir(self.directory)
            fd = os.open(f".{name}.new", FLAGS, 0o600, dir_fd=self._dir_fd)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)
            os.rename(f".{name}.new", name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except OSError:
            self._broken = True

    def remove(self) -> None:
        """The tree is gone: forget it."""
        for path in (self.path, os.path.join(self.directory, f".{os.path.basename(self.path)}.new")):
            try:
                os.unlink(path)
            except OSError:
                pass
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
            try:
                os.rmdir(self.directory)  # the last record out removes the directory
            except OSError:
                pass


def _open_private_dir(path: str) -> int:
    """Make (0700) and open ``path``, never through a symlink, refusing a
    directory that is not the user's own."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if os.fstat(fd).st_uid != os.getuid():
        os.close(fd)
        raise PermissionError(f"{path} belongs to another user")
    return fd


def parse_record(text: str) -> list[tuple[int, float]]:
    """A record's ``pid start`` lines; torn or odd lines are skipped."""
    members = []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0].isdigit():
            try:
                members.append((int(words[0]), float(words[1])))
            except ValueError:
                continue
    return members


def read_record(path: str) -> list[tuple[int, float]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        with os.fdopen(fd, "r", encoding="ascii", errors="replace") as f:
            return parse_record(f.read())
    except OSError:
        return []


def carriers(run_id: str) -> list[int]:
    """The user's live processes whose environment holds ``SEQBOX_RUN_ID=run_id``."""
    if not HAVE_PROC:
        return []
    entry = f"{RUN_ID_ENV}={run_id}".encode()
    uid = os.getuid()
    mine = {os.getpid(), *(pid for pid, _ in procinfo.ancestors())}  # never seqbox or who started it
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in mine:
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                if entry in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return [pid for pid in found if procinfo.is_alive(pid, None)]


def end_tree(members: list[tuple[int, float]], run_id: str | None) -> list[int]:
    """SIGKILL what is left of a crashed run's tree: the recorded members still
    alive as the same process, and the processes carrying its run id. Stopped
    first, round after round, so that none can fork away. Returns the pids."""
    import time

    uid = os.getuid()
    ended: list[int] = []
    quiet = 0
    for _ in range(100):
        alive = [pid for pid, start in members if procinfo.is_alive(pid, start) and _owned(pid, uid)]
        fresh = [pid for pid in [*alive, *(carriers(run_id) if run_id else [])] if pid not in ended]
        if not fresh:
            # A process in the middle of an exec shows no environment for a
            # moment: look twice more before believing that none is left.
            quiet += 1
            if quiet > 2 or not run_id:
                break
            time.sleep(0.005)
            continue
        quiet = 0
        for pid in fresh:
            _send(pid, signal.SIGSTOP)
            ended.append(pid)
    for pid in ended:
        _send(pid, signal.SIGKILL)
    procinfo.wait_gone(ended)
    return ended


def _owned(pid: int, uid: int) -> bool:
    if uid == 0:
        return True
    try:
        return os.stat(f"/proc/{pid}").st_uid == uid
    except OSError:
        return not HAVE_PROC  # elsewhere the kill itself refuses what is not ours


def _send(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
