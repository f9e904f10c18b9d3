"""A delegated cgroup from systemd, for an unprivileged user.

On a systemd machine an ordinary user may not create cgroups where its shell
runs, but its user manager hands out delegated scopes. seqbox asks for one
holding itself, over D-Bus (backends/scope_dbus.py), and inside the scope
(where it is alone) makes its cgroups as usual. Failing that, it re-runs itself
as ``systemd-run --user --scope -p Delegate=yes -- seqbox run ...`` and waits.

Whether either is tried is decided from something real: the user manager's
private socket must accept a connection (a socket file left by a manager that
is gone refuses it). If systemd-run still fails before the command starts
(the re-run seqbox never reports in), the first seqbox falls back to polling
instead of passing systemd-run's failure off as the command's exit status.
"""

from __future__ import annotations

import os

#: set once seqbox is in its scope (never delegate twice): ``started`` (what its
#: command inherits; a seqbox re-run under systemd-run first sees ``fd=N``, the
#: pipe on which it reports that it started); or :data:`FAILED_PREFIX` + why,
#: once a scope could not be had
SCOPE_ENV = "SEQBOX_IN_SCOPE"
FD_PREFIX = "fd="
STARTED = "started"
FAILED_PREFIX = "failed: "
#: how long connecting to the user manager may take (it answers in microseconds)
CONNECT_TIMEOUT = 2.0


class DelegationPlan:
    """Whether ``seqbox run`` takes a delegated scope (``command`` is then the
    systemd-run argv to re-run itself with, when asking over D-Bus fails), and
    why (not)."""

    __slots__ = ("command", "reason")

    def __init__(self, command: list[str] | None, reason: str) -> None:
        self.command = command
        self.reason = reason

    def __repr__(self) -> str:
        return f"DelegationPlan({self.command!r}, {self.reason!r})"


def private_socket(environ: dict[str, str] | os._Environ[str]) -> str:
    """The user manager's private D-Bus socket ("" without XDG_RUNTIME_DIR)."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "systemd", "private") if runtime else ""


def user_manager(environ: dict[str, str] | os._Environ[str]) -> tuple[bool, str]:
    """Does a systemd user manager answer for this user? (answers, why).

    Connects to ``$XDG_RUNTIME_DIR/systemd/private``, the socket systemd-run
    itself talks to first: a live manager accepts at once, a stale socket file
    refuses (ECONNREFUSED)."""
    failed = environ.get(SCOPE_ENV, "")
    if failed.startswith(FAILED_PREFIX):
        return False, failed[len(FAILED_PREFIX) :]
    path = private_socket(environ)
    if not path:
        return False, "no systemd user manager (XDG_RUNTIME_DIR is not set)"
    if not os.path.exists(path):
        return False, f"no systemd user manager ({path} does not exist)"
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(path)
    except ConnectionRefusedError:
        return False, f"no systemd user manager answers at {path} (a stale socket)"
    except OSError as err:
        return False, f"cannot reach the systemd user manager at {path}: {err.strerror or err}"
    finally:
        sock.close()
    return True, f"the systemd user manager answers at {path}"


def delegation_plan(
    run_args: list[str],
    *,
    python: str,
    environ: dict[str, str] | os._Environ[str],
    uid: int,
    backend: str,
    cgroup2: dict[str, object],
    systemd_run: str | None,
) -> DelegationPlan:
    """Pure: the plan for ``seqbox run RUN_ARGS``.

    ``cgroup2`` is the cgroup2 probe's details: ``delegation`` (the controllers
    are there, only not ours) and ``user_manager`` (whether one answers, from
    :func:`user_manager`) with ``user_manager_reason``."""
    if uid == 0:
        return DelegationPlan(None, "root makes its own cgroups")
    if backend not in ("auto", "cgroup2"):
        return DelegationPlan(None, f"--backend {backend} was asked for")
    if environ.get(SCOPE_ENV):
        return DelegationPlan(None, "already re-run for a delegated scope")
    if not cgroup2.get("delegation"):
        return DelegationPlan(None, "a delegated scope would not give a cgroup v2 with the memory controller")
    if systemd_run is None:
        return DelegationPlan(None, "systemd-run is not installed")
    if not cgroup2.get("user_manager"):
        return DelegationPlan(None, str(cgroup2.get("user_manager_reason") or "no systemd user manager"))
    command = [systemd_run, "--user", "--scope", "--quiet", "--collect", "-p", "Delegate=yes",
               "--", python, "-m", "seqbox", "run", *run_args]  # fmt: skip
    return DelegationPlan(
        command, "a delegated scope from the systemd user manager (over D-Bus, or systemd-run --user --scope)"
    )


def run_in_scope(command: list[str], environ: dict[str, str] | os._Environ[str]) -> tuple[bool, int]:
    """Run ``command`` (systemd-run ... seqbox run ...): (whether the inner
    seqbox started, the exit status). Not started means systemd-run failed
    before the command could run (the inner seqbox reports in on an inherited
    pipe), so the caller falls back.

    This seqbox waits as the parent and passes signals on; the child dies with
    it (PR_SET_PDEATHSIG), as an exec'd seqbox would."""
    import signal

    started_r, started_w = os.pipe()
    os.set_inheritable(started_w, True)
    env = {**environ, SCOPE_ENV: f"{FD_PREFIX}{started_w}"}
    parent = os.getpid()
    # A terminal sends its INT, QUIT and HUP to the whole foreground group, the
    # child included: passing them on too would make a second stop signal.
    from_terminal = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP) if _in_terminal_foreground() else ()
    handled = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
    stops = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM)
    child: list[int] = []
    got: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if signum in stops:
            got.append(signum)
        for pid in child:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    # Signals wait until the child's pid is known: none is lost between fork and handler.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    saved = {sig: signal.getsignal(sig) for sig in handled}
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs
            try:
                for sig, handler in saved.items():
                    signal.signal(sig, handler)
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                os.close(started_r)
                _die_with_parent(parent)
                os.execve(command[0], command, env)
            finally:
                os._exit(127)
        child.append(pid)
        os.close(started_w)
        for sig in handled:
            if saved[sig] != signal.SIG_IGN:
                signal.signal(sig, signal.SIG_IGN if sig in from_terminal else forward)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        try:
            started = os.read(started_r, 1)
        finally:
            os.close(started_r)
        _, status = os.waitpid(pid, 0)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    code = os.waitstatus_to_exitcode(status)
    if not started and got:  # stopped while asking systemd: nothing ran, and nothing may now
        return True, 128 + got[0]
    return bool(started), 128 - code if code < 0 else code


def _in_terminal_foreground() -> bool:
    for fd in (0, 1, 2):
        try:
            return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the forked child
    """SIGKILL this process (systemd-run, then the seqbox it execs) when the
    waiting parent dies."""
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, 9, 0, 0, 0)  # SIGKILL
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(137)


def report_started(environ: dict[str, str] | os._Environ[str]) -> None:
    """In the seqbox re-run inside the scope: tell the waiting seqbox that the
    scope exists and the run goes ahead (closes the inherited pipe; the
    command inherits ``started``)."""
    value = environ.get(SCOPE_ENV, "")
    if not value.startswith(FD_PREFIX) or not value[len(FD_PREFIX) :].isdigit():
        return
    environ[SCOPE_ENV] = STARTED
    fd = int(value[len(FD_PREFIX) :])
    try:
        os.write(fd, b"1")
        os.close(fd)
    except OSError:
        pass


def failed_marker(code: int) -> str:
    """The SCOPE_ENV value after systemd-run exited ``code`` before the command started."""
    return f"{FAILED_PREFIX}systemd-run could not start a delegated scope (it exited {code})"
