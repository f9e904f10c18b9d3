"""The culprit: which processes of a tree were the biggest when it came near
its memory limit.

Pure functions on a list of ``(pid, command, rss_bytes)``: the supervisor
reads the processes (seqbox/topprocs.py), this module chooses and words them.
A run's summary names them (``culprit``) when it was stopped for memory or
its peak came within 10 % of its limit.
"""

from __future__ import annotations

from seqbox.units import format_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from seqbox.records import Culprit

#: how many processes the culprit names at most
TOP = 3
#: a peak at or above this share of the limit is "near": the summary names a culprit
NEAR_LIMIT = 0.9


def top(processes: Iterable[tuple[int, int]], n: int = TOP) -> list[tuple[int, int]]:
    """The ``n`` biggest ``(pid, rss_bytes)`` by resident memory, biggest first
    (a tie goes to the lower pid: the older process, usually the parent).
    Processes with nothing resident (zombies, kernel threads) are left out."""
    ranked = sorted((p for p in processes if p[1] > 0), key=lambda p: (-p[1], p[0]))
    return ranked[:n]


def entries(chosen: Iterable[tuple[int, str, int]]) -> list[Culprit]:
    """The summary's ``culprit`` list from ``(pid, command, rss_bytes)``."""
    return [{"pid": pid, "command": command, "rss_bytes": rss} for pid, command, rss in chosen]


def threshold(mem: int | None, warn_at: float | None) -> int | None:
    """Usage in bytes above which the supervisor reads the tree per process:
    the warning threshold, and never later than :data:`NEAR_LIMIT` of the limit
    (None: no memory limit, no culprit)."""
    if not mem:
        return None
    share = min(warn_at, NEAR_LIMIT) if warn_at else NEAR_LIMIT
    return int(share * mem)


def wanted(status: str, peak: int | None, limit: int | None) -> bool:
    """Whether a run's summary names a culprit: stopped for memory, or its
    peak came within 10 % of its limit."""
    if status == "memory":
        return True
    return bool(limit and peak and peak >= NEAR_LIMIT * limit)


def phrase(entry: Culprit) -> str:
    """One process for a person: ``pid 4242 (python3 hog.py, 900.0 MiB)``."""
    return f"pid {entry['pid']} ({entry['command']}, {format_size(entry['rss_bytes'])})"


#: why a memory kill names no process: the tree went from below the warning line
#: to the limit between two looks (the kernel enforces the limit on its own)
UNSEEN = "it grew too fast for seqbox to see which process was biggest"


def kill_hint(culprit: list[Culprit] | None) -> str:
    """What the memory kill line adds: the biggest process, and the next step
    (which promises the report's list only when there is one)."""
    step = "raise --mem if it needs more, or make it use less"
    if not culprit:
        return f"; {step} ({UNSEEN})"
    return f"; biggest: {phrase(culprit[0])}; {step} ('seqbox report' lists the biggest processes)"


def from_json(value: object) -> list[Culprit]:
    """A ``culprit`` read back from a log or a report: the well-formed entries."""
    found: list[Culprit] = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        pid, command, rss = item.get("pid"), item.get("command"), item.get("rss_bytes")
        if isinstance(pid, int) and isinstance(command, str) and isinstance(rss, int):
            found.append({"pid": pid, "command": command, "rss_bytes": rss})
    return found
