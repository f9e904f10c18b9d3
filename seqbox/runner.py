"""``seqbox run`` as a library function.

For each try: make a sandbox and fork the command into it, parked; on the
first try, wait for the turn taken in the project's queue (unless nested or
``--no-lock``) and pass the git guard; launch; supervise until the tree is
gone. The turn is handed over as soon as the last try's tree is gone, before
the bookkeeping.

Raises SeqboxError for what stops seqbox from doing its job; a command's
failure is a result, never an exception.
"""

from __future__ import annotations

import os
import time

from seqbox.backends import Limits, Selection, select
from seqbox.backends.base import RUN_ID_ENV as RUN_ID_ENV  # noqa: PLC0414 - re-exported
from seqbox.errors import SeqboxError
from seqbox.interrupts import Interrupted, Interrupts
from seqbox.options import RunOptions
from seqbox.output import VERBOSE, Output
from seqbox.spawn import Prepared, SpawnError, Stdio, abandon, remember_ignored_signals
from seqbox.summary import Summary
from seqbox.supervise import Outcome, Supervisor, spawn_failed, terminal_foreground

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import BinaryIO

    from seqbox.capture import Capture
    from seqbox.lockbudget import BudgetRun
    from seqbox.queue import NoTurn, Turn
    from seqbox.records import Entry
    from seqbox.runlog import RunLog

    #: what a ``--json`` run captured of the command: (stdout, stderr)
    Captured = tuple[str | None, str | None]

CANCELLED = "cancelled by 'seqbox kill --all' before it started; run it again when you want it"


class CancelledRun(SeqboxError):
    """``seqbox kill --all`` cancelled this run while it waited."""

    exit_code = 143


def limits_for(options: RunOptions) -> Limits:
    return Limits(
        mem=options.mem,
        mem_high=options.mem_high,
        pids=options.pids,
        cpus=options.cpus,
        warn_at=options.warn_at,
        timeout=options.timeout,
        grace=options.grace,
        signal=options.signal,
        poll_interval=options.poll_interval,
    )


def choose_backend(options: RunOptions, out: Output) -> Selection:
    selection = select(options.backend)
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
    argv: list[str], options: RunOptions, out: Output, environ: Mapping[str, str], root: str
) -> tuple[Summary, Captured | None]:
    """Run ``argv`` under ``options`` in the project at ``root``: its summary,
    and with ``--json`` what it printed."""
    from seqbox import runlog
    from seqbox.backends import leftovers
    from seqbox.project import project_key

    if options.report:
        from seqbox.summary import check_report_path

        check_report_path(options.report)
    remember_ignored_signals()
    interrupts = Interrupts()
    interrupts.raising()
    try:
        key = project_key(root)
        run = Run(argv, options, out, environ, key, f"{leftovers.run_stamp()}-{os.getpid()}")
        run.root = root
        run.log = runlog.for_run(options.log_dir, options.keep_logs, root, key, run.run_id, out, environ)
        try:
            # join first, so arrival order is start order; the rest happens while waiting
            with run.join_queue() as turn:
                run.remove_leftovers()  # a few directory listings when there are none
                result = run.execute(turn, choose_backend(options, out), interrupts)
                run.remove_leftovers()  # what crashed while we ran (our turn is handed over: off the path)
                return result
        except BaseException as err:
            run.close_log(error=err)
            raise
    finally:
        interrupts.restore()


class Run:
    """One ``seqbox run``: its place in the queue and its tries."""

    def __init__(
        self,
        argv: list[str],
        options: RunOptions,
        out: Output,
        environ: Mapping[str, str],
        key: str,
        run_id: str,
    ) -> None:
        self.argv = argv
        self.options = options
        self.limits = limits_for(options)
        self.out = out
        self.key = key
        self.run_id = run_id
        self.env = dict(environ)
        self.env.update(options.extra_env())
        self.env[RUN_ID_ENV] = run_id
        self.environ = environ
        self.nested = False
        self.waited = 0.0
        self.log_warned = False
        self.log: RunLog | None = None
        self._start: float | None = None
        from seqbox.state import trees_dir

        #: where a polled tree's record goes (see backends/treerecord.py)
        self.trees = trees_dir(environ)
        #: with --budget: (our reservation, the budget), recorded in our entries
        self.reserved: tuple[int, int] | None = None
        #: with --budget: what we reserve and why, our suspension (seqbox/lockbudget.py)
        self.budget_run: BudgetRun | None = None
        self.root = os.getcwd()

    def me(self) -> Entry:
        """What this run writes in its ticket, and later in its slot."""
        if self._start is None:
            from seqbox.backends import procinfo

            self._start = procinfo.start_time(os.getpid())
        entry: Entry = {
            "pid": os.getpid(),
            "start": self._start,
            "command": self.argv,
            "run_id": self.run_id,
            "lock": self.options.lock,
            "mem": self.limits.mem,
            "pids": self.limits.pids,
            "warn_at": self.limits.warn_at if self.limits.mem else None,
        }
        if self.reserved is not None:
            entry["reservation"], entry["budget"] = self.reserved
        if self.budget_run is not None:
            entry["reserved_how"] = self.budget_run.how
        return entry

    def join_queue(self) -> Turn | NoTurn:
        """Take a number in the lock's queue, unless nested or ``--no-lock``."""
        from seqbox import queue

        if self.options.no_lock:
            return queue.NoTurn()
        from seqbox.nesting import enclosing_holder

        holder = enclosing_holder(self.key, self.environ)
        if holder is not None:
            self.nested = True
            self.limits = self.limits.nested_in(holder.get("mem"), holder.get("pids"))
            # The enclosing run samples the same tree against the same limit: its
            # warning is enough (one line, not one per level).
            outer_warn = holder.get("warn_at")
            if (
                isinstance(outer_warn, (int, float))
                and self.limits.mem == holder.get("mem")
                and (self.limits.warn_at is None or outer_warn <= self.limits.warn_at)
            ):
                self.limits.warn_at = None
            self.out.info(
                f"nested inside pid {holder.get('pid')} (lock {holder.get('lock')!r}): "
                "not queueing; limits nest inside its sandbox"
            )
            return queue.NoTurn()
        gate = None
        if self.options.budget is not None:  # memory admission: reserve our --mem
            from seqbox.admission import gate_for

            gate = gate_for(self.options.lock, self.limits.mem, self.options.budget)
            from seqbox.lockbudget import plan  # --reserve, learned, or --mem (section 3b)

            log_dir = os.path.dirname(self.log.path) if self.log is not None else None
            self.budget_run = plan(gate, self.options, self.limits, self.argv, self.key, self.root, log_dir,
                                   self.environ)  # fmt: skip
            self.reserved = (gate.need, gate.budget)
        turn = queue.arrive(
            self.key, self.options.lock, self.options.slots, {**self.me(), "arrived": time.time()}, gate=gate
        )
        self.out.info(f'joined the queue of lock "{self.options.lock}"')
        return turn

    def execute(
        self, turn: Turn | NoTurn, selection: Selection, interrupts: Interrupts
    ) -> tuple[Summary, Captured | None]:
        options = self.options
        log = _open_log(options.log, self.out)
        self.log_start(selection)
        outcome: Outcome | None = None
        attempts, wall, cpu, peak, procs_peak = 0, 0.0, 0.0, 0, 0
        captured = None
        try:
            for attempt in range(1, options.retry + 2):
                attempts = attempt
                if log is not None:
                    from seqbox.describe import command_line  # one line, even for a -c script

                    _log_line(
                        log, f"=== seqbox try {attempt}/{options.retry + 1}: {command_line(self.argv)}\n"
                    )
                outcome, captured = self.one_try(turn, attempt, selection, interrupts, log)
                wall += outcome.wall_s
                cpu += outcome.cpu_s or 0.0
                peak = max(peak, outcome.peak_mem_bytes or 0)
                procs_peak = max(procs_peak, outcome.procs_peak)
                _log_line(
                    log,
                    f"=== seqbox exit: status={outcome.status} exit_code={outcome.exit_code} "
                    f"wall_s={outcome.wall_s:.3f}\n",
                )
                if not _should_retry(outcome, options, attempt):
                    break
                self.out.note(
                    f"try {attempt} ended with status {outcome.status} (exit {outcome.exit_code}); retrying"
                )
        finally:
            turn.hand_over()
        assert outcome is not None
        summary = Summary()
        summary.command = list(self.argv)
        summary.status = outcome.status
        summary.exit_code = outcome.exit_code
        summary.signal = outcome.signal
        summary.wall_s = round(wall, 3)
        summary.cpu_s = round(cpu, 3)
        summary.peak_mem_bytes = peak or None
        summary.mem_limit_bytes = self.limits.mem
        summary.procs_peak = procs_peak
        summary.backend = selection.backend.name
        summary.lock = None if options.no_lock else options.lock
        summary.lock_wait_s = round(self.waited, 3)
        summary.attempts = attempts
        summary.run_id = self.run_id
        summary.log = self.log_path()
        summary.reserved_bytes = self.reserved[0] if self.reserved is not None else None
        summary.frozen_s = round(self.budget_run.frozen_s, 3) if self.budget_run is not None else 0.0
        document = summary.as_json()
        self.close_log(summary=document)
        if self.out.level >= VERBOSE:
            from seqbox.runlog import closing_line

            self.out.info(closing_line(document))
        if log is not None:
            from seqbox.summary import dumps

            _log_line(log, "=== seqbox summary: " + dumps(document) + "\n")
            try:
                log.close()
            except OSError as err:
                self.log_failed(err)
        if options.report:
            from seqbox.summary import write_report

            try:
                write_report(options.report, document)
            except SeqboxError as err:  # the command ran: its exit code stands
                self.out.note(f"warning: {err}")
        return summary, captured

    def one_try(
        self,
        turn: Turn | NoTurn,
        attempt: int,
        selection: Selection,
        interrupts: Interrupts,
        log: BinaryIO | None,
    ) -> tuple[Outcome, Captured | None]:
        """A fresh sandbox, the command parked in it, our turn, launch, supervise."""
        options = self.options
        name = f"{self.key}-{self.run_id}" + (f"-{attempt}" if attempt > 1 else "")
        sandbox, note = selection.make_sandbox(self.limits, name, self.trees)
        if note:
            self.out.note(note)
        if self.budget_run is not None:  # suspend, don't kill (section 3b)
            sandbox = self.budget_run.wrap(sandbox, self.run_id, self.out, self.log)
        described = sandbox.describe()
        turn.describe(described)
        capture = _capture(options, log)
        captured = None
        try:
            stdio = capture.stdio() if capture is not None else Stdio()
            foreground = terminal_foreground()
            try:
                prepared = sandbox.prepare(
                    self.argv, cwd=options.cwd, env=self.env, stdio=stdio, new_session=not foreground
                )
            except SpawnError as err:  # not found, not executable: nothing to queue for
                return spawn_failed(err, self.out), None
            if attempt == 1:
                self.wait_turn(turn, prepared)

            def started(pid: int) -> None:
                if capture is not None:
                    capture.started()
                turn.started({**self.me(), "since": time.time(), "child": pid, **described})
                if self.log is not None:  # the command runs: the log may touch the disk now
                    self.log.flush()

            def ended() -> None:  # the command is over: let the next run start, and step aside
                turn.hand_over()
                try:
                    os.nice(10)  # our bookkeeping must not compete with its start-up for the CPU
                except OSError:
                    pass

            last_try = options.retry == 0
            supervisor = Supervisor(sandbox, self.out, interrupts)
            supervisor.events = self.log
            outcome = supervisor.run(
                prepared, foreground=foreground, started=started, ended=ended if last_try else None
            )
            if not _should_retry(outcome, options, attempt):
                turn.hand_over()  # the next run starts now; our bookkeeping can wait
        finally:
            try:
                if capture is not None:
                    captured = capture.finish()
                    if capture.log_error is not None:
                        self.log_failed(capture.log_error)
            finally:
                sandbox.dispose()
        return outcome, captured

    def log_failed(self, err: OSError) -> None:
        """One warning when the --log file stops taking writes; the command's
        output and exit code are not affected."""
        if not self.log_warned:
            self.log_warned = True
            self.out.note(
                f"warning: cannot write the log {self.options.log}: {err.strerror}; "
                "the command's output was not cut, only the log is incomplete"
            )

    def wait_turn(self, turn: Turn | NoTurn, prepared: Prepared) -> None:
        """Wait for our turn (and the git guard) with the command parked. On
        any failure the parked child is abandoned before the error goes up."""
        from seqbox import queue

        start = time.monotonic()
        try:
            if isinstance(turn, queue.Turn):
                from seqbox.waitline import WaitLine

                line = WaitLine(self.out, self.options.lock, turn.number)
                try:
                    turn.wait(timeout=self.options.wait_timeout, on_wait=line, tick=line.tick)
                except queue.Cancelled:
                    raise CancelledRun(CANCELLED) from None
                except Interrupted:  # kill --all marks the waiters cancelled, then sends SIGTERM
                    if turn.number <= turn.lockdir.cancel_mark():
                        raise CancelledRun(CANCELLED) from None
                    raise
                finally:
                    line.done()
                # no lock, no wait: only a queue's turn counts (0 with --no-lock or nested)
                self.waited = time.monotonic() - start
                self.log_lock(self.waited, True)
                self.clean_after_crash(turn.previous)
            else:
                self.log_lock(0.0, True)
            if not self.nested and os.path.basename(self.argv[0]) == "git":
                from seqbox import gitguard

                gitguard.wait_for_index_lock(
                    self.options.cwd or os.getcwd(),
                    on_wait=lambda path: self.out.note(f"waiting for {path} to go away"),
                )
        except BaseException:
            if isinstance(turn, queue.Turn) and not self.waited:
                self.log_lock(time.monotonic() - start, False)
            abandon(prepared)
            raise

    # -- the run log ------------------------------------------------------------

    def log_start(self, selection: Selection) -> None:
        if self.log is not None:
            options = self.options
            self.log.start(
                run_id=self.run_id,
                command=self.argv,
                cwd=os.path.abspath(options.cwd or os.getcwd()),
                backend=selection.backend.name,
                lock=None if options.no_lock else options.lock,
                nested=self.nested,
                limits=self.limits,
                retry=options.retry,
                output_log=os.path.abspath(options.log) if options.log else None,
                extra=self.budget_run.log_fields() if self.budget_run is not None else None,
            )

    def log_lock(self, waited: float, got: bool) -> None:
        if self.log is not None:
            lock = None if self.options.no_lock else self.options.lock
            self.log.event("lock", lock=lock, waited_s=round(waited, 3), got=got, nested=self.nested)

    def log_path(self) -> str | None:
        """The run log's path for the summary (written out first, so it exists)."""
        if self.log is None:
            return None
        self.log.flush()
        return self.log.written_path

    def close_log(
        self, summary: Mapping[str, object] | None = None, error: BaseException | None = None
    ) -> None:
        """The last event (``exit``, or ``error`` when seqbox could not finish), then prune."""
        log, self.log = self.log, None
        if log is None:
            return
        if summary is not None:
            log.end(summary, self.options.keep_logs)
        elif error is not None:
            code = getattr(error, "exit_code", None)
            status = "cancelled" if isinstance(error, CancelledRun) else "error"
            if isinstance(error, Interrupted):  # stopped while it waited or prepared
                code, status = 128 + error.signum, "signal"
            log.end_in_error(str(error) or type(error).__name__, code, status, self.options.keep_logs)

    def remove_leftovers(self) -> None:
        """End and remove what crashed runs of this project left (their
        supervisor is dead)."""
        from seqbox.backends import leftovers

        for path in leftovers.find(self.key, self.trees):
            self.out.info(f"removing {path}, left by a crashed run")
            leftovers.remove(path)
        if self.options.budget is not None:  # the lock parents crashed runs left empty
            from seqbox.ceiling import sweep

            sweep(self.key)

    def clean_after_crash(self, previous: Entry | None) -> None:
        """If the run that held our slot before us did not hand it over in
        order, its supervisor died holding it (a flock is released only when
        the last fd goes: a zombie cannot fake that), and its tree may still
        run: end it before our command starts.

        On the handoff's path, so the common case costs one look at the
        previous entry's mark; only a crash costs more."""
        if previous is None or previous.get("ended"):
            return
        from seqbox.backends import leftovers

        ended = leftovers.end_run(previous)
        for path in leftovers.find(self.key, self.trees):  # anything else a crash of this project left
            if leftovers.remove(path):
                ended.append(path)
        if ended:
            names = ", ".join(sorted({os.path.basename(path) for path in ended}))
            pid = previous.get("pid")
            self.out.note(f"the run before (pid {pid}) died; ended what it left running: {names}")


def _should_retry(outcome: Outcome, options: RunOptions, attempt: int) -> bool:
    if attempt > options.retry or outcome.interrupted:
        return False
    if outcome.status == "memory":
        return options.retry_on_oom
    if outcome.status == "error":  # cannot execute / not found: trying again changes nothing
        return False
    return outcome.exit_code != 0


def _capture(options: RunOptions, log: BinaryIO | None) -> Capture | None:
    if not options.json and log is None:
        return None
    from seqbox.capture import Capture

    return Capture(capture=options.json, log=log)


def _open_log(path: str | None, out: Output) -> BinaryIO | None:
    if path is None:
        return None
    try:
        return open(path, "ab")
    except OSError as err:
        out.note(f"warning: cannot write the log {path}: {err.strerror}; running without it")
        return None


def _log_line(log: BinaryIO | None, text: str) -> None:
    if log is not None:
        try:
            log.write(text.encode("utf-8", "surrogateescape"))
            log.flush()
        except OSError:
            pass
