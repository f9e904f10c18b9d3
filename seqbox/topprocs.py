"""Read the biggest processes of a tree now: resident memory of each pid, the
command line of the few chosen (the culprit, seqbox/culprit.py).

/proc where it exists (one read of ``statm`` per process, ``cmdline`` only for
the chosen), psutil elsewhere. A process that is gone by the time it is read
is left out.
"""

from __future__ import annotations

import os

from seqbox.culprit import TOP, top
from seqbox.describe import describe_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

#: where a Linux-style /proc answers
HAVE_PROC = os.path.isdir("/proc/self")
COMMAND_WIDTH = 80


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _rss_proc(pid: int, page: int) -> int:
    fields = _read(f"/proc/{pid}/statm").split()
    return int(fields[1]) * page if len(fields) > 1 else 0


def _command_proc(pid: int) -> list[str] | None:
    """The command line, or None when it reads empty (a process being killed)."""
    data = _read(f"/proc/{pid}/cmdline")
    return data.rstrip(b"\0").decode("utf-8", "replace").split("\0") if data else None


def _name_proc(pid: int) -> str | None:
    return _read(f"/proc/{pid}/comm").decode("utf-8", "replace").strip() or None


def _psutil_rss(pids: Iterable[int]) -> list[tuple[int, int]]:
    import psutil  # noqa: PLC0415 - only where there is no /proc

    found = []
    for pid in pids:
        try:
            found.append((pid, psutil.Process(pid).memory_info().rss))
        except psutil.Error:
            continue
    return found


def _psutil_command(pid: int) -> list[str] | None:
    import psutil  # noqa: PLC0415 - only where there is no /proc

    try:
        return psutil.Process(pid).cmdline() or None
    except psutil.Error:
        return None


def _psutil_name(pid: int) -> str | None:
    import psutil  # noqa: PLC0415 - only where there is no /proc

    try:
        return psutil.Process(pid).name() or None
    except psutil.Error:
        return None


def biggest(
    pids: Iterable[int], n: int = TOP, named: dict[int, str] | None = None
) -> tuple[list[tuple[int, str, int]], int]:
    """The ``n`` biggest live processes among ``pids`` (pid, command as a
    person writes it, resident bytes; biggest first), and the resident bytes
    of all of them together.

    ``named`` remembers the command lines of the last call's biggest, by pid: a
    process the kernel is killing (the OOM killer's victim, read as the
    notification comes) still shows its memory, but its command line reads
    empty then; it keeps the one read before (else it is shown as ``[comm]``,
    as ps does)."""
    if HAVE_PROC:
        page = os.sysconf("SC_PAGE_SIZE")
        sizes = [(pid, _rss_proc(pid, page)) for pid in pids]
        command, name = _command_proc, _name_proc
    else:
        sizes = _psutil_rss(pids)
        command, name = _psutil_command, _psutil_name
    found = []
    known = {} if named is None else named
    for pid, rss in top(sizes, n):
        argv = command(pid)
        if argv is not None:
            known[pid] = describe_command(argv, COMMAND_WIDTH)
        elif pid not in known:
            comm = name(pid)
            if comm is None:  # gone meanwhile
                continue
            known[pid] = describe_command([f"[{comm}]"], COMMAND_WIDTH)
        found.append((pid, known[pid], rss))
    if named is not None:  # only this call's biggest: a long run's many processes do not pile up
        named.clear()
        named.update((pid, command_text) for pid, command_text, _ in found)
    return found, sum(rss for _, rss in sizes)
