"""A run of a lock with a budget (sections 3a, 3b), from ``seqbox run``'s side:
what it reserves and why, the lock's parent cgroup it goes into, and the
sandbox that suspends itself. The runner calls :func:`plan` once it knows its
admission gate, and :meth:`BudgetRun.wrap` for each try's sandbox.
"""

from __future__ import annotations

import os

from seqbox import learn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from seqbox.admission import Gate
    from seqbox.backends.base import Limits, Sandbox
    from seqbox.options import RunOptions
    from seqbox.output import Output
    from seqbox.runlog import RunLog
    from seqbox.suspend import Suspendable


class BudgetRun:
    """What a run of a lock with a budget reserves, and its suspension."""

    def __init__(
        self, *, lock: str, project_key: str, key: str, reserved: int, how: str, budget: int,
        environ: Mapping[str, str],
    ) -> None:  # fmt: skip
        self.lock = lock
        self.project_key = project_key
        self.key = key
        self.reserved = reserved
        #: given | learned | mem
        self.how = how
        self.budget = budget
        self.environ = environ
        self.sandboxes: list[Suspendable] = []

    @property
    def frozen_s(self) -> float:
        """Time frozen over every try."""
        return sum(s.frozen_s for s in self.sandboxes)

    def log_fields(self) -> dict[str, object]:
        """For the run log's ``start`` event (and so for learning: the key)."""
        return {"key": self.key, "reserved": self.reserved, "reserved_how": self.how, "budget": self.budget}

    def wrap(self, sandbox: Sandbox, run_id: str, out: Output, events: RunLog | None) -> Sandbox:
        """The try's sandbox, made to suspend itself by the lock's total."""
        from seqbox.ceiling import parent_of
        from seqbox.errors import StateError
        from seqbox.suspend import Board, Suspendable

        try:
            board = Board(self.project_key, self.lock, self.environ)
        except (StateError, OSError) as err:  # no suspension, the kernel's ceiling still holds
            out.note(f"warning: cannot suspend this run for the budget: {err}")
            return sandbox
        wrapped = Suspendable(
            sandbox, board=board, name=run_id, reservation=self.reserved, budget=self.budget,
            lock=self.lock, parent=parent_of(sandbox.cgroups), out=out, events=events,
        )  # fmt: skip
        self.sandboxes.append(wrapped)
        return wrapped


def plan(
    gate: Gate,
    options: RunOptions,
    limits: Limits,
    argv: list[str],
    project_key: str,
    root: str,
    log_dir: str | None,
    environ: Mapping[str, str],
) -> BudgetRun:
    """Choose the run's reservation (``--reserve``, learned, or ``--mem``), set
    it in the gate, and put the run's cgroup under the lock's parent."""
    from seqbox.ceiling import Ceiling

    learn.check_reserve(options.reserve, limits.mem)
    key = options.key or learn.default_key(argv, options.cwd or os.getcwd(), root)
    history: list[learn.Past] = []
    if options.reserve is None and log_dir is not None:
        history = learn.read_history(log_dir)
    reserved, how = learn.reservation(limits.mem, gate.budget, options.reserve, key, history)
    gate.need = reserved
    gate.how = how
    gate.suspended = lambda: bool(_frozen(project_key, options.lock, environ))
    limits.ceiling = Ceiling(options.lock, project_key, gate.budget)
    return BudgetRun(lock=options.lock, project_key=project_key, key=key, reserved=reserved, how=how,
                     budget=gate.budget, environ=environ)  # fmt: skip


def _frozen(project_key: str, lock: str, environ: Mapping[str, str]) -> dict[str, float]:
    from seqbox.suspend import frozen_runs

    return frozen_runs(project_key, lock, environ)
