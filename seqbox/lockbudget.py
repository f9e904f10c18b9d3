"""A run of a lock with a budget (sections 3a, 3b), from ``seqbox run``'s side:
what it reserves and why, the lock's parent cgroup it goes into, and the
sandbox that suspends itself. Admission (seqbox/admit.py) calls :func:`plan`
once it has the run's gate; each try (seqbox/attempts.py) has its sandbox
wrapped by :meth:`BudgetRun.wrap`.

Only ``--budget`` brings this module in: it is not on ``seqbox run``'s hot path.
"""

from __future__ import annotations

import os

from seqbox import learn
from seqbox.ceiling import Ceiling, parent_of
from seqbox.errors import StateError
from seqbox.suspend import Board, Suspendable, frozen_runs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from seqbox.admission import Gate
    from seqbox.backends.base import Sandbox
    from seqbox.limits import Limits
    from seqbox.output import Output
    from seqbox.runlog import RunLog
    from seqbox.runner import Run


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

    def log_fields(self) -> dict[str, object]:
        """For the run log's ``start`` event (and so for learning: the key)."""
        return {"key": self.key, "reserved": self.reserved, "reserved_how": self.how, "budget": self.budget}

    def wrap(self, sandbox: Sandbox, run_id: str, out: Output, events: RunLog | None) -> Sandbox:
        """The try's sandbox, made to suspend itself by the lock's total."""
        try:
            board = Board(self.project_key, self.lock, self.environ)
        except (StateError, OSError) as err:  # no suspension, the kernel's ceiling still holds
            out.note(f"warning: cannot suspend this run for the budget: {err}")
            return sandbox
        parent = sandbox.lock_parent or parent_of(sandbox.cgroups)
        return Suspendable(
            sandbox, board=board, name=run_id, reservation=self.reserved, budget=self.budget,
            lock=self.lock, parent=parent, out=out, events=events,
        )  # fmt: skip


def plan(gate: Gate, run: Run, limits: Limits) -> BudgetRun:
    """Choose the run's reservation (``--reserve``, learned, or ``--mem``), set
    it in the gate, and put the run's cgroup under the lock's parent."""
    options, environ = run.options, run.environ
    learn.check_reserve(options.reserve, limits.mem)
    key = options.key or learn.default_key(run.argv, options.cwd or os.getcwd(), run.root)
    no_ceiling = None if run.scope is None else run.scope.no_ceiling
    if no_ceiling is not None:
        # in a delegated scope outside the lock's slice: no kernel ceiling holds the lock's runs
        # together, so only reservations of their whole --mem keep them in the budget (fail closed)
        run.out.note(
            f'warning: no memory ceiling for lock "{options.lock}" ({no_ceiling}): '
            "this run reserves its --mem, nothing learned"
        )
        reserved, how = learn.reservation(limits.mem, gate.budget, None, key, [])
    else:
        history: list[learn.Past] = []
        if options.reserve is None and run.log is not None:
            history = learn.read_history(os.path.dirname(run.log.path))
        reserved, how = learn.reservation(limits.mem, gate.budget, options.reserve, key, history)
        limits.ceiling = Ceiling(options.lock, run.key, gate.budget)
    gate.need = reserved
    gate.how = how
    gate.suspended = lambda: bool(frozen_runs(run.key, options.lock, environ))
    return BudgetRun(lock=options.lock, project_key=run.key, key=key, reserved=reserved, how=how,
                     budget=gate.budget, environ=environ)  # fmt: skip
