"""A slot of a lock: ``slot-<k>``, flock'd by the run that holds it.

Taking a slot notes who held it before (:attr:`Slot.previous`): a holder that
handed over in order marked its entry ended; one that did not died holding it
(its flock went with its last fd: a zombie cannot fake that), and its tree may
still run.
"""

from __future__ import annotations

import os

from seqbox import flocks
from seqbox.queue import ENDED_MARK, LockDir, dumps, handed_over, parse_entry, ring, slot_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.records import Entry


class Slot:
    """A held slot, until :meth:`hand_over`."""

    __slots__ = ("_before", "_written", "fd", "k", "lockdir")

    def __init__(self, lockdir: LockDir, k: int, fd: int) -> None:
        self.lockdir = lockdir
        self.k = k
        self.fd: int | None = fd
        self._written = 0
        self._before = flocks.read_fd(fd)  # parsed only when asked for: the common case needs one look

    @property
    def previous_ended(self) -> bool:
        """Whether the holder before us handed over in order."""
        return handed_over(self._before)

    @property
    def previous(self) -> Entry | None:
        """Who held the slot before us, as the slot said when we took it."""
        try:
            return parse_entry(self._before)
        except ValueError:
            return None

    def write(self, info: Entry) -> None:
        """Say who holds the slot (the next holder reads it if we die)."""
        if self.fd is not None:
            data = dumps(info)
            flocks.write_fd(self.fd, data)
            self._written = len(data)

    def hand_over(self) -> None:
        """Give the slot back: the next run starts at once. The entry is marked
        ended first (an append, so it needs no new disk block), so the next
        holder knows our tree was ended."""
        if self.fd is None:
            return
        try:
            os.pwrite(self.fd, ENDED_MARK, self._written)
        except OSError:  # the next holder then ends what it finds of our tree: nothing
            pass
        os.close(self.fd)
        self.fd = None
        ring(self.lockdir.fd)


def try_take(lockdir: LockDir, k: int) -> Slot | None:
    """Slot ``k`` if nobody holds it now."""
    name = slot_name(k)
    fd = flocks.open_file(lockdir.fd, name)
    assert fd is not None
    if flocks.try_lock(fd) and flocks.still_linked(lockdir.fd, name, fd):
        return Slot(lockdir, k, fd)
    os.close(fd)
    return None


def wait_take(lockdir: LockDir, k: int, seconds: float) -> Slot | None:
    """Slot ``k``, waiting for it at most ``seconds``."""
    name = slot_name(k)
    fd = flocks.open_file(lockdir.fd, name)
    assert fd is not None
    if flocks.wait_lock(fd, exclusive=True, tick=seconds) and flocks.still_linked(lockdir.fd, name, fd):
        return Slot(lockdir, k, fd)
    os.close(fd)
    return None
