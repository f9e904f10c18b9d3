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
from seqbox.spawn import Prepared, Stdio, abandon, remember_ignored_signals
from seqbox.supervise import Outcome, Policy, Supervisor, terminal_foreground

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
    return Limits(
        mem=options.mem,
        mem_high=options.mem_high,
        pids=options.pids,
        cpus=options.cpus,
        poll_interval=options.poll_interval,
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
        selection.backend = PollBackend(subreaper=True)
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
    from seqbox import leftovers, procinfo
    from seqbox.project import project_key

    remember_ignored_signals()
    interrupts = Interrupts()
    interrupts.raising()
    key = project_key(root)
    run_id = f"{leftovers.run_stamp()}-{os.getpid()}"
    for path in leftovers.find(key):
        out.info(f"removing {path}, left by a crashed run")
        leftovers.remove(path)
    selection = choose_backend(options, out)
    holder = None
    if not options.no_lock:
        from seqbox.nesting import enclosing_holder

        holder = enclosing_holder(key, environ)
        if holder is not None:
            nest_limits(options, holder, out)
    queued = not options.no_lock and holder is None
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
    env = dict(environ)
    env.update(options.extra_env())
    env[RUN_ID_ENV] = run_id
    me: dict[str, object] = {
        "pid": os.getpid(),
        "start": procinfo.start_time(os.getpid()),
        "command": argv,
        "run_id": run_id,
        "lock": options.lock,
        "mem": options.mem,
        "pids": options.pids,
    }
    log = _open_log(options.log, out)
    turn: Turn | None = None
    waited = 0.0
    outcome: Outcome | None = None
    attempts, wall, cpu, peak, procs_peak = 0, 0.0, 0.0, 0, 0
    stdout = stderr = None
    try:
        for attempt in range(1, options.retry + 2):
            attempts = attempt
            name = f"{key}-{run_id}" + (f"-{attempt}" if attempt > 1 else "")
            sandbox = make_sandbox(selection, options, name, out)
            capture = _capture(options, log)
            try:
                stdio = capture.stdio() if capture is not None else Stdio()
                foreground = terminal_foreground()
                prepared = sandbox.prepare(
                    argv, cwd=options.cwd, env=env, stdio=stdio, new_session=not foreground
                )
                if attempt == 1:
                    turn, waited = _take_turn(
                        prepared, options, key, me, out, queued, nested=holder is not None
                    )

                def started(
                    pid: int,
                    sandbox: Sandbox = sandbox,
                    capture: Capture | None = capture,
                    turn: Turn | None = turn,
                ) -> None:
                    if capture is not None:
                        capture.started()
                    if turn is not None and turn.ticket_fd is not None:
                        turn.started({**me, "since": time.time(), "child": pid, **sandbox.describe()})

                _log_line(log, f"=== seqbox try {attempt}/{options.retry + 1}: {_shell_join(argv)}\n")
                outcome = Supervisor(sandbox, policy, out, interrupts).run(
                    prepared, foreground=foreground, started=started
                )
                retry = _should_retry(outcome, options, attempt)
                if not retry and turn is not None:
                    turn.release()  # the next run starts now; our bookkeeping can wait
                    turn = None
            finally:
                try:
                    if capture is not None:
                        stdout, stderr = capture.finish()
                finally:
                    sandbox.close()
            wall += outcome.wall_s
            cpu += outcome.cpu_s or 0.0
            peak = max(peak, outcome.peak_mem_bytes or 0)
            procs_peak = max(procs_peak, outcome.procs_peak)
            _log_line(
                log,
                f"=== seqbox exit: status={outcome.status} exit_code={outcome.exit_code} "
                f"wall_s={outcome.wall_s:.3f}\n",
            )
            if not retry:
                break
            out.note(f"try {attempt} ended with status {outcome.status} (exit {outcome.exit_code}); retrying")
    finally:
        if turn is not None:
            turn.release()
        interrupts.restore()
    assert outcome is not None
    summary = summary_mod.build(
        command=argv,
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
        lock_wait_s=waited,
        attempts=attempts,
        run_id=run_id,
        log=os.path.abspath(options.log) if options.log else None,
    )
    if log is not None:
        _log_line(log, "=== seqbox summary: " + summary_mod.dumps(summary) + "\n")
        log.close()
    if options.report:
        summary_mod.write_report(options.report, summary)
    return RunResult(summary, outcome.exit_code, stdout, stderr)


def _take_turn(
    prepared: Prepared,
    options: RunOptions,
    key: str,
    me: dict[str, object],
    out: Output,
    queued: bool,
    *,
    nested: bool,
) -> tuple[Turn | None, float]:
    """Wait for our turn (and the git guard) with the command parked; return
    the turn and how long it took. On any failure the parked child is
    abandoned before the error goes up.
    """
    from seqbox import gitguard, queue

    turn = None
    start = time.monotonic()
    try:
        if queued:
            from seqbox.waitline import WaitLine

            turn = queue.arrive(key, options.lock, options.slots, {**me, "arrived": time.time()})
            out.info(f"in the queue of lock {options.lock!r} as number {turn.number}")
            line = WaitLine(out, options.lock, turn.number)
            try:
                turn.wait(timeout=options.wait_timeout, on_wait=line, tick=line.tick)
            except queue.Cancelled:
                raise CancelledRun("cancelled by 'seqbox kill --all' before it started") from None
            finally:
                line.done()
        if not nested and gitguard.is_git(me["command"]):  # type: ignore[arg-type]
            gitguard.wait_for_index_lock(
                options.cwd or os.getcwd(), on_wait=lambda path: out.note(f"waiting for {path} to go away")
            )
    except BaseException:
        if turn is not None:
            turn.release()
        abandon(prepared)
        raise
    return turn, time.monotonic() - start


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
