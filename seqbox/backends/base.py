"""The enforcement backend interface.

A :class:`Backend` knows whether it can work here (``probe``) and makes a
:class:`Sandbox` for one run. A sandbox starts the command inside itself and
answers for the whole tree: usage, whether the memory limit was hit, kill
everything, clean up.
"""

from __future__ import annotations

import abc
import os
import signal

from seqbox.limits import Limits as Limits  # noqa: PLC0414 - its home moved; re-exported
from seqbox.spawn import reap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.backends.cgroup.enclosing import LimitHit
    from seqbox.records import SandboxInfo
    from seqbox.spawn import Prepared, Stdio


#: the variable that carries a run's id into its command's environment (a
#: polled tree is found by it after a crash)
RUN_ID_ENV = "SEQBOX_RUN_ID"
#: what a run makes is named ``seqbox-<run name>``: its cgroups (a cgroup v2
#: run's node), a polled tree's record; backends/cgroup/leftovers.py reads the
#: names back after a crash
NAME_PREFIX = "seqbox-"
#: a cgroup v2 supervisor's own leaf, ``seqbox-sup-<pid>``
SUPERVISOR_PREFIX = NAME_PREFIX + "sup-"
#: the parent cgroup of a lock with a budget, its runs' cgroups inside:
#: ``seqboxlock-<lock>@<project key>`` (seqbox/ceiling.py); on the laptop path
#: the lock's systemd slice, ``seqboxlock-<escaped lock@project key>.slice``
#: (see :func:`lock_slice_name`)
LOCK_PREFIX = "seqboxlock-"
#: the user manager's slice that holds the slices of locks (the part of their
#: names before the one unescaped ``-``)
LOCK_SLICES = "seqboxlock.slice"
#: what systemd-escape leaves as it is (besides a leading ``.``)
_UNESCAPED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:_.")
_HEX = frozenset("0123456789abcdef")
#: the longest unit name systemd accepts
UNIT_NAME_MAX = 255


def systemd_escape(text: str) -> str:
    """Pure: ``text`` escaped as ``systemd-escape`` does (without its ``/``
    to ``-``): every byte of another character as ``\\xNN``, and a leading
    ``.``. So ``-`` (which separates the levels of a slice's name) becomes
    ``\\x2d`` and ``@`` (a template's instance) ``\\x40``."""
    out = []
    for i, c in enumerate(text):
        if c in _UNESCAPED and not (i == 0 and c == "."):
            out.append(c)
        else:
            out.extend(f"\\x{byte:02x}" for byte in c.encode("utf-8", "surrogateescape"))
    return "".join(out)


def systemd_unescape(text: str) -> str | None:
    """Pure: the inverse of :func:`systemd_escape`; None for a text it could not have made."""
    raw = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            digits = text[i + 2 : i + 4]
            if text[i + 1 : i + 2] != "x" or len(digits) != 2 or not set(digits) <= _HEX:
                return None
            raw.append(int(digits, 16))
            i += 4
        elif c in _UNESCAPED:
            raw += c.encode()
            i += 1
        else:
            return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def lock_slice_name(lock: str, project_key: str) -> str | None:
    """Pure: the user manager's slice for the runs of ``lock`` in a project on
    the laptop path (seqbox/ceiling.py): ``seqboxlock-<lock@key escaped>.slice``.
    Its one unescaped ``-`` puts it in ``seqboxlock.slice``, so its directory's
    name starts with :data:`LOCK_PREFIX` like a lock parent's. None when the
    name would be too long for systemd."""
    name = f"{LOCK_PREFIX}{systemd_escape(f'{lock}@{project_key}')}.slice"
    return name if len(name) <= UNIT_NAME_MAX else None


def lock_dir_parts(name: str) -> tuple[str, str] | None:
    """Pure: (lock, project key) of a lock parent's directory name, the plain
    ``seqboxlock-<lock>@<key>`` or a lock's slice (:func:`lock_slice_name`);
    None for any other name. Lock names have no ``@``: it splits back
    unambiguously."""
    if not name.startswith(LOCK_PREFIX):
        return None
    rest: str | None = name[len(LOCK_PREFIX) :]
    if rest is not None and rest.endswith(".slice"):
        rest = systemd_unescape(rest[: -len(".slice")])
    if rest is None:
        return None
    lock, at, key = rest.partition("@")
    return (lock, key) if lock and at and key else None


def is_lock_slice(path: str) -> bool:
    """Whether a lock parent is the lock's systemd slice: systemd's to remove, never seqbox's."""
    return path.rstrip("/").endswith(".slice")


class Usage:
    """One sample of the tree: memory in bytes and number of processes."""

    __slots__ = ("mem", "procs")

    def __init__(self, mem: int, procs: int) -> None:
        self.mem = mem
        self.procs = procs


class Probe:
    """Whether a backend can work here, and why (or why not)."""

    __slots__ = ("details", "name", "reason", "usable")

    def __init__(
        self, name: str, usable: bool, reason: str, details: dict[str, object] | None = None
    ) -> None:
        self.name = name
        self.usable = usable
        self.reason = reason
        self.details = details or {}


class Sandbox(abc.ABC):
    """One run's enforcement: a cgroup (or a polled process tree)."""

    backend: str
    limits: Limits
    #: True when the kernel throttles the tree above ``mem_high`` (else the
    #: supervisor warns)
    throttles_mem_high: bool = False
    #: how often the supervisor samples the tree, in seconds; between samples it
    #: sleeps until a signal or a kernel notification (see :meth:`watch_fds`)
    sample_interval: float = 1.0
    #: the cgroup directories this sandbox made (removed by :meth:`close`; the
    #: next run removes them if the supervisor dies)
    cgroups: list[str]
    #: the lock's parent cgroup the sandbox lives in when it is not the parent of
    #: one of :attr:`cgroups`: the lock's systemd slice around seqbox's scope
    #: (seqbox/ceiling.py), which the backend was handed by the scope step
    lock_parent: str | None = None

    @property
    def frozen(self) -> bool:
        """True while suspension holds the tree frozen for its lock's budget
        (seqbox/suspend.py): the supervisor's deadline does not count then."""
        return False

    @abc.abstractmethod
    def prepare(
        self, argv: list[str], *, cwd: str | None, env: dict[str, str], stdio: Stdio, new_session: bool
    ) -> Prepared:
        """Fork the command's process inside the sandbox, parked until
        :func:`seqbox.spawn.launch` lets it exec."""

    def describe(self) -> SandboxInfo:
        """Where ``seqbox status`` reads this sandbox's usage from."""
        return {"backend": self.backend, "cgroups": list(self.cgroups)}

    @abc.abstractmethod
    def sample(self) -> Usage:
        """Memory and process count of the whole tree now."""

    def next_sample_in(self) -> float:
        """Seconds from the sample just taken to the next one (a polled sandbox
        looks sooner as the tree nears a threshold)."""
        return self.sample_interval

    @abc.abstractmethod
    def memory_exceeded(self, usage: Usage | None) -> bool:
        """True once the tree went over the memory limit (kernel counters on cgroups)."""

    def command_ended(self, status: int) -> None:  # noqa: B027 - optional hook
        """The command's main process ended with wait status ``status``, before
        the final kill of what is left of its tree (a polled sandbox asks the
        kernel then whether its OOM killer ended it)."""

    def watch_fds(self) -> list[tuple[int, int]]:
        """(fd, poll events) the kernel signals on when memory needs a look now:
        an OOM kill, a threshold crossed."""
        return []

    def watch_later(self) -> list[tuple[int, int]]:
        """Notifications too costly to set up for every run (a threshold costs
        the kernel an RCU grace period, 15-30 ms): the supervisor asks for them
        once the command has run for a moment, then samples at once."""
        return []

    def acknowledge(self, fds: list[int]) -> None:  # noqa: B027 - optional hook
        """Re-arm the notifications that fired (read eventfds, reread files)."""

    def tasks_peak(self) -> int | None:
        """The most tasks (processes and threads) the tree had, where the
        kernel counts it (pids.peak)."""
        return None

    def forks_refused(self) -> int | None:
        """How many forks the process limit refused, where the kernel counts
        them (``pids.events`` ``max``); read before the sandbox is disposed."""
        return None

    def pids_exceeded(self, usage: Usage | None) -> bool:
        """True when a backend that cannot stop forks saw too many tasks."""
        return False

    def which_limit(self) -> LimitHit | None:
        """After a memory kill: whose limit the kernel enforced (this run's, an
        enclosing run's, a container's...), where the backend can tell."""
        return None

    @abc.abstractmethod
    def peak_mem(self) -> int | None:
        """The tree's peak memory in bytes, from the kernel where it keeps one."""

    def cpu_seconds(self) -> float | None:
        """CPU time of the whole tree, or None to use rusage of reaped children."""
        return None

    @abc.abstractmethod
    def pids(self) -> list[int]:
        """Every process in the tree now."""

    def signal_all(self, sig: int, skip_pgrp: int | None = None) -> None:
        """Send ``sig`` to every process in the tree (except those in ``skip_pgrp``)."""
        for pid in self.pids():
            try:
                if skip_pgrp is not None and os.getpgid(pid) == skip_pgrp:
                    continue
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    @abc.abstractmethod
    def kill_all(self) -> None:
        """SIGKILL the whole tree at once, so nothing can fork out of it."""

    @abc.abstractmethod
    def is_empty(self) -> bool:
        """True when no process of the tree is left."""

    def wait_empty(self, timeout: float = 5.0) -> bool:
        """Wait for the tree to be gone after :meth:`kill_all`; reap our children."""
        import time

        deadline = time.monotonic() + timeout
        delay = 0.0002
        while True:
            reap()
            if self.is_empty():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    @abc.abstractmethod
    def close(self) -> None:
        """Remove what the sandbox created (call after kill_all)."""

    def dispose(self) -> None:
        """End whatever still runs in the sandbox (after an error or a signal
        that came before the supervisor did), then remove it."""
        if not self.is_empty():
            self.kill_all()
            self.wait_empty()
        self.close()


class Backend(abc.ABC):
    """A way of enforcing limits: cgroup2, cgroup1 or poll."""

    name: str
    #: the kernel enforces the limits (else seqbox samples and kills)
    kernel_enforced: bool = True
    #: ``--cpus`` can be enforced
    supports_cpus: bool = True

    @abc.abstractmethod
    def probe(self) -> Probe:
        """Can this backend work here? Cheap: no cgroup is created."""

    @abc.abstractmethod
    def create(self, limits: Limits, name: str, records: str | None = None) -> Sandbox:
        """Make a sandbox :data:`NAME_PREFIX` + ``name`` for one try. Raises BackendError when
        it cannot. ``records`` is a private directory where a sandbox that no
        cgroup holds keeps what finds its tree after a crash."""


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
