"""The ``seqbox`` command.

``seqbox run`` is parsed by a small hand-written parser driven by the option
table (seqbox/options.py): it is on the start-up path of every wrapped command,
and typer costs 60 ms to import. Every other command goes through typer.
"""

from __future__ import annotations

import os
import signal
import sys

from seqbox.errors import EXIT_SEQBOX_FAILED, SeqboxError
from seqbox.interrupts import KILL_REQUEST, Interrupted
from seqbox.output import Output


def main(argv: list[str] | None = None) -> int:
    if argv is None and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # Until seqbox has made anything (a cgroup, a place in a queue), Ctrl-C ends
        # it as it would any program, without a KeyboardInterrupt traceback from the
        # middle of an import; seqbox installs its own handlers before it makes any.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    if argv is None:
        _hold_closed_standard_fds()
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "run":
        from seqbox.cli.run import run_main

        code = run_main(args[1:])
        if argv is None:
            _fast_exit(code)
        return code
    from seqbox.cli.app import app_main

    return app_main(args)


def _hold_closed_standard_fds() -> None:
    """seqbox started with stdin, stdout or stderr closed (``>&-``): /dev/null
    holds that number, closed on exec, so the command finds it closed too (as
    it would without seqbox) and no file seqbox opens takes the number. Python
    starts such a stream as None; seqbox's own messages go to /dev/null."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)  # the lowest free number: fd
            if null != fd:
                os.dup2(null, fd, inheritable=False)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115


def _fast_exit(code: int) -> None:
    """Flush and leave without tearing the interpreter down (saves ~5 ms on
    every wrapped command). Only for the console script, never for callers."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush into
    the closed pipe does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def handle_errors(func: object, debug: bool, out: Output | None = None) -> int:
    """Run ``func()``; turn seqbox's errors into one line and an exit code."""
    out = out or Output()
    try:
        result = func()  # type: ignore[operator]
        return int(result)
    except SeqboxError as err:
        if debug:
            import traceback

            traceback.print_exc()
        out.error(str(err))
        return err.exit_code
    except Interrupted as err:
        if err.signum == KILL_REQUEST:  # `seqbox kill` before the command started
            out.error("killed by 'seqbox kill' before it started")
            return 128 + 9
        return 128 + err.signum
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader of our output went away (`| head`): nothing to say
        _quiet_stdout()
        return 128 + signal.SIGPIPE
    except OSError as err:
        message = os_error_message(err)
        if message is None:
            return _internal(err, debug, out)
        if debug:
            import traceback

            traceback.print_exc()
        out.error(message)
        return EXIT_SEQBOX_FAILED
    except Exception as err:
        return _internal(err, debug, out)


def _internal(err: Exception, debug: bool, out: Output) -> int:
    """An error seqbox did not expect: one line, a traceback with --debug."""
    if debug or os.environ.get("SEQBOX_DEBUG"):
        import traceback

        traceback.print_exc()
    out.error(f"internal error: {type(err).__name__}: {err} (run with --debug for a traceback)")
    return EXIT_SEQBOX_FAILED


def os_error_message(err: OSError) -> str | None:
    """One line for what the system refused seqbox (full disk, too few file
    descriptors, read-only file system), with what to do; None for the rest."""
    import errno

    where = f" ({err.filename})" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        from seqbox.state import state_dir_path

        return (
            f"no space left on the device{where}: free some space "
            f"(seqbox keeps its state in {state_dir_path()}; SEQBOX_STATE_DIR moves it)"
        )
    if err.errno in (errno.EMFILE, errno.ENFILE):
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return f"too many open files (ulimit -n is {soft}): raise the limit, e.g. 'ulimit -n 1024'"
    if err.errno == errno.EFBIG:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        shown = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KiB"
        return f"file too large{where}: the file size limit (ulimit -f) is {shown}: raise it"
    if err.errno == errno.EROFS:
        return f"read-only file system{where}: set SEQBOX_STATE_DIR to a writable directory"
    if err.errno == errno.ENOENT and not err.filename and _cwd_deleted():
        return "the current directory was deleted: cd into one that exists"
    return None


def _cwd_deleted() -> bool:
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    return False
