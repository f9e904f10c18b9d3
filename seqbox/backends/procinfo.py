"""Who a process is: its parent and its start time (pid + start time identify a
process across pid reuse). /proc where it exists, psutil elsewhere (macOS)."""

from __future__ import annotations

import os

from seqbox.backends.host import HAVE_PROC


def parse_proc_stat(text: str) -> tuple[int, int]:
    """/proc/<pid>/stat -> (ppid, start time in clock ticks since boot).

    The command name (field 2) may hold spaces and parentheses: split after
    its last ')'.
    """
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[19])


def identity(pid: int) -> tuple[int, float] | None:
    """(ppid, start time) of ``pid``, or None when it does not exist.

    The start time is comparable only with other values from this function.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            ppid, start = parse_proc_stat(f.read())
        return ppid, float(start)
    except FileNotFoundError:
        if HAVE_PROC:
            return None
    except (OSError, ValueError, IndexError):
        return None
    return _identity_psutil(pid)


def _identity_psutil(pid: int) -> tuple[int, float] | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.ppid(), proc.create_time()
    except psutil.Error:
        return None


def pid_namespace(pid: int | str = "self") -> str | None:
    """The pid namespace ``pid`` is in (``pid:[4026531836]``), or None when
    that cannot be read (gone, or another user's)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def parse_nspid(status: str) -> int | None:
    """/proc/<pid>/status -> the process's pid in its own pid namespace (the
    last of ``NSpid:``, which lists it from the reader's namespace inwards)."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            words = line.split()[1:]
            return int(words[-1]) if words and words[-1].isdigit() else None
    return None


def in_namespace(namespace: str) -> dict[int, int]:
    """Every process of the pid namespace ``namespace`` that this process can
    see: {its pid there: its pid here}."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or pid_namespace(name) != namespace:
            continue
        try:
            with open(f"/proc/{name}/status", encoding="utf-8", errors="replace") as f:
                inner = parse_nspid(f.read())
        except OSError:
            continue
        if inner is not None:
            found[inner] = int(name)
    return found


def start_time(pid: int) -> float | None:
    info = identity(pid)
    return None if info is None else info[1]


def is_alive(pid: int, started: float | None) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (not a zombie)."""
    if pid <= 0:
        return False
    info = identity(pid)
    if info is None or (started is not None and info[1] != started):
        return False
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except OSError:
        pass
    return True


def ancestors(pid: int | None = None) -> list[tuple[int, float]]:
    """(pid, start time) of every ancestor of ``pid`` (default: this process)."""
    chain: list[tuple[int, float]] = []
    info = identity(os.getpid() if pid is None else pid)
    while info is not None and info[0] > 0:  # pid 1 counts: seqbox may be a container's init
        ppid = info[0]
        info = identity(ppid)  # read once: it gives this ancestor's start and the next ppid
        if info is None or any(ppid == seen for seen, _ in chain):
            break
        chain.append((ppid, info[1]))
    return chain


_BOOT_TIME: float | None = None


def _boot_time() -> float:
    global _BOOT_TIME
    if _BOOT_TIME is None:
        with open("/proc/stat", encoding="utf-8") as f:
            for line in f:
                if line.startswith("btime "):
                    _BOOT_TIME = float(line.split()[1])
                    break
            else:  # pragma: no cover - every Linux has btime
                _BOOT_TIME = 0.0
    return _BOOT_TIME


def started_epoch(pid: int) -> float | None:
    """When ``pid`` started, in seconds since the epoch (None: not running)."""
    info = identity(pid)
    if info is None:
        return None
    if HAVE_PROC:
        return _boot_time() + info[1] / os.sysconf("SC_CLK_TCK")
    return info[1]  # psutil's create_time is already an epoch


def wait_gone(pids: list[int], timeout: float = 2.0) -> list[int]:
    """Wait until none of ``pids`` runs any more (a SIGKILLed process takes a
    moment to exit); return those still running at ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    delay = 0.0005
    while pids:
        pids = [pid for pid in pids if is_alive(pid, None)]
        if not pids or time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return pids
