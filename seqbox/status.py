"""What ``seqbox status`` shows: per lock of a project, the running command
(pid, command, elapsed, memory, processes, backend) and the waiters in order."""

from __future__ import annotations

import os
import time

from seqbox.backends import cgroupfs
from seqbox.queue import project_locks, view

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def collect(
    project_key: str, project_root: str, environ: Mapping[str, str] | None = None
) -> dict[str, object]:
    now = time.time()
    locks = []
    for lockdir in project_locks(project_key, environ):
        try:
            queue = view(lockdir)
        finally:
            lockdir.close()
        if not queue.holders and not queue.waiters:
            continue
        locks.append(
            {
                "lock": lockdir.lock,
                "running": [_holder(h, now) for h in queue.holders],
                "waiting": [
                    {
                        "position": i,
                        "pid": w.get("pid"),
                        "command": w.get("command"),
                        "waiting_s": round(now - _seconds(w.get("arrived"), now), 1),
                    }
                    for i, w in enumerate(queue.waiters, 1)
                ],
            }
        )
    return {"project": project_root, "locks": locks}


def _seconds(value: object, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) else default


def _holder(entry: dict[str, object], now: float) -> dict[str, object]:
    mem, procs = _usage(entry)
    since = entry.get("since")
    return {
        "pid": entry.get("pid"),
        "command": entry.get("command"),
        "elapsed_s": round(now - since, 1) if isinstance(since, (int, float)) else None,
        "mem_bytes": mem,
        "procs": procs,
        "backend": entry.get("backend"),
        "run_id": entry.get("run_id"),
    }


def _usage(entry: dict[str, object]) -> tuple[int | None, int | None]:
    mem_file, procs_file = entry.get("mem_file"), entry.get("procs_file")
    if isinstance(mem_file, str) and isinstance(procs_file, str):
        mem_text = cgroupfs.try_read(mem_file)
        procs_text = cgroupfs.try_read(procs_file)
        mem = int(mem_text.split()[0]) if mem_text else None
        return mem, (len(set(procs_text.split())) if procs_text is not None else None)
    return _tree_usage(entry.get("pid"))


def _tree_usage(pid: object) -> tuple[int | None, int | None]:
    """RSS and process count of a poll-backend supervisor's tree."""
    if not isinstance(pid, int) or pid == os.getpid():
        return None, None
    import psutil

    try:
        tree = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return None, None
    total = 0
    for proc in tree:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total, len(tree)
