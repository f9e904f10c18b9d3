"""``seqbox run [OPTIONS] -- CMD [ARGS...]``: the hot path."""

from __future__ import annotations

import os
import sys

from seqbox.cli import handle_errors
from seqbox.output import NORMAL, QUIET, VERBOSE, Output

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.backends.systemd.scope import LockSlice


def run_main(args: list[str]) -> int:
    out = Output()
    debug = "--debug" in args[: args.index("--")] if "--" in args else "--debug" in args
    return handle_errors(lambda: _run(args, out), debug, out)


def _run(args: list[str], out: Output) -> int:
    from seqbox.options import run_help
    from seqbox.runoptions import RunOptions

    parsed = RunOptions.from_command_line(args, os.environ)
    if parsed is None:
        sys.stdout.write(run_help())
        return 0
    options, command, root = parsed
    out.level = QUIET if options.quiet else VERBOSE if options.verbose else NORMAL
    from seqbox.backends.systemd.scope import enter_scope

    lock_slice = None
    if options.budget is not None and not options.no_lock:  # the lock's runs share its slice (section 3b)
        budget = options.budget

        def lock_slice() -> LockSlice:
            from seqbox.backends.systemd.scope import lock_slice_for
            from seqbox.project import project_key

            return lock_slice_for(options.lock, project_key(root), budget)

    # an unprivileged user on systemd: run inside a delegated scope
    scope = enter_scope(args, options.backend, out.info, lock_slice)
    if scope.exit_code is not None:  # a second seqbox ran it, under systemd-run
        return scope.exit_code

    from seqbox.runner import execute

    summary, captured = execute(command, options, out, os.environ, root, scope)
    if options.json:
        from seqbox.summary import dumps

        document = summary.as_json()
        document["stdout"] = (captured or ("", ""))[0] or ""
        document["stderr"] = (captured or ("", ""))[1] or ""
        sys.stdout.write(dumps(document) + "\n")
        sys.stdout.flush()
    return summary.exit_code
