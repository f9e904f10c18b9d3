"""A run's turn in a lock's queue: a ticket (a place in the line), then a slot.

:meth:`Turn.wait` is one deadline loop: while someone waits ahead, sleep on
their ticket (woken when they start or die); at the head, ask the lock's
policy (:mod:`seqbox.policies`) for a slot, and sleep on it until something
changes. :class:`FreeTurn` is the turn of a run that queues for nothing
(``--no-lock``, or nested): its wait returns at once.
"""

from __future__ import annotations

import os
import time

from seqbox import flocks
from seqbox.deadline import Deadline
from seqbox.errors import LockTimeout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from seqbox.policies import Policy
    from seqbox.queue import QueueView
    from seqbox.records import Entry, SandboxInfo
    from seqbox.slots import Slot
    from seqbox.tickets import Ticket

    #: called while the wait goes on: (a way to look at the queue, seconds waited)
    WaitHook = Callable[[Callable[[], QueueView], float], None]


class Turn:
    """A place in the queue, then (after :meth:`wait`) a held slot.

    A context manager: leaving the ``with`` gives the place (or the slot) back
    and tidies the lock's files. :meth:`hand_over` gives the slot back early
    (the next run starts) and leaves the tidying to the end of the ``with``.
    """

    queued = True

    def __init__(self, ticket: Ticket, policy: Policy) -> None:
        self.ticket = ticket
        self.policy = policy
        self.lockdir = ticket.lockdir
        self.number = ticket.number
        self.info = ticket.info
        self.slot: Slot | None = None

    def __enter__(self) -> Turn:
        return self

    def __exit__(self, *exc: object) -> None:
        from seqbox.housekeeping import tidy  # (this module is on every run's path; the queue is not)

        self.hand_over()
        self.policy.close()
        if self.lockdir.fd >= 0:
            tidy(self.lockdir)
            self.lockdir.close()

    @property
    def lock(self) -> str:
        return self.lockdir.lock

    @property
    def previous(self) -> Entry | None:
        """Who held our slot before us, as its slot file said."""
        return None if self.slot is None else self.slot.previous

    @property
    def previous_ended(self) -> bool:
        """Whether who held our slot before us handed it over in order (one
        look at its file; :attr:`previous` parses it)."""
        return self.slot is None or self.slot.previous_ended

    def wait(self, *, timeout: float | None, on_wait: WaitHook | None = None, tick: float = 1.0) -> None:
        """Block until this turn holds a slot. Raises LockTimeout or Cancelled.

        ``on_wait`` is called whenever the wait goes on (at least every ``tick``
        seconds) with a way to look at the queue (a lock probe of every entry):
        it decides whether to print, and looks only then.
        """
        deadline = Deadline(timeout)
        try:
            self.slot = self._wait(deadline, on_wait, tick)
        finally:
            self.policy.close()
        # From now on, the next holder can end our tree if we die. Since when we
        # hold it (for status, and for a budget's look at the holders): the command
        # starts within a millisecond, unless the git guard waits.
        self.slot.write({**self.info, "since": time.time()})
        if self.cancelled():
            from seqbox.queue import Cancelled

            self.hand_over()
            raise Cancelled

    def cancelled(self) -> bool:
        """Whether ``seqbox kill --all`` marked this waiter cancelled."""
        return self.number <= self.lockdir.cancel_mark()

    def _wait(self, deadline: Deadline, on_wait: WaitHook | None, tick: float) -> Slot:
        from seqbox.queue import view

        while True:
            ahead = self.ticket.ahead()
            if ahead is None:
                slot = self.policy.take(self.lockdir)
                if slot is not None:
                    return slot
                self.ticket.show(self.policy.waiting_for)
            now = time.monotonic()
            if deadline.expired(now):
                if ahead is not None:
                    os.close(ahead)
                raise LockTimeout(f"gave up waiting for lock {self.lock!r} after {deadline.limit:g}s")
            if on_wait is not None:
                on_wait(lambda: view(self.lockdir), now - deadline.start)
            at = deadline.at
            seconds = tick if at is None else max(0.001, min(tick, at - now))
            if ahead is not None:  # woken when the waiter ahead starts or dies
                try:
                    flocks.wait_lock(ahead, exclusive=False, tick=seconds)
                finally:
                    os.close(ahead)
            else:
                slot = self.policy.block(self.lockdir, seconds)
                if slot is not None:
                    return slot

    def describe(self, sandbox: SandboxInfo) -> None:
        """Where our tree will run: written into the slot as soon as we hold it."""
        self.info = {**self.info, **sandbox}

    def started(self) -> None:
        """The command runs: leave the line (the waiter behind us wakes)."""
        self.ticket.leave()

    def hand_over(self) -> None:
        """Give the place (or the slot) back: the next run starts at once."""
        self.ticket.leave()
        if self.slot is not None:
            self.slot.hand_over()

    def others_wait(self) -> bool:
        """Whether another run is in the line (one listing of the lock's directory)."""
        return self.lockdir.fd >= 0 and any(n != self.number for n in self.lockdir.tickets())


class FreeTurn:
    """The turn of a run that queues for nothing: the same interface, and
    waiting for it returns at once."""

    queued = False
    number = 0
    previous: Entry | None = None
    previous_ended = True

    def __enter__(self) -> FreeTurn:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def wait(self, *, timeout: float | None, on_wait: WaitHook | None = None, tick: float = 1.0) -> None:
        pass

    def cancelled(self) -> bool:
        return False

    def describe(self, sandbox: SandboxInfo) -> None:
        pass

    def started(self) -> None:
        pass

    def hand_over(self) -> None:
        pass

    def others_wait(self) -> bool:
        return False
