"""When the head of a lock's line may take a slot: one slot, N slots, or a
memory budget. Each policy has the same small interface:

* :meth:`Policy.take`: a slot now, or None (and what we wait for, if it says);
* :meth:`Policy.block`: sleep until something may have changed (a holder left,
  or at most ``seconds``); one slot is taken while blocking, by the kernel.

The wait around them is one loop (:meth:`seqbox.turn.Turn.wait`).
"""

from __future__ import annotations

import os
import select

from seqbox.queue import LockDir, holders, open_bell
from seqbox.slots import Slot, try_take, wait_take

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.admission import Gate

#: how often a head waiting for room looks again where holders cannot be watched
#: by pidfd (before Linux 5.3, and off Linux): a holder killed by SIGKILL rings no bell
HEAD_POLL_S = 0.02
#: how often a head waiting for room looks again anyway (a budget also depends on
#: what nothing rings for: the machine's available memory)
RECHECK_S = 0.5


class Policy:
    """When the head of the line may take a slot."""

    #: what the head waits for, shown in its ticket (None: its turn, plainly)
    waiting_for: str | None = None

    def take(self, lockdir: LockDir) -> Slot | None:
        """A slot now, or None."""
        raise NotImplementedError

    def block(self, lockdir: LockDir, seconds: float) -> Slot | None:
        """Sleep until something may have changed, at most ``seconds``; a slot
        when one was taken meanwhile."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what waiting used (the bell)."""


class OneSlot(Policy):
    """One slot: the head blocks on the slot's flock; the kernel hands it over."""

    def take(self, lockdir: LockDir) -> Slot | None:
        return try_take(lockdir, 0)

    def block(self, lockdir: LockDir, seconds: float) -> Slot | None:
        return wait_take(lockdir, 0, seconds)


class Slots(Policy):
    """Up to ``count`` holders at once: the head takes any free slot, and
    sleeps on the bell (a holder handing over rings it) and on a pidfd of each
    holder (which wakes it when one dies, even by SIGKILL)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.bell: int | None = None
        self.pids: list[int] = []

    def take(self, lockdir: LockDir) -> Slot | None:
        self.listen(lockdir)  # before looking, so that no leaving is missed
        slot = self.free_slot(lockdir)
        if slot is None:
            self.pids = [entry["pid"] for entry in holders(lockdir)]
        return slot

    def free_slot(self, lockdir: LockDir) -> Slot | None:
        for k in range(self.count):
            slot = try_take(lockdir, k)
            if slot is not None:
                return slot
        return None

    def block(self, lockdir: LockDir, seconds: float) -> Slot | None:
        wait_for_room(self.bell, self.pids, min(seconds, RECHECK_S))
        return None

    def listen(self, lockdir: LockDir) -> None:
        """Open the bell (made if missing) and empty it: rings from now on wake us."""
        if self.bell is None:
            self.bell = open_bell(lockdir.fd)
        if self.bell is not None:
            try:
                while os.read(self.bell, 4096):
                    pass
            except BlockingIOError:  # empty (we hold it open for writing too: never EOF)
                pass

    def close(self) -> None:
        if self.bell is not None:
            os.close(self.bell)
            self.bell = None


class Budget(Slots):
    """A memory budget: the head starts only while its reservation (the
    gate's ``need``, see :func:`seqbox.admission.reservation`) fits next to the
    holders'; ``count`` still caps how many run at once."""

    def __init__(self, count: int, gate: Gate) -> None:
        super().__init__(count)
        self.gate = gate

    def take(self, lockdir: LockDir) -> Slot | None:
        self.listen(lockdir)
        entries = holders(lockdir)
        verdict = self.gate.check(entries)
        if verdict.fits:
            slot = self.free_slot(lockdir)
            if slot is not None:
                return slot
        self.waiting_for = None if verdict.fits else self.gate.text(verdict)
        self.pids = [entry["pid"] for entry in entries]
        return None


def for_lock(slots: int, gate: Gate | None) -> Policy:
    """The policy of a lock with ``slots`` and, with ``--budget``, a gate."""
    if gate is not None:
        return Budget(slots, gate)
    return Slots(slots) if slots > 1 else OneSlot()


def wait_for_room(bell: int | None, pids: list[int], seconds: float) -> None:
    """Block until a holder leaves, for at most ``seconds``: in order (it rings
    the bell) or by dying, even by SIGKILL (its pidfd wakes us)."""
    pidfds: list[int] = []
    timeout = seconds
    try:
        for pid in pids:
            try:
                pidfds.append(os.pidfd_open(pid))
            except ProcessLookupError:  # it died since we looked: look again now
                return
            except (AttributeError, OSError):  # no pidfds here: look again soon
                timeout = min(seconds, HEAD_POLL_S)
        if bell is None:
            timeout = min(timeout, HEAD_POLL_S)
        poller = select.poll()
        for fd in ([] if bell is None else [bell]) + pidfds:
            poller.register(fd, select.POLLIN)
        poller.poll(max(1, int(timeout * 1000)))
    finally:
        for fd in pidfds:
            os.close(fd)
