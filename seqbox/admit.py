"""Admission: may this run start? The one place that takes a turn in the
project's queue and hands it on.

``with Admission(run, limits) as admission:`` arrives in the lock's line
(unless nested inside a running holder, or ``--no-lock``: then the turn is a
:class:`~seqbox.turn.FreeTurn`), with ``--budget`` behind the memory gate.
:meth:`Admission.wait` waits for the turn with the first try's command parked,
ends what a crashed holder before us left running, and passes the git guard;
:meth:`Admission.release` hands the turn on as soon as the last try's tree is
gone; leaving the ``with`` hands it on in any case and tidies the queue.
"""

from __future__ import annotations

import os
import time

from seqbox.errors import SeqboxError
from seqbox.interrupts import Interrupted
from seqbox.spawn import abandon
from seqbox.turn import FreeTurn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.limits import Limits
    from seqbox.lockbudget import BudgetRun
    from seqbox.records import Entry, SandboxInfo
    from seqbox.runner import Run
    from seqbox.spawn import Prepared
    from seqbox.turn import Turn

CANCELLED = "cancelled by 'seqbox kill --all' before it started; run it again when you want it"


class CancelledRun(SeqboxError):
    """``seqbox kill --all`` cancelled this run while it waited."""

    exit_code = 143


class Admission:
    """One run's way through the queue: arrive, wait, hold, hand on."""

    def __init__(self, run: Run, limits: Limits) -> None:
        self.run = run
        #: the run's limits (within an enclosing run's, when nested)
        self.limits = limits
        self.nested = False
        #: with --budget: (our reservation, the budget), recorded in our entries
        self.reserved: tuple[int, int] | None = None
        #: with --budget: what we reserve and why, our suspension (seqbox/lockbudget.py)
        self.budget_run: BudgetRun | None = None
        #: seconds spent waiting for the turn (0 when nothing was queued for)
        self.waited = 0.0
        self.turn: Turn | FreeTurn = FreeTurn()
        self._admitted = False
        self._start: float | None = None

    @property
    def lock(self) -> str | None:
        """The lock the run queues in (None with ``--no-lock``)."""
        return None if self.run.options.no_lock else self.run.options.lock

    def __enter__(self) -> Admission:
        self.turn = self._arrive()
        return self

    def __exit__(self, *exc: object) -> None:
        self.turn.__exit__(*exc)

    def _arrive(self) -> Turn | FreeTurn:
        """Take a number in the lock's queue, unless nested or ``--no-lock``."""
        run, options = self.run, self.run.options
        if options.no_lock or self._nest():
            return FreeTurn()
        gate = None
        if options.budget is not None:  # memory admission: --reserve, learned, or --mem (section 3b)
            from seqbox.admission import gate_for
            from seqbox.lockbudget import plan

            given = None if run.scope is None else run.scope.lock_budget  # the lock slice's (laptop path)
            gate = gate_for(options.lock, self.limits.mem, options.budget, given)
            self.budget_run = plan(gate, run, self.limits)
            self.reserved = (gate.need, gate.budget)
        from seqbox.policies import for_lock
        from seqbox.tickets import arrive
        from seqbox.turn import Turn

        ticket = arrive(run.key, options.lock, {**self.entry(), "arrived": time.time()})
        run.out.info(f'joined the queue of lock "{options.lock}"')
        return Turn(ticket, for_lock(options.slots, gate))

    def _nest(self) -> bool:
        """Inside a running holder of this project: no queue (waiting would
        deadlock), and limits within its own."""
        from seqbox.nesting import enclosing_holder

        holder = enclosing_holder(self.run.key, self.run.environ)
        if holder is None:
            return False
        self.nested = True
        self.limits = nested_limits(self.limits, holder)
        self.run.out.info(
            f"nested inside pid {holder.get('pid')} (lock {holder.get('lock')!r}): "
            "not queueing; limits nest inside its sandbox"
        )
        return True

    def entry(self) -> Entry:
        """What this run writes in its ticket, and later in its slot."""
        if self._start is None:
            from seqbox.backends import procinfo

            self._start = procinfo.start_time(os.getpid())
        limits = self.limits
        entry: Entry = {
            "pid": os.getpid(),
            "start": self._start,
            "command": self.run.argv,
            "cwd": os.path.abspath(self.run.options.cwd or os.getcwd()),  # status tells two runs apart by it
            "run_id": self.run.run_id,
            "lock": self.run.options.lock,
            "mem": limits.mem,
            "pids": limits.pids,
            "warn_at": limits.warn_at if limits.mem else None,
        }
        if self.reserved is not None:
            entry["reservation"], entry["budget"] = self.reserved
        if self.budget_run is not None:
            entry["reserved_how"] = self.budget_run.how
        return entry

    # -- while the first try's command is parked --------------------------------

    def wait(self, prepared: Prepared) -> None:
        """Wait for our turn (and the git guard) with the command parked; once
        admitted, return at once. On any failure the parked child is abandoned
        before the error goes up."""
        if self._admitted:
            return
        start = time.monotonic()
        try:
            self._wait_turn()
            self.waited = time.monotonic() - start if self.turn.queued else 0.0
            self._log_lock(self.waited, True)
            if not self.turn.previous_ended:
                self._end_crashed_holder(self.turn.previous)
            self._guard_git()
        except BaseException:
            if self.turn.queued and not self.waited:
                self._log_lock(time.monotonic() - start, False)
            abandon(prepared)
            raise
        self._admitted = True

    def _wait_turn(self) -> None:
        from seqbox.queue import Cancelled

        turn, options = self.turn, self.run.options
        if not turn.queued:
            return
        from seqbox.waitline import WaitLine

        line = WaitLine(self.run.out, options.lock, turn.number)
        try:
            turn.wait(timeout=options.wait_timeout, on_wait=line, tick=line.tick)
        except Cancelled:
            raise CancelledRun(CANCELLED) from None
        except Interrupted:  # kill --all marks the waiters cancelled, then sends SIGTERM
            if turn.cancelled():
                raise CancelledRun(CANCELLED) from None
            raise
        finally:
            line.done()

    def _guard_git(self) -> None:
        run = self.run
        if not self.nested and os.path.basename(run.argv[0]) == "git":
            from seqbox import gitguard

            gitguard.wait_for_index_lock(
                run.options.cwd or os.getcwd(),
                on_wait=lambda path: run.out.note(f"waiting for {path} to go away"),
            )

    def _end_crashed_holder(self, previous: Entry | None) -> None:
        """If the run that held our slot before us did not hand it over in
        order, its supervisor died holding it, and its tree may still run: end
        it before our command starts. The common case costs one look at the
        previous entry's mark; only a crash costs more."""
        if previous is None or previous.get("ended"):
            return
        from seqbox.backends.cgroup import leftovers

        run = self.run
        ended = leftovers.end_run(previous)
        for path in leftovers.find(run.key, run.trees):  # anything else a crash of this project left
            if leftovers.remove(path):
                ended.append(path)
        if ended:
            names = ", ".join(sorted({os.path.basename(path) for path in ended}))
            run.out.note(
                f"the run before (pid {previous.get('pid')}) died; ended what it left running: {names}"
            )

    def _log_lock(self, waited: float, got: bool) -> None:
        if self.run.log is not None:
            self.run.log.event("lock", lock=self.lock, waited_s=round(waited, 3), got=got, nested=self.nested)

    # -- while a try runs -------------------------------------------------------

    def describe(self, sandbox: SandboxInfo) -> None:
        """Where the next try's tree runs (written into our slot)."""
        self.turn.describe(sandbox)

    def started(self) -> None:
        """The command runs: leave the line (a free slot can go to the next run now)."""
        self.turn.started()

    def release(self) -> None:
        """The last try's tree is gone: the next run starts now."""
        self.turn.hand_over()


def nested_limits(limits: Limits, holder: Entry) -> Limits:
    """A nested run's limits: within the enclosing holder's. Its warning is
    enough when it samples the same tree against the same limit (one line, not
    one per level)."""
    nested = limits.nested_in(holder.get("mem"), holder.get("pids"))
    outer_warn = holder.get("warn_at")
    if (
        isinstance(outer_warn, (int, float))
        and nested.mem == holder.get("mem")
        and (nested.warn_at is None or outer_warn <= nested.warn_at)
    ):
        nested.warn_at = None
    return nested
