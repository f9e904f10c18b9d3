"""``seqbox run`` as a library function.

For each try: make a sandbox and fork the command into it, parked; on the
first try, take a turn in the project's queue (unless nested or ``--no-lock``)
and pass the git guard; launch; supervise until the tree is gone. The turn is
given back as soon as the last try's tree is gone, before the bookkeeping.

Raises SeqboxError for what stops seqbox from doing its job; a command's
failure is a result, never an exception.
"""

from __future__ import annotations

import os
import time

from seqbox import summary as summary_mod
from seqbox.backends import Limits, Sandbox, Selection, select
from seqbox.errors import BackendError, SeqboxError
from seqbox.interrupts import Interrupts
from seqbox.options import RunOptions
from seqbox.output import Output
from seqbox.spawn import Prepared, SpawnError, Stdio, abandon, remember_ignored_signals
from seqbox.supervise import Outcome, Policy, Supervisor, spawn_failed, terminal_foreground

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import BinaryIO

    from seqbox.capture import Capture
    from seqbox.queue import Turn

RUN_ID_ENV = "SEQBOX_RUN_ID"


class RunResult:
    """What ``seqbox run`` produced: the summary and the exit code."""

    __slots__ = ("exit_code", "stderr", "stdout", "summary")

    def __init__(
        self, summary: dict[str, object], exit_code: int, stdout: str | None = None, stderr: str | None = None
    ) -> None:
        self.summary = summary
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class CancelledRun(SeqboxError):
    """``seqbox kill --all`` cancelled this run while it waited."""

    exit_code = 143


def limits_for(options: RunOptions) -> Limits:
    warn = options.warn_at
    return Limits(
        mem=options.mem,
        mem_high=options.mem_high,
        pids=options.pids,
        cpus=options.cpus,
        poll_interval=options.poll_interval,
        notify_at=tuple(
            n for n in (int(warn * options.mem) if warn and options.mem else None, options.mem_high) if n
        ),
    )


def choose_backend(options: RunOptions, out: Output) -> Selection:
    selection = select(options.backend)
    note = selection.fallback_note()
    if note:
        out.note(note)
    if options.cpus is not None and selection.backend.name == "poll":
        out.note("--cpus is ignored by the poll backend")
    out.info(f"backend {selection.backend.name}: {selection.probe.reason}")
    return selection


def make_sandbox(selection: Selection, options: RunOptions, name: str, out: Output) -> Sandbox:
    """The sandbox for one try. With ``--backend auto`` a cgroup backend that
    fails here falls back to polling, saying so."""
    limits = limits_for(options)
    try:
        return selection.backend.create(limits, name)
    except BackendError as err:
        if options.backend != "auto" or selection.backend.name == "poll":
            raise
        from seqbox.backends.poll import PollBackend

        out.note(f"{selection.backend.name} failed ({err}); enforcing limits by polling instead")
        selection.backend = PollBackend(linux=True)
        return selection.backend.create(limits, name)


def nest_limits(options: RunOptions, holder: Mapping[str, object], out: Output) -> None:
    """A nested run never gets more than the run it is inside."""
    for key in ("mem", "pids"):
        outer = holder.get(key)
        mine = getattr(options, key)
        if isinstance(outer, int) and (mine is None or mine > outer):
            setattr(options, key, outer)
    out.info(
        f"nested inside pid {holder.get('pid')} (lock {holder.get('lock')!r}): "
        "not queueing; limits nest inside its sandbox"
    )


def execute(
    argv: list[str], options: RunOptions, out: Output, environ: Mapping[str, str], root: str
) -> RunResult:
    """Run ``argv`` under ``options`` in the project at ``root``."""
    from seqbox import leftovers
    from seqbox.project import project_key

    remember_ignored_signals()
    interrupts = Interrupts()
    interrupts.raising()
    try:
        key = project_key(root)
        run = Run(argv, options, out, environ, key, f"{leftovers.run_stamp()}-{os.getpid()}")
        run.join_queue()  # first, so arrival order is start order; the rest happens while waiting
        try:
            for path in leftovers.find(key):  # a few directory listings when there are none
                out.info(f"removing {path}, left by a crashed run")
                leftovers.remove(path)
            return run.execute(choose_backend(options, out), interrupts)
        finally:
            run.release()
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
        from seqbox import procinfo

        self.argv = argv
        self.options = options
        self.out = out
        self.key = key
        self.run_id = run_id
        self.env = dict(environ)
        self.env.update(options.extra_env())
        self.env[RUN_ID_ENV] = run_id
        self.environ = environ
        self.turn: Turn | None = None
        self.nested = False
        self.waited = 0.0
        self.me: dict[str, object] = {
            "pid": os.getpid(),
            "start": procinfo.start_time(os.getpid()),
            "command": argv,
            "run_id": run_id,
            "lock": options.lock,
            "mem": options.mem,
            "pids": options.pids,
        }

    def join_queue(self) -> None:
        """Take a number in the lock's queue, unless nested or ``--no-lock``."""
        if self.options.no_lock:
            return
        from seqbox import queue
        from seqbox.nesting import enclosing_holder

        holder = enclosing_holder(self.key, self.environ)
        if holder is not None:
            self.nested = True
            nest_limits(self.options, holder, self.out)
            return
        self.turn = queue.arrive(
            self.key, self.options.lock, self.options.slots, {**self.me, "arrived": time.time()}
        )
        self.out.info(f"in the queue of lock {self.options.lock!r} as number {self.turn.number}")

    def execute(self, selection: Selection, interrupts: Interrupts) -> RunResult:
        options = self.options
        policy = Policy(
            mem=options.mem,
            mem_high=options.mem_high,
            pids=options.pids,
            timeout=options.timeout,
            grace=options.grace,
            signal=options.signal,
            warn_at=options.warn_at,
            poll_interval=options.poll_interval,
        )
        log = _open_log(options.log, self.out)
        outcome: Outcome | None = None
        attempts, wall, cpu, peak, procs_peak = 0, 0.0, 0.0, 0, 0
        stdout = stderr = None
        try:
            for attempt in range(1, options.retry + 2):
                attempts = attempt
                if log is not None:
                    _log_line(
                        log, f"=== seqbox try {attempt}/{options.retry + 1}: {_shell_join(self.argv)}\n"
                    )
                outcome, stdout, stderr = self.one_try(attempt, selection, policy, interrupts, log)
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
            self.release()
        assert outcome is not None
        summary = summary_mod.build(
            command=self.argv,
            status=outcome.status,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            wall_s=wall,
            cpu_s=cpu,
            peak_mem_bytes=peak or None,
            mem_limit_bytes=options.mem,
            procs_peak=procs_peak,
            backend=selection.backend.name,
            lock=None if options.no_lock else options.lock,
            lock_wait_s=self.waited,
            attempts=attempts,
            run_id=self.run_id,
            log=os.path.abspath(options.log) if options.log else None,
        )
        if log is not None:
            _log_line(log, "=== seqbox summary: " + summary_mod.dumps(summary) + "\n")
            log.close()
        if options.report:
            summary_mod.write_report(options.report, summary)
        return RunResult(summary, outcome.exit_code, stdout, stderr)

    def one_try(
        self,
        attempt: int,
        selection: Selection,
        policy: Policy,
        interrupts: Interrupts,
        log: BinaryIO | None,
    ) -> tuple[Outcome, str | None, str | None]:
        """A fresh sandbox, the command parked in it, our turn, launch, supervise."""
        options = self.options
        name = f"{self.key}-{self.run_id}" + (f"-{attempt}" if attempt > 1 else "")
        sandbox = make_sandbox(selection, options, name, self.out)
        capture = _capture(options, log)
        stdout = stderr = None
        try:
            stdio = capture.stdio() if capture is not None else Stdio()
            foreground = terminal_foreground()
            try:
                prepared = sandbox.prepare(
                    self.argv, cwd=options.cwd, env=self.env, stdio=stdio, new_session=not foreground
                )
            except SpawnError as err:  # not found, not executable: nothing to queue for
                return spawn_failed(err, self.out), None, None
            if attempt == 1:
                self.wait_turn(prepared)

            def started(pid: int) -> None:
                if capture is not None:
                    capture.started()
                if self.turn is not None and self.turn.ticket_fd is not None:
                    info = {**self.me, "since": time.time(), "child": pid, **sandbox.describe()}
                    self.turn.started(info)

            last_try = options.retry == 0
            outcome = Supervisor(sandbox, policy, self.out, interrupts).run(
                prepared, foreground=foreground, started=started, ended=self.hand_over if last_try else None
            )
            if not _should_retry(outcome, options, attempt):
                self.release()  # the next run starts now; our bookkeeping can wait
        finally:
            try:
                if capture is not None:
                    stdout, stderr = capture.finish()
            finally:
                sandbox.dispose()
        return outcome, stdout, stderr

    def wait_turn(self, prepared: Prepared) -> None:
        """Wait for our turn (and the git guard) with the command parked. On
        any failure the parked child is abandoned before the error goes up."""
        from seqbox import queue

        start = time.monotonic()
        try:
            if self.turn is not None:
                from seqbox.waitline import WaitLine

                line = WaitLine(self.out, self.options.lock, self.turn.number)
                try:
                    self.turn.wait(timeout=self.options.wait_timeout, on_wait=line, tick=line.tick)
                except queue.Cancelled:
                    raise CancelledRun("cancelled by 'seqbox kill --all' before it started") from None
                finally:
                    line.done()
                self.clean_after_crash(self.turn.previous)
            if not self.nested and os.path.basename(self.argv[0]) == "git":
                from seqbox import gitguard

                gitguard.wait_for_index_lock(
                    self.options.cwd or os.getcwd(),
                    on_wait=lambda path: self.out.note(f"waiting for {path} to go away"),
                )
        except BaseException:
            self.release()
            abandon(prepared)
            raise
        self.waited = time.monotonic() - start

    def clean_after_crash(self, previous: dict[str, object] | None) -> None:
        """If the run before us died without ending its tree (its supervisor was
        SIGKILLed), its cgroups still run: end them before we start.

        On the handoff's path, so the check is kill(pid, 0), not /proc: the run
        before is usually exiting at this moment, and reading its /proc status
        waits for its memory to be torn down (1-1.5 ms measured). A pid reused
        since reads as alive here; the next run's start-up scan still finds its
        leftovers."""
        from seqbox import leftovers

        pid = None if previous is None else previous.get("pid")
        if not isinstance(pid, int):
            return
        try:
            os.kill(pid, 0)
            return
        except ProcessLookupError:
            pass
        except PermissionError:
            return
        paths = leftovers.find(self.key)
        for path in paths:
            leftovers.remove(path)
        if paths:
            names = sorted({os.path.basename(path) for path in paths})
            self.out.note(f"the run before (pid {pid}) died; ended what it left running: {', '.join(names)}")

    def hand_over(self) -> None:
        """The command is over: let the next run start, and step aside while it
        does (our remaining bookkeeping must not compete with its start-up for
        the CPU)."""
        if self.turn is None:
            return
        self.turn.give_back()
        try:
            os.nice(10)
        except OSError:
            pass
        self.release()

    def release(self) -> None:
        if self.turn is not None:
            self.turn.release()
            self.turn = None


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
        out.warn(f"warning: cannot write the log {path}: {err.strerror}; running without it")
        return None


def _log_line(log: BinaryIO | None, text: str) -> None:
    if log is not None:
        try:
            log.write(text.encode("utf-8", "replace"))
            log.flush()
        except OSError:
            pass


def _shell_join(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)
