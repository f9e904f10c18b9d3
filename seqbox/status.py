"""What ``seqbox status`` shows: per lock of a project, the running command
(pid, command, elapsed, memory, processes, backend) and the waiters in order."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from seqbox.backends.cgroup import crashed
from seqbox.backends.usage import usage_of
from seqbox.describe import where
from seqbox.housekeeping import project_locks
from seqbox.queue import view
from seqbox.state import trees_dir
from seqbox.suspend import frozen_runs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from seqbox.records import BudgetStatus, Entry, LockStatus, OrphanStatus, RunningStatus, Status


def collect(project_key: str, project_root: str, environ: Mapping[str, str] | None = None) -> Status:
    now = time.time()
    locks: list[LockStatus] = []
    for lockdir in project_locks(project_key, environ):
        try:
            queue = view(lockdir)
        finally:
            lockdir.close()
        if not queue.holders and not queue.waiters:
            continue
        frozen = (
            frozen_runs(project_key, lockdir.lock, environ)
            if _budget(queue.holders, [])["budget_bytes"]
            else {}
        )
        locks.append(
            {
                "lock": lockdir.lock,
                **_budget(queue.holders, queue.waiters),
                "running": [_holder(h, now, project_root, frozen) for h in queue.holders],
                "waiting": [
                    {
                        "position": i,
                        "pid": w.get("pid"),
                        "command": w.get("command"),
                        "cwd": where(w.get("cwd"), project_root),
                        "waiting_s": round(now - w.get("arrived", now), 1),
                        "waiting_for": w.get("waiting_for"),
                    }
                    for i, w in enumerate(queue.waiters, 1)
                ],
            }
        )
    return {"project": project_root, "locks": locks, "orphaned": orphaned(project_key, environ)}


def orphaned(project_key: str, environ: Mapping[str, str] | None = None) -> list[OrphanStatus]:
    """Trees of crashed runs of the project that still run (``seqbox clean`` ends them)."""
    found: list[OrphanStatus] = []
    groups = [(leftover.name, leftover.pids()) for leftover in crashed.find_whole(project_key)]
    groups += crashed.orphaned_trees(project_key, trees_dir(environ))
    for name, pids in groups:
        if pids:
            commands = [c for c in (crashed.command_of(pid) for pid in pids) if c]
            found.append({"name": name, "processes": len(pids), "commands": commands})
    return found


def _budget(holders: list[Entry], waiters: list[Entry]) -> BudgetStatus:
    """The lock's memory budget (as its newest run with one set it) and how much
    of it the holders reserve; None when no run of the lock has a budget."""
    budgets = [e["budget"] for e in (*holders, *waiters) if "budget" in e]
    if not budgets:
        return {"budget_bytes": None, "reserved_bytes": None}
    return {"budget_bytes": budgets[-1], "reserved_bytes": sum(e.get("reservation", 0) for e in holders)}


def _holder(entry: Entry, now: float, project_root: str, frozen: Mapping[str, float]) -> RunningStatus:
    mem, procs = usage_of(entry)
    since = entry.get("since")
    return {
        "pid": entry.get("pid"),
        "command": entry.get("command"),
        "cwd": where(entry.get("cwd"), project_root),
        "elapsed_s": round(now - since, 1) if since is not None else None,
        "mem_bytes": mem,
        "mem_limit_bytes": entry.get("mem"),
        "procs": procs,
        "backend": entry.get("backend"),
        "reservation_bytes": entry.get("reservation"),
        "reservation_how": entry.get("reserved_how"),
        "frozen": entry.get("run_id") in frozen,
        "run_id": entry.get("run_id"),
    }
