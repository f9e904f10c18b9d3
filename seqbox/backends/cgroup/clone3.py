"""Forking a child straight into a cgroup v2: clone3(CLONE_INTO_CGROUP).

Moving a process into a cgroup by writing ``cgroup.procs`` takes the write side
of the kernel's global threadgroup lock, which waits for an RCU grace period:
5-15 ms on every run (measured). Creating the child inside the cgroup only
takes the read side. This is what systemd and crun do.

Python has no wrapper, so this is the raw syscall through ctypes, made the way
the interpreter expects a fork (as BenchExec's container.py does): through
``ctypes.PyDLL``, so the GIL stays held across the call, between
``PyOS_BeforeFork`` and ``PyOS_AfterFork_Parent``/``PyOS_AfterFork_Child``, so
the interpreter's locks and ``os.register_at_fork`` hooks are handled exactly as
by ``os.fork()``. With another Python thread alive (a ``--log`` copier, say),
plain ``os.fork()`` and a ``cgroup.procs`` write are used instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys

from seqbox.backends.cgroup.fs import Into, close_into
from seqbox.errors import BackendError
from seqbox.spawn import prepare

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from seqbox.spawn import Prepared, Stdio

    #: makes the child: (its pid, or 0 in the child; the fds the child must still
    #: write ``0`` to, to join cgroups it was not created in)
    Fork = Callable[[], tuple[int, tuple[int, ...]]]

CLONE_INTO_CGROUP = 0x200000000
SYS_CLONE3 = 435
#: machines whose syscall table gives clone3 that number (elsewhere, no clone3)
CLONE3_MACHINES = frozenset({"x86_64", "aarch64", "armv7l", "ppc64le", "s390x", "riscv64", "i686"})
#: errors that mean "clone3 or CLONE_INTO_CGROUP is not available here" (old
#: kernel, seccomp filter): fall back to fork for the rest of the process
UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.E2BIG, errno.EPERM})

_FIELDS = (
    "flags",
    "pidfd",
    "child_tid",
    "parent_tid",
    "exit_signal",
    "stack",
    "stack_size",
    "tls",
    "set_tid",
    "set_tid_size",
    "cgroup",
)


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in _FIELDS]


class _Calls:
    """The C functions, looked up once."""

    def __init__(self) -> None:
        libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL is not released
        self.syscall = libc.syscall
        self.syscall.restype = ctypes.c_long
        api = ctypes.pythonapi
        self.before = api.PyOS_BeforeFork
        self.after_parent = api.PyOS_AfterFork_Parent
        self.after_child = api.PyOS_AfterFork_Child
        for function in (self.before, self.after_parent, self.after_child):
            function.argtypes = []
            function.restype = None


_calls: _Calls | None = None
_unsupported = False


def clone_into_cgroup(cgroup_fd: int) -> int:
    """Like os.fork(), with the child created in the cgroup ``cgroup_fd``.

    Returns the child's pid in the parent, 0 in the child, and -1 when clone3
    or CLONE_INTO_CGROUP is not available here. Raises BackendError for any
    other failure (EAGAIN: too many processes, ENOMEM...).
    """
    global _calls, _unsupported
    if _unsupported:
        return -1
    if _calls is None:
        if os.uname().machine not in CLONE3_MACHINES:
            _unsupported = True
            return -1
        try:
            _calls = _Calls()
        except (OSError, AttributeError):  # no libc syscall() or no fork hooks: not CPython on Linux
            _unsupported = True
            return -1
    calls = _calls
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup_fd)
    calls.before()
    pid = int(calls.syscall(SYS_CLONE3, ctypes.byref(args), ctypes.sizeof(args)))
    if pid == 0:  # pragma: no cover - the child
        calls.after_child()
        return 0
    err = ctypes.get_errno() if pid < 0 else 0
    calls.after_parent()
    if pid > 0:
        return pid
    if err in UNSUPPORTED:
        _unsupported = True
        return -1
    raise BackendError(f"cannot start the command in its cgroup: clone3: {os.strerror(err)}")


def _single_threaded() -> bool:
    """No other Python thread runs (none can before threading is imported)."""
    threading = sys.modules.get("threading")
    return threading is None or threading.active_count() == 1


def forker(into: Into | None, join_fds: tuple[int, ...] = ()) -> Fork:
    """How to make the command's process: created inside the cgroup v2 ``into``
    when clone3 allows (else forked and joined through its ``cgroup.procs``),
    and joining the v1 hierarchies through ``join_fds`` (``tasks`` files)."""

    def fork() -> tuple[int, tuple[int, ...]]:
        if into is not None:
            if _single_threaded():  # the interpreter's premise for a raw fork
                pid = clone_into_cgroup(into.dir_fd)
                if pid >= 0:
                    return pid, join_fds
            return os.fork(), (into.procs_fd, *join_fds)
        return os.fork(), join_fds

    return fork


def prepare_inside(
    into: Into | None,
    join_fds: tuple[int, ...],
    argv: list[str],
    *,
    cwd: str | None,
    env: dict[str, str],
    stdio: Stdio,
    new_session: bool,
) -> Prepared:
    """A cgroup sandbox's ``prepare``: the command's process made by :func:`forker`
    (in the cgroups ``into`` and ``join_fds`` lead to) and parked. The descriptors
    are the sandbox's to hand over once: closed here whatever happens (the child
    has joined by the time ``prepare`` returns)."""
    fork = forker(into, join_fds)
    try:
        return prepare(argv, cwd=cwd, env=env, stdio=stdio, new_session=new_session, fork=fork)
    finally:
        for fd in join_fds:
            os.close(fd)
        close_into(into)
