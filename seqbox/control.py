"""``seqbox kill`` and ``seqbox clean``: acting on other seqbox runs."""

from __future__ import annotations

import os
import signal

from seqbox import ceiling, housekeeping, queue
from seqbox.backends import procinfo
from seqbox.backends.cgroup import crashed, leftovers
from seqbox.describe import describe_command, plural
from seqbox.interrupts import KILL_REQUEST
from seqbox.state import trees_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from seqbox.records import Entry


def _signal(entry: Entry, sig: int) -> bool:
    """Signal the seqbox process an entry names, if it is still that process."""
    pid = entry.get("pid")
    if pid is None or not procinfo.is_alive(pid, entry.get("start")):
        return False
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill(
    project_key: str, lock: str | None, cancel_waiters: bool, environ: Mapping[str, str] | None = None
) -> tuple[list[Entry], list[Entry]]:
    """Kill the running sandbox(es) of the project's lock(s) at once; with
    ``cancel_waiters``, first make every waiter give up so none starts.

    Returns (killed holders, cancelled waiters).
    """
    killed: list[Entry] = []
    cancelled: list[Entry] = []
    for lockdir in housekeeping.project_locks(project_key, environ):
        try:
            if lock is not None and lockdir.lock != lock:
                continue
            if cancel_waiters:
                for waiter in housekeeping.cancel_waiters(lockdir):
                    if _signal(waiter, signal.SIGTERM):
                        cancelled.append({**waiter, "lock": lockdir.lock})
            for holder in queue.view(lockdir).holders:
                if _signal(holder, KILL_REQUEST):
                    killed.append({**holder, "lock": lockdir.lock})
        finally:
            lockdir.close()
    return killed, cancelled


def clean(environ: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Remove what crashed runs left: their cgroups (killing what still runs
    there), dead tickets, idle lock files. Returns (what was done, what could
    not be removed)."""
    done, failed = [], []
    for leftover in crashed.find_whole(everywhere=True):
        commands, not_removed = crashed.remove_whole(leftover)
        for parent in {os.path.dirname(p) for p in leftover.paths if ceiling.is_parent(os.path.dirname(p))}:
            if ceiling.leave(parent):  # the lock's parent it was the last run in (section 3b)
                done.append(f"removed the lock's cgroup {parent}")
        if commands:
            done.append(_killed(commands))
        if not_removed:
            failed.append(f"cgroup {leftover.name}: could not remove {'; '.join(not_removed)}")
        else:
            done.append(f"removed cgroup {leftover.name} ({leftover.where()})")
    done += [f"removed the lock's cgroup {path}" for path in ceiling.sweep()]  # emptied above (section 3b)

    trees = trees_dir(environ)
    for path in leftovers.find(None, trees):  # the poll backend's records of crashed runs
        if not path.startswith(trees + os.sep):
            continue
        commands = crashed.tree_commands(path)
        if commands:
            done.append(_killed(commands))
        if leftovers.remove(path):
            done.append(f"removed the processes recorded in {path}")
        else:
            failed.append(f"could not remove {path}")
    try:
        os.rmdir(trees)
    except OSError:
        pass
    for key in housekeeping.all_projects(environ):
        for lockdir in housekeeping.project_locks(key, environ):
            try:
                before = set(lockdir.tickets())
                queue.view(lockdir, prune=True)
                for number in sorted(before - set(lockdir.tickets())):
                    done.append(f"removed ticket {number} of a dead waiter (lock {lockdir.lock!r})")
                if housekeeping.tidy(lockdir):
                    done.append(f"removed idle lock files of {lockdir.lock!r} ({key})")
            finally:
                lockdir.close()
    return done, failed


def _killed(commands: list[str]) -> str:
    shown = ", ".join(f'"{describe_command(c, 50)}"' for c in commands[:3])
    shown += ", ..." if len(commands) > 3 else ""
    count = plural(len(commands), "process")
    return f"killed {count} a crashed run left running: {shown}"
