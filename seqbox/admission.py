"""Memory admission (``--budget``): whether the head of a lock's line may start.

A run's reservation is its ``--mem`` (the whole budget when it has no limit),
held until its tree is gone. The head starts only while its reservation plus
the running holders' stays within the budget. With ``--budget auto`` it must
also fit into what is available now less what the holders may still grow into
(each up to its reservation), and memory pressure must be low.

Pure arithmetic: the facts come in as numbers, or through the callables a
:class:`Gate` is given.
"""

from __future__ import annotations

from seqbox.backends import memory
from seqbox.backends.usage import usage_of
from seqbox.errors import UsageError
from seqbox.learn import MEM
from seqbox.units import format_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from seqbox.records import Entry

    #: (available now, pressure in percent or None), read when the gate looks
    MachineReader = Callable[[], "tuple[int, float | None]"]
    #: a holder's current memory use from its slot entry, None when unknown
    UsageReader = Callable[[Entry], "int | None"]

MIB = 1 << 20
RESERVE_SHARE = 0.05
RESERVE_MIN = 256 * MIB
#: memory pressure (``some avg10``, percent) at or above which nobody new starts
PRESSURE_LIMIT = 10.0
AUTO = "auto"


def reserve(ceiling: int) -> int:
    """What ``--budget auto`` leaves for everything else: max(5 %, 256 MiB)."""
    return max(int(ceiling * RESERVE_SHARE), RESERVE_MIN)


def auto_budget(ceiling: int) -> int:
    return max(0, ceiling - reserve(ceiling))


def reservation(mem: int | None, budget: int) -> int:
    """A run's reservation: its ``--mem``, or the whole budget with no limit."""
    return budget if mem is None else mem


def check_can_fit(mem: int | None, budget: int, auto: bool = False) -> None:
    """A run whose ``--mem`` is larger than the budget can never start."""
    if mem is not None and mem > budget:
        named = f"auto ({format_size(budget)} here)" if auto else format_size(budget)
        raise UsageError(
            f"--mem {format_size(mem)} can never fit in --budget {named}",
            hint="lower --mem or raise --budget",
        )


class Holder:
    """A running holder of the lock, as admission sees it."""

    __slots__ = ("reservation", "since", "usage")

    def __init__(self, reservation: int, usage: int | None = None, since: float = 0.0) -> None:
        self.reservation = reservation
        #: its tree's memory now; None when unknown (counted as nothing used yet)
        self.usage = usage
        self.since = since


def room_to_grow(holders: Sequence[Holder]) -> int:
    """How much more the holders may still take, each up to its reservation."""
    return sum(max(0, h.reservation - (h.usage or 0)) for h in holders)


class Verdict:
    """Whether the head may start; if not, why, and whose leaving would help."""

    __slots__ = ("fits", "foreign", "free", "need", "pressure", "wait_on")

    def __init__(
        self,
        fits: bool,
        need: int,
        free: int,
        *,
        foreign: bool = False,
        wait_on: int | None = None,
        pressure: float | None = None,
    ) -> None:
        self.fits = fits
        self.need = need
        self.free = free
        #: the run fits the lock's budget but not the machine now (available
        #: memory, pressure): only a fresh look tells when that changes
        self.foreign = foreign
        #: the index of the holder whose leaving would help first, if any
        self.wait_on = wait_on
        self.pressure = pressure


def decide(
    need: int,
    holders: Sequence[Holder],
    budget: int,
    *,
    available: int | None = None,
    pressure: float | None = None,
) -> Verdict:
    """May a run reserving ``need`` start next to ``holders`` within ``budget``?

    ``available`` (what the machine or enclosing cgroup has now) and
    ``pressure`` are checked when given (``--budget auto``). A run that reserves
    the whole budget (no ``--mem``) waits only for the holders, not for the
    machine: no amount would be enough for it.
    """
    reserved = sum(h.reservation for h in holders)
    free = budget - reserved
    if need > free:
        return Verdict(False, need, max(0, free), wait_on=_helps_first(holders, need - free))
    if available is not None and need < budget:
        machine_free = available - room_to_grow(holders)
        if need > machine_free:
            free = max(0, min(free, machine_free))
            return Verdict(False, need, free, foreign=True, wait_on=_helps_first(holders, need - free))
    if pressure is not None and pressure >= PRESSURE_LIMIT:
        return Verdict(False, need, free, foreign=True, wait_on=_helps_first(holders, 0), pressure=pressure)
    return Verdict(True, need, free)


def _helps_first(holders: Sequence[Holder], short: int) -> int | None:
    """The oldest holder whose leaving alone would cover ``short``; else the oldest."""
    if not holders:
        return None
    order = sorted(range(len(holders)), key=lambda i: holders[i].since)
    for i in order:
        if holders[i].reservation >= short:
            return i
    return order[0]


def waiting_text(lock: str, verdict: Verdict, budget: int) -> str:
    """``waiting for memory on lock "agents": needs 2.0 GiB, 1.2 GiB of 8.0 GiB free``."""
    text = (
        f'waiting for memory on lock "{lock}": needs {format_size(verdict.need)}, '
        f"{format_size(verdict.free)} of {format_size(budget)} free"
    )
    if verdict.pressure is not None:
        text += f"; memory pressure {verdict.pressure:.0f}% (starts under {PRESSURE_LIMIT:.0f}%)"
    return text


class Gate:
    """The head of a lock's line asks this whether it may start now."""

    def __init__(
        self,
        lock: str,
        need: int,
        budget: int,
        *,
        machine: MachineReader | None = None,
        usage_of: UsageReader | None = None,
    ) -> None:
        self.lock = lock
        self.need = need
        self.budget = budget
        self.machine = machine
        self.usage_of = usage_of
        #: how ``need`` was chosen (seqbox/learn.py: given, learned, mem)
        self.how: str | None = None
        #: True while a holder of the lock is frozen for the budget: nobody starts then
        self.suspended: Callable[[], bool] | None = None

    def holder(self, entry: Entry) -> Holder:
        """A slot entry as admission sees it. A holder that recorded no
        reservation (a run of the same lock without ``--budget``) reserves its
        ``--mem``, or everything."""
        reserved = entry.get("reservation", entry.get("mem")) or self.budget
        usage = self.usage_of(entry) if self.machine is not None and self.usage_of is not None else None
        return Holder(reserved, usage, entry.get("since", 0.0))

    def check(self, entries: Sequence[Entry]) -> Verdict:
        holders = [self.holder(entry) for entry in entries]
        if self.suspended is not None and self.suspended():  # a run is frozen: no newcomer (3b)
            return Verdict(False, self.need, 0, foreign=True, wait_on=_helps_first(holders, 0))
        available = pressure = None
        if self.machine is not None:
            available, pressure = self.machine()
        return decide(self.need, holders, self.budget, available=available, pressure=pressure)

    def text(self, verdict: Verdict) -> str:
        text = waiting_text(self.lock, verdict, self.budget)
        if self.how is not None:  # what the run reserved, and why (section 3b)
            need = f"needs {format_size(verdict.need)}"
            text = text.replace(need, f"{need} ({'--mem' if self.how == MEM else self.how})", 1)
            if verdict.foreign and verdict.free == 0 and self.suspended is not None:
                text += "; a run is frozen for the budget"
        return text


def auto_budget_here() -> int:
    """``--budget auto`` on this machine now: :func:`auto_budget` of the ceiling
    above seqbox (the scope step asks it for a lock's slice, admission for its gate)."""
    return auto_budget(memory.read_state().ceiling())


def gate_for(lock: str, mem: int | None, budget: int | str, given: int | None = None) -> Gate:
    """The gate of a run of ``lock`` with ``--mem`` and ``--budget`` (a size or
    ``auto``; ``given``: the budget the lock's slice was given for it on the
    laptop path, which ``auto`` then is). Raises UsageError when the run can
    never fit."""
    if budget != AUTO:
        assert isinstance(budget, int)
        check_can_fit(mem, budget)
        return Gate(lock, reservation(mem, budget), budget)

    size = auto_budget_here() if given is None else given
    check_can_fit(mem, size, auto=True)

    def machine() -> tuple[int, float | None]:
        now = memory.read_state()
        return now.available_now(), now.pressure

    return Gate(
        lock, reservation(mem, size), size, machine=machine, usage_of=lambda entry: usage_of(entry)[0]
    )
