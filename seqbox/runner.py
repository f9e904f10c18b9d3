"""``seqbox run`` as a library function: admission, attempts, finish.

* admission (:mod:`seqbox.admit`): a place in the project's queue, unless
  nested or ``--no-lock``; the one ``with`` that takes the turn and hands it on;
* attempts (:mod:`seqbox.attempts`): each try in a fresh sandbox, the first
  one parked until admitted; returns the outcomes. The turn is handed on as
  soon as the last try's tree is gone, before the bookkeeping;
* finish (:mod:`seqbox.finish`): the summary from the outcomes, then the run
  log, ``--log`` and ``--report``.

Raises SeqboxError for what stops seqbox from doing its job; a command's
failure is a result, never an exception.
"""

from __future__ import annotations

import os

from seqbox.admit import Admission, CancelledRun
from seqbox.attempts import run_attempts
from seqbox.backends import Selection, select
from seqbox.backends.base import RUN_ID_ENV as RUN_ID_ENV  # noqa: PLC0414 - re-exported
from seqbox.finish import finish, summarize
from seqbox.interrupts import Interrupted, Interrupts
from seqbox.limits import Limits
from seqbox.output import VERBOSE, Output
from seqbox.runoptions import RunOptions
from seqbox.spawn import remember_ignored_signals
from seqbox.summary import Summary

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from seqbox.backends.systemd.scope import Scope
    from seqbox.runlog import RunLog

    #: what a ``--json`` run captured of the command: (stdout, stderr)
    Captured = tuple[str | None, str | None]


def choose_backend(options: RunOptions, out: Output, scope: Scope | None = None) -> Selection:
    selection = select(options.backend, scope)
    note = selection.fallback_note()
    if note:  # the whole story with -v; otherwise a short line, once
        if out.level >= VERBOSE:
            out.info(note)
        elif _first_time("poll-fallback"):
            cause = selection.fallback_cause()
            out.note(
                f"no usable cgroup here{f' ({cause})' if cause else ''}: limits are enforced by "
                "polling the process tree (said once; 'seqbox doctor' says why)"
            )
    if options.cpus is not None and not selection.backend.supports_cpus:
        out.note(f"--cpus is ignored by the {selection.backend.name} backend")
    out.info(f"backend {selection.backend.name}: {selection.probe.reason}")
    return selection


def _first_time(what: str) -> bool:
    """True the first time ``what`` is asked in this state directory (which
    lives as long as the login session, under $XDG_RUNTIME_DIR)."""
    from seqbox.errors import StateError
    from seqbox.state import open_state_dir

    try:
        dir_fd = open_state_dir()
    except StateError:
        return True
    try:
        os.close(
            os.open(
                f"said-{what}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd
            )
        )
        return True
    except FileExistsError:
        return False
    except OSError:
        return True
    finally:
        os.close(dir_fd)


def execute(
    argv: list[str],
    options: RunOptions,
    out: Output,
    environ: Mapping[str, str],
    root: str,
    scope: Scope | None = None,
) -> tuple[Summary, Captured | None]:
    """Run ``argv`` under ``options`` in the project at ``root``: its summary,
    and with ``--json`` what it printed."""
    from seqbox.project import project_key

    if options.report:
        from seqbox.summary import check_report_path

        check_report_path(options.report)
    remember_ignored_signals()
    interrupts = Interrupts()
    interrupts.raising()
    try:
        run = Run(argv, options, out, environ, project_key(root), root, scope)
        try:
            # arrive first, so arrival order is start order; the rest happens while waiting
            with Admission(run, Limits.from_options(options)) as admission:
                run.remove_leftovers()  # a few directory listings when there are none
                selection = choose_backend(options, out, scope)
                transcript = None
                if options.log:
                    from seqbox.transcript import open_transcript

                    transcript = open_transcript(options.log, out)
                run.log_start(admission, selection.backend.name)
                outcomes, captured = run_attempts(run, admission, selection, interrupts, transcript)
                summary = summarize(run, admission, selection.backend.name, outcomes)
                finish(summary, run, admission, transcript)
                run.remove_leftovers()  # what crashed while we ran (our turn is handed on: off the path)
                return summary, captured
        except BaseException as err:
            run.end_log_in_error(err)
            raise
    finally:
        interrupts.restore()


class Run:
    """What every step of one ``seqbox run`` shares: the command, its options,
    where its output and records go."""

    __slots__ = ("argv", "env", "environ", "key", "log", "options", "out", "root", "run_id", "scope", "trees")

    def __init__(
        self,
        argv: list[str],
        options: RunOptions,
        out: Output,
        environ: Mapping[str, str],
        key: str,
        root: str,
        scope: Scope | None = None,
    ) -> None:
        from seqbox import runlog
        from seqbox.backends.cgroup import leftovers
        from seqbox.state import trees_dir

        self.argv = argv
        self.options = options
        self.out = out
        self.environ = environ
        self.key = key
        #: the project's root (a learned reservation's default key is relative to it)
        self.root = root
        #: what the scope step did (backends/systemd/scope.py), None where it was not taken
        self.scope = scope
        self.run_id = f"{leftovers.run_stamp()}-{os.getpid()}"
        #: the command's environment
        self.env = {**environ, **options.extra_env(), RUN_ID_ENV: self.run_id}
        #: where a polled tree's record goes (see backends/poll/treerecord.py)
        self.trees = trees_dir(environ)
        self.log: RunLog | None = runlog.for_run(
            options.log_dir, options.keep_logs, root, key, self.run_id, out, environ
        )

    def log_start(self, admission: Admission, backend: str) -> None:
        """The run log's first event."""
        if self.log is not None:
            options = self.options
            self.log.start(
                run_id=self.run_id,
                command=self.argv,
                cwd=os.path.abspath(options.cwd or os.getcwd()),
                backend=backend,
                lock=admission.lock,
                nested=admission.nested,
                limits=admission.limits.record(options.retry),
                output_log=os.path.abspath(options.log) if options.log else None,
                extra=admission.budget_run.log_fields() if admission.budget_run is not None else None,
            )

    def end_log(self, summary: Mapping[str, object]) -> None:
        """The run log's last event, ``exit`` with the summary; then prune."""
        log, self.log = self.log, None
        if log is not None:
            log.end(summary, self.options.keep_logs)

    def end_log_in_error(self, error: BaseException) -> None:
        """The run log's last event when seqbox could not finish: ``error``."""
        log, self.log = self.log, None
        if log is None:
            return
        code = getattr(error, "exit_code", None)
        status = "cancelled" if isinstance(error, CancelledRun) else "error"
        if isinstance(error, Interrupted):  # stopped while it waited or prepared
            code, status = 128 + error.signum, "signal"
        log.end_in_error(str(error) or type(error).__name__, code, status, self.options.keep_logs)

    def remove_leftovers(self) -> None:
        """End and remove what crashed runs of this project left (their
        supervisor is dead)."""
        from seqbox.backends.cgroup import leftovers

        for path in leftovers.find(self.key, self.trees):
            self.out.info(f"removing {path}, left by a crashed run")
            leftovers.remove(path)
        if self.options.budget is not None:  # the lock parents crashed runs left empty (section 3b)
            from seqbox.ceiling import sweep

            sweep(self.key)
