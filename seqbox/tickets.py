"""A place in a lock's line: a numbered ticket, flock'd while its waiter lives.

An arrival takes the next number under the door lock and creates its ticket,
already locked, by renaming a locked temporary file into place. A waiter
blocks on the ticket of the live waiter just ahead of it, so waiters reach
the head in arrival order and the kernel wakes exactly one per handoff.
"""

from __future__ import annotations

import os
import time

from seqbox import flocks
from seqbox.errors import StateError
from seqbox.queue import DOOR, LockDir, dumps, ticket_name, unlink

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from seqbox.records import Entry


class Ticket:
    """Our place in the line, until we leave it (when our command starts, or we give up)."""

    __slots__ = ("fd", "info", "lockdir", "number", "shown")

    def __init__(self, lockdir: LockDir, number: int, fd: int, info: Entry) -> None:
        self.lockdir = lockdir
        self.number = number
        self.fd: int | None = fd
        self.info = info
        #: what the ticket says we wait for now (``waiting_for``), if anything
        self.shown: str | None = None

    def ahead(self) -> int | None:
        """A locked fd of the live waiter just ahead (dead ones are removed), or
        None when we are the head of the line."""
        for number in reversed(self.lockdir.tickets()):
            if number >= self.number:
                continue
            name = ticket_name(number)
            fd = flocks.open_file(self.lockdir.fd, name, create=False)
            if fd is None:
                continue
            if flocks.try_lock(fd, exclusive=False):  # nobody holds it: its waiter is gone
                unlink(self.lockdir.fd, name)
                os.close(fd)
                continue
            return fd
        return None

    def show(self, waiting_for: str | None) -> None:
        """Put what we wait for into the ticket, for the waiting line and ``status``."""
        if waiting_for == self.shown or self.fd is None:
            return
        self.shown = waiting_for
        info: Entry = {**self.info}
        if waiting_for is not None:
            info["waiting_for"] = waiting_for
        flocks.write_fd(self.fd, dumps(info))

    def leave(self) -> None:
        """Leave the line: the waiter behind us wakes."""
        if self.fd is not None:
            unlink(self.lockdir.fd, ticket_name(self.number))
            os.close(self.fd)
            self.fd = None


def arrive(project_key: str, lock: str, info: Entry, environ: Mapping[str, str] | None = None) -> Ticket:
    """Join the end of the line of ``lock``: take a number and a locked ticket."""
    for _ in range(100):
        lockdir = LockDir(project_key, lock, environ)
        door = flocks.open_file(lockdir.fd, DOOR)
        if door is None:  # the directory was tidied away under us
            lockdir.close()
            continue
        try:
            flocks.wait_lock(door, exclusive=True, tick=None)
            if not flocks.still_linked(lockdir.fd, DOOR, door):
                lockdir.close()
                continue
            text = flocks.read_fd(door).decode().strip()
            # Numbers are the arrival time in ns, kept increasing: they stay comparable
            # even after the last one out has tidied the directory away.
            number = max(time.time_ns(), (int(text) if text.isdigit() else 0) + 1)
            flocks.write_fd(door, str(number).encode())
            info = {**info, "number": number}
            return Ticket(lockdir, number, _make_ticket(lockdir.fd, number, info), info)
        except BaseException:
            lockdir.close()
            raise
        finally:
            os.close(door)
    raise StateError(f"cannot join the queue of lock {lock!r}: its directory keeps disappearing")


def _make_ticket(dir_fd: int, number: int, info: Entry) -> int:
    """Create ``t-<number>`` already locked: lock a temporary file, then rename."""
    temporary = f".new-{os.getpid()}-{number}"
    fd = os.open(temporary, flocks.FILE_FLAGS | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
    try:
        if not flocks.try_lock(fd):
            raise StateError("cannot lock a new ticket")
        flocks.write_fd(fd, dumps(info))
        os.rename(temporary, ticket_name(number), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return fd
    except BaseException:
        os.close(fd)
        unlink(dir_fd, temporary)
        raise
