"""The fallback way into a delegated scope: seqbox re-runs itself as
``systemd-run --user --scope -p Delegate=yes -- seqbox run ...`` and waits.

The re-run seqbox tells the waiting one that it started (that the scope
exists) on an inherited pipe, whose descriptor :data:`STARTED_FD_ENV` names;
the re-run takes the variable out of its environment, so that the command
never sees it. A seqbox that never reports in means systemd-run failed before
the command could run: the first seqbox then falls back to polling, instead of
passing systemd-run's failure off as the command's exit status.

A run of a lock with a budget re-runs itself in the lock's slice
(``--slice=``, see seqbox/ceiling.py), once ``systemctl --user set-property
--runtime`` has set the slice's limit to the budget (:func:`limit_slice`).
When it cannot, the run goes without ``--slice=``, and the re-run seqbox,
which finds itself outside the lock's slice, fails closed.
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

#: the descriptor on which a seqbox re-run under systemd-run reports that it started
STARTED_FD_ENV = "SEQBOX_SCOPE_STARTED_FD"


def run_in_scope(command: list[str], environ: dict[str, str] | os._Environ[str]) -> tuple[bool, int]:
    """Run ``command`` (systemd-run ... seqbox run ...): (whether the inner
    seqbox started, the exit status). Not started means systemd-run failed
    before the command could run (the inner seqbox reports in on an inherited
    pipe), so the caller falls back.

    This seqbox waits as the parent and passes signals on; the child dies with
    it (PR_SET_PDEATHSIG), as an exec'd seqbox would."""

    started_r, started_w = os.pipe()
    os.set_inheritable(started_w, True)
    env = {**environ, STARTED_FD_ENV: str(started_w)}
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
    import ctypes  # only on this fallback path

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, 9, 0, 0, 0)  # SIGKILL
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(137)


def report_started(environ: dict[str, str] | os._Environ[str]) -> bool:
    """In a seqbox re-run inside the scope: tell the waiting seqbox that the
    scope exists and the run goes ahead (closes the inherited pipe), and take
    the variable out of ``environ``. Whether this is such a re-run."""
    value = environ.pop(STARTED_FD_ENV, None)
    if value is None:
        return False
    if value.isdigit():
        fd = int(value)
        try:
            os.write(fd, b"1")
            os.close(fd)
        except OSError:
            pass
    return True


def failure(code: int) -> str:
    """Why there is no scope after systemd-run exited ``code`` before the command started."""
    return f"systemd-run could not start a delegated scope (it exited {code})"


def slice_limit_command(systemctl: str, unit: str, budget: int) -> list[str]:
    """Pure: the command that holds the lock's slice ``unit`` to ``budget``, swap closed."""
    return [systemctl, "--user", "set-property", "--runtime", unit, f"MemoryMax={budget}", "MemorySwapMax=0"]


def with_slice(command: list[str], unit: str) -> list[str]:
    """Pure: the systemd-run command ``command`` with its scope in the slice ``unit``."""
    end = command.index("--")
    return [*command[:end], f"--slice={unit}", *command[end:]]


def limit_slice(unit: str, budget: int, environ: Mapping[str, str]) -> str | None:
    """Set the limit of the lock's slice with systemctl: None when done, else
    why not (only a run of a lock with a budget comes here, off the hot path)."""
    import shutil
    import subprocess

    systemctl = shutil.which("systemctl", path=environ.get("PATH"))
    if systemctl is None:
        return "systemctl is not installed"
    command = slice_limit_command(systemctl, unit, budget)
    try:
        done = subprocess.run(
            command, env=dict(environ), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"{' '.join(command[:4])} failed: {err}"
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        return f"{' '.join(command[:4])} failed: {said[-1] if said else f'it exited {done.returncode}'}"
    return None
