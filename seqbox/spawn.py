"""Start the command: fork into the sandbox, park, exec. And reap what exits.

Not ``subprocess``: it costs 14 ms to import, and the child must write itself
into the sandbox's cgroups between fork and exec (``preexec_fn`` would force the
same fork path anyway). The fork itself is the sandbox's (see seqbox/backends/cgroup/clone3.py).

A prepared child execs a tiny ``sh`` right away and waits there for one byte on
a pipe: exec'ing the command from a parked ``sh`` takes a third of the time it
takes from a forked copy of the Python supervisor (3.5 ms against 10.6 ms,
measured), and that is the handoff from one queued run to the next.
"""

from __future__ import annotations

import errno
import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    #: makes the child: (pid, or 0 in the child; fds the child writes ``0`` to, to join cgroups)
    Fork = Callable[[], tuple[int, tuple[int, ...]]]

#: wait statuses of children reaped so far, by pid (see :func:`reap`)
_exited: dict[int, int] = {}

#: signals that were ignored when seqbox started; the command inherits that
_inherited_ignored: list[int] = []


class Stdio:
    """File descriptors for the command's stdin, stdout, stderr (None: inherit)."""

    __slots__ = ("stderr", "stdin", "stdout")

    def __init__(
        self, stdin: int | None = None, stdout: int | None = None, stderr: int | None = None
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr


class SpawnError(Exception):
    """The child could not join the sandbox, change directory or exec."""

    def __init__(self, stage: str, err: int, argv0: str) -> None:
        super().__init__(f"{stage}: {os.strerror(err)}")
        self.stage = stage
        self.errno = err
        self.argv0 = argv0

    @property
    def exit_code(self) -> int:
        """127 for a command not found, 126 for one that cannot be executed."""
        return 127 if self.errno in (errno.ENOENT, errno.ENOTDIR) else 126


def remember_ignored_signals() -> None:
    """Note which signals seqbox was started with ignored (nohup, ``&``), before
    installing its own handlers, so the command inherits the same."""
    _inherited_ignored.clear()
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
        if signal.getsignal(sig) == signal.SIG_IGN:
            _inherited_ignored.append(sig)


class Prepared:
    """A child forked into its sandbox, set up, and parked until :func:`launch`."""

    __slots__ = ("argv0", "go_w", "pid")

    def __init__(self, pid: int, go_w: int, argv0: str) -> None:
        self.pid = pid
        self.go_w = go_w
        self.argv0 = argv0


#: what the parked child runs: wait for the go byte (EOF: the parent gave up),
#: close the pipe, exec the command with its own argv[0] (sh searches PATH).
TRAMPOLINE = 'read -r _ <&{fd} || exit 127; exec {fd}<&-; exec "$@"'
PARK_FDS = range(9, 2, -1)  # sh redirects only single-digit fds


def resolve(argv0: str, env: dict[str, str], cwd: str | None) -> str:
    """Find the command as execvp would, or raise SpawnError (127 / 126)."""
    if "/" in argv0:
        candidates = [argv0 if os.path.isabs(argv0) else os.path.join(cwd or os.getcwd(), argv0)]
    else:
        path = env.get("PATH", os.defpath)
        candidates = [os.path.join(d or (cwd or os.getcwd()), argv0) for d in path.split(os.pathsep)]
    denied = False
    for candidate in candidates:
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = True
        elif os.path.isdir(candidate) and "/" in argv0:
            denied = True
    raise SpawnError("exec", errno.EACCES if denied else errno.ENOENT, argv0)


_SH_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def sh_keeps(env: dict[str, str], cwd: str | None) -> bool:
    """Whether ``env`` passes through the parking ``sh`` byte for byte: sh drops
    variables whose names are not shell names (``A.B``, non-UTF-8) and sets
    ``PWD`` when it is missing or names another directory."""
    for name in env:
        if not name or name[0].isdigit() or not _SH_NAME_CHARS.issuperset(name):
            return False
    pwd = env.get("PWD")
    if not pwd:
        return False
    try:
        here, there = os.stat(cwd or "."), os.stat(pwd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def prepare(
    argv: list[str],
    *,
    cwd: str | None,
    env: dict[str, str],
    stdio: Stdio,
    new_session: bool,
    fork: Fork | None = None,
) -> Prepared:
    """Start the child: made by ``fork`` (the sandbox's: it may create the child
    inside a cgroup), it writes ``0`` to every fd ``fork`` names (cgroup files
    opened by the parent, to join them), sets up stdio, session and cwd, and
    parks until :func:`launch`.
    Preparing while waiting for the lock leaves only a wake-up and an exec for
    the handoff. Raises SpawnError when the command cannot be found or the
    child cannot join or set up.
    """
    resolve(argv[0], env, cwd)
    in_sh = sh_keeps(env, cwd)
    err_r, err_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        pid, join_fds = fork() if fork is not None else (os.fork(), ())
    except BaseException:
        for fd in (err_r, err_w, go_r, go_w):
            os.close(fd)
        raise
    if pid == 0:  # pragma: no cover - the child
        os.close(go_w)
        os.close(err_r)
        _child(argv, cwd, env, stdio, new_session, join_fds, err_w, go_r, in_sh)
    os.close(err_w)
    os.close(go_r)
    try:
        data = _read_all(err_r)  # EOF once the child is parked in sh (or failed)
    except BaseException:  # interrupted: the child must not outlive this
        os.close(go_w)
        _kill_and_reap(pid)
        raise
    finally:
        os.close(err_r)
    if data:
        os.close(go_w)
        os.waitpid(pid, 0)
        stage, _, number = data.decode().partition(":")
        raise SpawnError(stage, int(number or 0), argv[0])
    return Prepared(pid, go_w, argv[0])


def launch(prepared: Prepared) -> int:
    """Let the prepared child exec; return its pid."""
    try:
        os.write(prepared.go_w, b"g\n")
    except BrokenPipeError:
        pass  # it died while parked: the supervisor sees it exit
    finally:
        os.close(prepared.go_w)
    return prepared.pid


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def abandon(prepared: Prepared) -> None:
    """The prepared child will not run: it exits when its pipe closes; reap it."""
    try:
        os.close(prepared.go_w)
    except OSError:
        pass
    try:
        os.waitpid(prepared.pid, 0)
    except ChildProcessError:
        pass


def _read_all(fd: int) -> bytes:
    data = b""
    while True:
        chunk = os.read(fd, 64)
        if not chunk:
            return data
        data += chunk


def _park_fd(avoid: int) -> int | None:
    """A descriptor in 3..9 the command does not inherit (free, or one of
    ours that closes on exec anyway), to park the go pipe on."""
    import fcntl

    for fd in PARK_FDS:
        if fd == avoid:
            continue
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError:
            return fd  # free
        if flags & fcntl.FD_CLOEXEC:
            return fd
    return None


def _child(
    argv: list[str],
    cwd: str | None,
    env: dict[str, str],
    stdio: Stdio,
    new_session: bool,
    join_fds: tuple[int, ...],
    err_w: int,
    go_r: int,
    in_sh: bool,
) -> None:  # pragma: no cover - runs in the forked child
    stage = "join"
    try:
        for fd in join_fds:
            os.write(fd, b"0")
        stage = "setup"
        if new_session:
            os.setsid()
        for target, source in ((0, stdio.stdin), (1, stdio.stdout), (2, stdio.stderr)):
            if source is not None and source != target:
                os.dup2(source, target)
        signal.set_wakeup_fd(-1)
        for sig in (
            signal.SIGPIPE,
            signal.SIGXFSZ,
            signal.SIGINT,
            signal.SIGTERM,
            signal.SIGHUP,
            signal.SIGQUIT,
            signal.SIGCHLD,
            signal.SIGUSR1,
            signal.SIGALRM,
        ):
            signal.signal(sig, signal.SIG_DFL)
        for number in _inherited_ignored:
            signal.signal(number, signal.SIG_IGN)
        stage = "chdir"
        if cwd is not None:
            os.chdir(cwd)
        stage = "setup"
        park = _park_fd(avoid=err_w) if in_sh else None
        if park is not None:
            if go_r != park:
                os.dup2(go_r, park)
            os.set_inheritable(park, True)  # it survives the exec of sh (dup2 onto itself would not)
            os.execve("/bin/sh", ["sh", "-c", TRAMPOLINE.format(fd=park), "sh", *argv], env)
        # The environment would not pass through sh unchanged, or every low
        # descriptor is inherited by the command: park in Python instead.
        os.close(err_w)
        if os.read(go_r, 1) != b"g":
            os._exit(127)
        os.execvpe(argv[0], argv, env)
    except OSError as err:
        try:
            os.write(err_w, f"{stage}:{err.errno or 0}".encode())
        except OSError:
            pass
    except BaseException:
        try:
            os.write(err_w, f"{stage}:0".encode())
        except OSError:
            pass
    finally:
        os._exit(127)


def reap() -> None:
    """Reap every exited child (also orphans we inherit as subreaper) without
    blocking, remembering each status for :func:`exit_status`."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if pid == 0:
            return
        _exited[pid] = status


def exit_status(pid: int) -> int | None:
    """The wait status of ``pid`` once it has been reaped, else None."""
    return _exited.get(pid)


def forget(pid: int) -> None:
    _exited.pop(pid, None)
