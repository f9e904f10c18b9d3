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
    data = _read(f"/proc/{pid}/cmdline")
    if not data:
        comm = _read(f"/proc/{pid}/comm").decode("utf-8", "replace").strip()
        return [f"[{comm}]"] if comm else None
    return data.rstrip(b"\0").decode("utf-8", "replace").split("\0")


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
        proc = psutil.Process(pid)
        return proc.cmdline() or [proc.name()]
    except psutil.Error:
        return None


def biggest(
    pids: Iterable[int], n: int = TOP, named: dict[int, str] | None = None
) -> tuple[list[tuple[int, str, int]], int]:
    """The ``n`` biggest live processes among ``pids`` (pid, command as a
    person writes it, resident bytes; biggest first), and the resident bytes
    of all of them together.

    ``named`` remembers each command line read, by pid, across calls: a process
    the kernel is killing (the OOM killer's victim, read as the notification
    comes) still shows its memory, but its command line reads empty then; it
    keeps the one read before (else it is shown as ``[comm]``, as ps does)."""
    if HAVE_PROC:
        page = os.sysconf("SC_PAGE_SIZE")
        sizes = [(pid, _rss_proc(pid, page)) for pid in pids]
        command = _command_proc
    else:
        sizes = _psutil_rss(pids)
        command = _psutil_command
    chosen = top(sizes, n)
    found = []
    known = {} if named is None else named
    for pid, rss in chosen:
        argv = command(pid)
        if argv is not None and not _unread(argv):
            known[pid] = describe_command(argv, COMMAND_WIDTH)
        if pid in known:
            found.append((pid, known[pid], rss))
        elif argv is not None:
            found.append((pid, describe_command(argv, COMMAND_WIDTH), rss))
    return found, sum(rss for _, rss in sizes)


def _unread(argv: list[str]) -> bool:
    """Whether ``argv`` stands for a command line that could not be read (``[comm]``)."""
    return len(argv) == 1 and argv[0].startswith("[") and argv[0].endswith("]")
