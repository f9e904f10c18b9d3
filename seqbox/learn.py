"""Admission that learns (section 3b): pure decisions over plain numbers.

* what a run reserves under ``--budget``: ``--reserve``, else what the
  project's history says runs of the same key really used, else ``--mem``;
* the key runs share a learned reservation under (``--key``, by default the
  command line and its directory relative to the project);
* which running holder of a lock freezes when the lock's total nears its
  budget, and which frozen one thaws first when it has room again.

The facts come in as numbers (see seqbox/suspend.py and seqbox/ceiling.py for
where they are read and what is done with the answers).
"""

from __future__ import annotations

import json
import os

from seqbox.errors import UsageError
from seqbox.history import log_paths
from seqbox.units import format_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

MIB = 1 << 20
#: a learned reservation needs this many finished runs of the key...
MIN_RUNS = 3
#: ...among the project's newest this many
WINDOW = 20
#: on top of the largest peak
MARGIN = 0.20
#: a learned reservation is never below this
FLOOR = 64 * MIB
#: the lock's total above this share of its budget freezes a run
FREEZE_AT = 0.90
#: and below this share the first frozen run thaws
THAW_BELOW = 0.75
#: a run within its reservation counts as growing when its usage rose by more
#: than this over the last GROW_WINDOW_S (a run that holds what it filled does not)
GROWING = 4 * MIB
GROW_WINDOW_S = 0.5

GIVEN = "given"
LEARNED = "learned"
MEM = "mem"


class Past:
    """A finished run of the project, as learning sees it."""

    __slots__ = ("key", "limit", "peak", "status")

    def __init__(self, key: str | None, peak: int | None, limit: int | None, status: str | None) -> None:
        self.key = key
        self.peak = peak
        self.limit = limit
        self.status = status

    def needed(self) -> int | None:
        """What the run needed: its peak; its limit when it was killed for memory."""
        if self.status == "memory" and self.limit is not None:
            return max(self.limit, self.peak or 0)
        return self.peak

    def __repr__(self) -> str:
        return f"Past({self.key!r}, peak={self.peak}, limit={self.limit}, status={self.status!r})"


def learned(key: str, history: Sequence[Past], mem: int | None) -> int | None:
    """The reservation the history teaches for ``key``, or None when it does
    not know enough: at least :data:`MIN_RUNS` finished runs of the key among
    the newest :data:`WINDOW` (``history`` is newest first); their largest need
    plus :data:`MARGIN`, at least :data:`FLOOR`, at most ``mem``."""
    needs = [n for past in history[:WINDOW] if past.key == key and (n := past.needed()) is not None]
    if len(needs) < MIN_RUNS:
        return None
    size = max(int(max(needs) * (1 + MARGIN)), FLOOR)
    return size if mem is None else min(size, mem)


def reservation(
    mem: int | None, budget: int, reserve: int | None, key: str, history: Sequence[Past]
) -> tuple[int, str]:
    """(what the run reserves, how it was chosen: ``given``, ``learned`` or ``mem``).
    A run with no ``--mem`` reserves the whole budget unless told or taught less."""
    if reserve is not None:
        return reserve, GIVEN
    size = learned(key, history, mem)
    if size is not None:
        return min(size, budget), LEARNED
    return (budget if mem is None else mem), MEM


def check_reserve(reserve: int | None, mem: int | None) -> None:
    """``--reserve`` above ``--mem`` is refused."""
    if reserve is not None and mem is not None and reserve > mem:
        raise UsageError(
            f"--reserve {format_size(reserve)} is above --mem {format_size(mem)}",
            hint="a run can never use more than its --mem: reserve at most that",
        )


def default_key(argv: Sequence[str], cwd: str, root: str) -> str:
    """The command line and its working directory relative to the project
    (``.`` at its root): the same command from another folder learns apart."""
    where = os.path.relpath(os.path.abspath(cwd), os.path.abspath(root))
    if where.startswith(".."):  # outside the project (SEQBOX_PROJECT elsewhere): the full path
        where = os.path.abspath(cwd)
    return " ".join(argv) + " @ " + where


def how_text(size: int, how: str) -> str:
    """``reserves 480.0 MiB (learned)``, for the waiting line, status and the log."""
    return f"{format_size(size)} ({'--mem' if how == MEM else how})"


# -- suspension ------------------------------------------------------------------


class Holding:
    """A running holder of a lock with a budget, as suspension sees it."""

    __slots__ = ("frozen_since", "grew", "name", "reservation", "since", "usage")

    def __init__(
        self,
        name: str,
        usage: int,
        reservation: int,
        *,
        frozen_since: float | None = None,
        since: float = 0.0,
        grew: int = 0,
    ) -> None:
        self.name = name
        self.usage = usage
        self.reservation = reservation
        #: when it was frozen (epoch seconds), None while it runs
        self.frozen_since = frozen_since
        self.since = since
        #: how much its usage rose over the last GROW_WINDOW_S (see :func:`growth`)
        self.grew = grew

    def __repr__(self) -> str:
        return (
            f"Holding({self.name!r}, {self.usage}, {self.reservation}, frozen={self.frozen_since}, "
            f"grew={self.grew})"
        )


def growth(samples: Sequence[tuple[float, int]], now: float) -> int:
    """How much a run's usage rose over the last :data:`GROW_WINDOW_S`: the
    newest of its ``(time, usage)`` samples less the lowest of those in the
    window (0 with fewer than two)."""
    recent = [usage for at, usage in samples if now - at <= GROW_WINDOW_S]
    return max(0, recent[-1] - min(recent)) if len(recent) > 1 else 0


def to_freeze(holdings: Sequence[Holding], total: int, budget: int) -> str | None:
    """The holder to freeze now, or None, once the lock's ``total`` is above
    :data:`FREEZE_AT` of ``budget``:

    * the running holder furthest over its reservation (the youngest among
      equals);
    * with none over, a run within its reservation that is growing, only when
      the total plus what the growing runs may still take (each up to its
      reservation) would pass the budget: frozen runs hold what admission
      promised them, and the lock's ceiling would kill. Then the growing run
      that may still take the most freezes.

    Otherwise nobody. A run that holds what it filled is left alone: freezing
    gives no memory back (the total stays above the line after a freeze: the
    rule chose among every runner before, and froze one run within its
    reservation after another until a single one ran), and a frozen run
    gives back what it holds only later. The last running holder is never
    frozen: someone must go on to free memory."""
    if total <= FREEZE_AT * budget:
        return None
    running = [h for h in holdings if h.frozen_since is None]
    if len(running) < 2:
        return None
    over = [h for h in running if h.usage > h.reservation]
    if over:
        return max(over, key=lambda h: (h.usage - h.reservation, h.since)).name
    growing = [h for h in running if h.grew > GROWING]
    # none growing: the total is above the line by what no run took beyond its
    # reservation (page cache, seqbox's own processes in a lock's slice)
    if not growing or total + sum(h.reservation - h.usage for h in growing) <= budget:
        return None
    return max(growing, key=lambda h: (h.reservation - h.usage, h.since)).name


def freezing(holdings: Sequence[Holding], total: int, budget: int) -> list[str]:
    """Every holder that :func:`to_freeze` would choose, one after another,
    as the runs it chose froze (a freeze gives no memory back: the total stays):
    each holder freezes at its first look if it is among them, instead of one
    run per round of samples. Memory fills at ~2 GiB/s; the tenth of the budget
    between the freezing line and the lock's ceiling can go in a fraction of a
    second (bench/admission.py's overshoot: two runs over their reservations and
    a big one filling within its own reached the ceiling while they froze one
    sample apart)."""
    board = list(holdings)
    chosen: list[str] = []
    while (name := to_freeze(board, total, budget)) is not None:
        chosen.append(name)
        board = [
            Holding(h.name, h.usage, h.reservation, frozen_since=h.since, since=h.since, grew=h.grew)
            if h.name == name
            else h
            for h in board
        ]
    return chosen


def to_thaw(holdings: Sequence[Holding], total: int, budget: int) -> str | None:
    """The frozen holder to thaw now, or None: the first frozen, once the lock's
    ``total`` is below :data:`THAW_BELOW` of ``budget``, or at once when none
    runs any more (nothing else would free memory)."""
    frozen = [h for h in holdings if h.frozen_since is not None]
    if not frozen:
        return None
    running = any(h.frozen_since is None for h in holdings)
    if running and total >= THAW_BELOW * budget:
        return None
    return min(frozen, key=lambda h: (h.frozen_since or 0.0, h.since)).name


# -- the history, read from the run logs ------------------------------------------

#: the end of a log read for its exit event (one line: the summary)
TAIL_BYTES = 8192


def read_history(log_dir: str, window: int = WINDOW) -> list[Past]:
    """The project's newest ``window`` runs, newest first, from their run logs:
    only the first line (the ``start`` event, with the key) and the last (the
    ``exit`` event) of each are read. A run without an exit (running, crashed)
    has no peak to learn from."""
    return [past for path in log_paths(log_dir)[:window] if (past := _past(path)) is not None]


def _past(path: str) -> Past | None:
    try:
        with open(path, "rb") as f:
            first = f.readline()
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        start, end = json.loads(first.decode("utf-8", "replace")), json.loads(tail.decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None
    if not isinstance(start, dict) or not isinstance(end, dict) or end.get("event") != "exit":
        return None
    summary = end.get("summary")
    if not isinstance(summary, dict):
        return None
    key = start.get("key")
    peak, limit, status = summary.get("peak_mem_bytes"), summary.get("mem_limit_bytes"), summary.get("status")
    return Past(
        key if isinstance(key, str) else None,
        peak if isinstance(peak, int) else None,
        limit if isinstance(limit, int) else None,
        status if isinstance(status, str) else None,
    )
