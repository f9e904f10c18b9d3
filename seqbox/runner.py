"""``seqbox run`` as a library function: pick the backend, take a turn in the
project's queue, run each try in a fresh sandbox, build the summary.

Raises SeqboxError for what stops seqbox from doing its job; a command's
failure is a result, never an exception.
"""

from __future__ import annotations

import os
import time

from seqbox import summary as summary_mod
from seqbox.backends import Limits, Sandbox, Selection, select
from seqbox.errors import BackendError
from seqbox.interrupts import Interrupts
from seqbox.options import RunOptions
from seqbox.output import Output
from seqbox.spawn import Stdio, remember_ignored_signals
from seqbox.supervise import Outcome, Policy, Supervisor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import BinaryIO

    from seqbox.capture import Capture

PARENT_ENV = "SEQBOX_PARENT"


class RunResult:
    """What ``seqbox run`` produced: the summary and the exit code."""

    __slots__ = ("exit_code", "stderr", "stdout", "summary")

    def __init__(self, summary: dict[str, object], exit_code: int,
                 stdout: str | None = None, stderr: str | None = None) -> None:
        self.summary = summary
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"


def limits_for(options: RunOptions) -> Limits:
    return Limits(mem=options.mem, mem_high=options.mem_high, pids=options.pids,
                  cpus=options.cpus, poll_interval=options.poll_interval)


def choose_backend(options: RunOptions, out: Output) -> Selection:
    selection = select(options.backend)
    note = selection.fallback_note()
    if note:
        out.note(note)
    if options.cpus is not None and selection.backend.name == "poll":
        out.note("--cpus is ignored by the poll backend")
    out.info(f"backend {selection.backend.name}: {selection.probe.reason}")
    return selection


def make_sandbox(selection: Selection, options: RunOptions, run_id: str, out: Output) -> Sandbox:
    """The sandbox for one try. With ``--backend auto`` a cgroup backend that
    fails here falls back to polling, saying so."""
    limits = limits_for(options)
    try:
        return selection.backend.create(limits, run_id)
    except BackendError as err:
        if options.backend != "auto" or selection.backend.name == "poll":
            raise
        from seqbox.backends.poll import PollBackend

        out.note(f"{selection.backend.name} failed ({err}); enforcing limits by polling instead")
        selection.backend = PollBackend(subreaper=selection.backend.name.startswith("cgroup"))
        return selection.backend.create(limits, run_id)


def child_env(options: RunOptions, environ: Mapping[str, str], run_id: str) -> dict[str, str]:
    env = dict(environ)
    env.update(options.extra_env())
    env[PARENT_ENV] = f"{os.getpid()}:{run_id}"
    return env


def execute(argv: list[str], options: RunOptions, out: Output, environ: Mapping[str, str]) -> RunResult:
    """Run ``argv`` under ``options``; return the summary and exit code."""
    remember_ignored_signals()
    interrupts = Interrupts()
    interrupts.raising()
    run_id = new_run_id()
    selection = choose_backend(options, out)
    policy = Policy(mem=options.mem, mem_high=options.mem_high, pids=options.pids,
                    timeout=options.timeout, grace=options.grace, signal=options.signal,
                    warn_at=options.warn_at, poll_interval=options.poll_interval)
    env = child_env(options, environ, run_id)
    log = _open_log(options.log, out)
    outcome: Outcome | None = None
    attempts = 0
    wall = cpu = 0.0
    peak: int | None = None
    procs_peak = 0
    stdout = stderr = None
    try:
        for attempt in range(1, options.retry + 2):
            attempts = attempt
            sandbox = make_sandbox(selection, options, run_id if attempt == 1 else f"{run_id}-{attempt}", out)
            capture = _capture(options, log)
            try:
                stdio = capture.stdio() if capture is not None else Stdio()
                _log_line(log, f"=== seqbox try {attempt}/{options.retry + 1}: {_shell_join(argv)}\n")
                outcome = Supervisor(sandbox, policy, out, interrupts).run(
                    argv, cwd=options.cwd, env=env, stdio=stdio,
                    started=capture.started if capture is not None else None)
            finally:
                try:
                    if capture is not None:
                        stdout, stderr = capture.finish()
                finally:
                    sandbox.close()
            wall += outcome.wall_s
            cpu += outcome.cpu_s or 0.0
            peak = max(peak or 0, outcome.peak_mem_bytes or 0) or None
            procs_peak = max(procs_peak, outcome.procs_peak)
            _log_line(log, f"=== seqbox exit: status={outcome.status} exit_code={outcome.exit_code} "
                           f"wall_s={outcome.wall_s:.3f}\n")
            if not _should_retry(outcome, options, attempt):
                break
            out.note(f"try {attempt} ended with status {outcome.status} "
                     f"(exit {outcome.exit_code}); retrying")
    finally:
        interrupts.restore()
    assert outcome is not None
    summary = summary_mod.build(
        command=argv, status=outcome.status, exit_code=outcome.exit_code, signal=outcome.signal,
        wall_s=wall, cpu_s=cpu, peak_mem_bytes=peak, mem_limit_bytes=options.mem,
        procs_peak=procs_peak, backend=selection.backend.name, lock=None,
        lock_wait_s=0.0, attempts=attempts, run_id=run_id,
        log=os.path.abspath(options.log) if options.log else None,
    )
    if log is not None:
        _log_line(log, "=== seqbox summary: " + summary_mod.dumps(summary) + "\n")
        log.close()
    if options.report:
        summary_mod.write_report(options.report, summary)
    return RunResult(summary, outcome.exit_code, stdout, stderr)


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
        return open(path, "ab")  # noqa: SIM115 - closed at the end of execute()
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
