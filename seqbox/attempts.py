"""The tries of a run: for each, a fresh sandbox, the command parked in it,
admission (on the first), launch, supervise until the tree is gone. Tries
follow while ``--retry`` allows; the outcomes are returned, the last one last.

A command's failure is an outcome, never an exception.
"""

from __future__ import annotations

import os
import time

from seqbox.spawn import SpawnError, Stdio
from seqbox.supervise import Supervisor, spawn_failed, terminal_foreground

#: after handing the turn to a waiting run, how long a holder leaves the CPUs to
#: its command's start-up before doing its own bookkeeping (the summary, the run
#: log, removing its cgroups): on 2 cores, 1 ms of each hand-over (measured)
STEP_ASIDE_S = 0.01

TYPE_CHECKING = False
if TYPE_CHECKING:
    from seqbox.admit import Admission
    from seqbox.backends import Selection
    from seqbox.backends.base import Sandbox
    from seqbox.capture import Capture
    from seqbox.interrupts import Interrupts
    from seqbox.runner import Captured, Run
    from seqbox.runoptions import RunOptions
    from seqbox.supervise import Outcome
    from seqbox.transcript import Transcript


def run_attempts(
    run: Run,
    admission: Admission,
    selection: Selection,
    interrupts: Interrupts,
    transcript: Transcript | None,
) -> tuple[list[Outcome], Captured | None]:
    """Every try of the run, and with ``--json`` what the last one printed."""
    options = run.options
    outcomes: list[Outcome] = []
    captured = None
    tries = options.retry + 1
    try:
        for attempt in range(1, tries + 1):
            if transcript is not None:
                from seqbox.describe import command_line  # one line, even for a -c script

                transcript.line(f"=== seqbox try {attempt}/{tries}: {command_line(run.argv)}\n")
            name = f"{run.key}-{run.run_id}" + (f"-{attempt}" if attempt > 1 else "")
            sandbox, note = selection.make_sandbox(admission.limits, name, run.trees)
            if note:
                run.out.note(note)
            if admission.budget_run is not None:  # suspend, don't kill (section 3b)
                sandbox = admission.budget_run.wrap(sandbox, run.run_id, run.out, run.log)
            outcome, captured = one_try(run, admission, sandbox, interrupts, transcript, attempt)
            outcomes.append(outcome)
            if transcript is not None:
                transcript.line(
                    f"=== seqbox exit: status={outcome.status} exit_code={outcome.exit_code} "
                    f"wall_s={outcome.wall_s:.3f}\n"
                )
            if not should_retry(outcome, options, attempt):
                break
            run.out.note(
                f"try {attempt} ended with status {outcome.status} (exit {outcome.exit_code}); retrying"
            )
    finally:
        admission.release()  # whatever happened: the next run need not wait for our bookkeeping
    return outcomes, captured


def one_try(
    run: Run,
    admission: Admission,
    sandbox: Sandbox,
    interrupts: Interrupts,
    transcript: Transcript | None,
    attempt: int,
) -> tuple[Outcome, Captured | None]:
    """One try in a fresh sandbox (disposed of here): the command parked in
    it, admission, launch, supervise."""
    options = run.options
    capture = _capture(options, transcript)
    captured = None
    last_try = attempt > options.retry
    try:
        described = sandbox.describe()
        admission.describe(described)
        stdio = capture.stdio() if capture is not None else Stdio()
        foreground = terminal_foreground()
        try:
            prepared = sandbox.prepare(
                run.argv, cwd=options.cwd, env=run.env, stdio=stdio, new_session=not foreground
            )
        except SpawnError as err:  # not found, not executable: nothing to queue for
            return spawn_failed(err, run.out), None
        supervisor = Supervisor(sandbox, run.out, interrupts)  # before the turn: nothing left to do then
        supervisor.events = run.log
        admission.wait(prepared)

        def started(pid: int) -> None:
            if capture is not None:
                capture.started()
            admission.started()

        def settled() -> None:  # what can wait until the command has started up
            if run.log is not None:  # the command runs: the log may touch the disk now
                run.log.flush()

        def ended() -> None:  # the last try's command is over: let the next run start, and step aside
            waiting = admission.turn.others_wait()
            admission.release()
            try:
                os.nice(10)  # our bookkeeping must not compete with its start-up for the CPU
            except OSError:
                pass
            if waiting:  # nor, for its first moments, at all (its caller waits on it, ours on nothing but us)
                time.sleep(STEP_ASIDE_S)

        outcome = supervisor.run(
            prepared,
            foreground=foreground,
            started=started,
            settled=settled,
            ended=ended if last_try else None,
        )
        if not should_retry(outcome, options, attempt):
            admission.release()  # the next run starts now; our bookkeeping can wait
    finally:
        try:
            if capture is not None:
                captured = capture.finish()
                if capture.log_error is not None and transcript is not None:
                    transcript.failed(capture.log_error)
        finally:
            sandbox.dispose()
    return outcome, captured


def should_retry(outcome: Outcome, options: RunOptions, attempt: int) -> bool:
    """Whether another try follows ``outcome`` of try ``attempt``."""
    if attempt > options.retry or outcome.interrupted:
        return False
    if outcome.status == "memory":
        return options.retry_on_oom
    if outcome.status == "error":  # cannot execute / not found: trying again changes nothing
        return False
    return outcome.exit_code != 0


def _capture(options: RunOptions, transcript: Transcript | None) -> Capture | None:
    if not options.json and transcript is None:
        return None
    from seqbox.capture import Capture

    return Capture(capture=options.json, log=None if transcript is None else transcript.file)
