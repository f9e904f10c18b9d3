"""Supervise one try of the command inside a sandbox.

The loop sleeps in ``select`` until a signal arrives (a child exited, seqbox
was asked to stop, ``seqbox kill``) or the next deadline: a sample of the tree
(every ``poll_interval``), the timeout, the end of the grace period. When the
command's main process ends, whatever is left of its tree is killed: the
sandbox never outlives the command.
"""

from __future__ import annotations

import math
import os
import resource
import select
import signal
import time

from seqbox.backends.base import Sandbox
from seqbox.deadline import Alarm, Deadline
from seqbox.interrupts import KILL_REQUEST, STOP_SIGNALS, Interrupts
from seqbox.spawn import Prepared, SpawnError, exit_status, forget, launch, reap
from seqbox.units import format_duration, format_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from seqbox.output import Output
    from seqbox.records import Culprit
    from seqbox.runlog import RunLog


#: a command still running after this gets the notifications that are costly to set up
ARM_LATER_AFTER_S = 0.05
#: the command's first moments are its own: what can wait (seqbox/attempts.py's
#: ``settled``) waits this long, so that it does not take a CPU from the command's
#: start-up (on 2 cores, 0.5 ms of each queue hand-over, measured)
SETTLE_AFTER_S = 0.01
#: above the warning threshold, how often the tree is read per process (for the
#: culprit) when its usage is not the highest yet
TOP_EVERY_S = 1.0


class Outcome:
    """How one try ended: the summary's fields that belong to a try."""

    __slots__ = (
        "cpu_s",
        "culprit",
        "exit_code",
        "frozen_s",
        "interrupted",
        "peak_mem_bytes",
        "procs_peak",
        "signal",
        "status",
        "wall_s",
    )

    def __init__(
        self,
        status: str,
        exit_code: int,
        signal: int | None = None,
        wall_s: float = 0.0,
        cpu_s: float | None = None,
        peak_mem_bytes: int | None = None,
        procs_peak: int = 0,
        interrupted: bool = False,
        frozen_s: float = 0.0,
        culprit: list[Culprit] | None = None,
    ) -> None:
        self.status = status
        self.exit_code = exit_code
        self.signal = signal
        self.wall_s = wall_s
        self.cpu_s = cpu_s
        self.peak_mem_bytes = peak_mem_bytes
        self.procs_peak = procs_peak
        self.interrupted = interrupted
        #: time the tree spent frozen, not counted against --timeout
        self.frozen_s = frozen_s
        self.culprit = culprit

    def __repr__(self) -> str:
        return f"Outcome({self.status!r}, exit_code={self.exit_code}, signal={self.signal})"


def terminal_foreground() -> bool:
    """True when seqbox runs in the foreground of its terminal: the command
    then stays in seqbox's process group, so Ctrl-C, Ctrl-Z and /dev/tty work
    as if seqbox were not there. Otherwise the command gets its own session."""
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


class Supervisor:
    """Runs one try: spawn in the sandbox, enforce, tear down."""

    def __init__(self, sandbox: Sandbox, out: Output, interrupts: Interrupts) -> None:
        self.sandbox = sandbox
        self.limits = sandbox.limits
        self.out = out
        self.interrupts = interrupts
        self.reason: str | None = None  # memory | pids | timeout | interrupt | killed
        self.stop_signal: int | None = None
        #: --timeout's clock (set when the command starts); the end of the grace period
        self.deadline = Deadline(None)
        self.kill = Alarm()
        self.killed_after_grace = False  # the tree outlived the stop signal's grace
        self.procs_peak = 0
        self.warned_at = False
        self.warned_high = False
        self.events: RunLog | None = None  # the run log, if any
        # Near the limit, the biggest processes at the fullest sample (the culprit):
        # read per process only above this usage, so a healthy run costs nothing more.
        from seqbox.culprit import threshold

        self.top_at = threshold(self.limits.mem, self.limits.warn_at)
        self.top: list[tuple[int, str, int]] = []
        self.top_named: dict[int, str] = {}  # each command line read, by pid
        self.top_total = -1
        self.top_mem = -1
        self.top_step = (self.limits.mem or 0) // 100  # "higher" is by 1 % of the limit
        self.top_read_at = -math.inf

    def run(
        self,
        prepared: Prepared,
        *,
        foreground: bool,
        started: Callable[[int], None] | None = None,
        settled: Callable[[], None] | None = None,
        ended: Callable[[], None] | None = None,
    ) -> Outcome:
        """Launch the prepared child and supervise it until its tree is gone.

        ``foreground`` says the child stays in seqbox's process group (see
        :func:`terminal_foreground`). ``started`` is called with its pid once it
        runs; ``settled`` once it has run for :data:`SETTLE_AFTER_S` (not at all
        when it ends sooner); ``ended`` as soon as its main process has exited and
        the final kill of the rest of its tree has been issued (the queue's turn
        can go then).
        """
        sandbox, limits = self.sandbox, self.limits
        self.interrupts.recording()
        rusage_before = _children_cpu()
        start = time.monotonic()
        pid = launch(prepared)
        if started is not None:
            started(pid)
        skip_pgrp = os.getpgrp() if foreground else None
        self.deadline = deadline = Deadline(limits.timeout, start)
        # Sleep until something happens: a signal (a child exited, seqbox was asked
        # to stop), a kernel memory notification, or the next deadline. Cgroup
        # backends sample rarely: the kernel enforces and notifies.
        poller = select.poll()
        poller.register(self.interrupts.wake_r, select.POLLIN)
        watched = set()
        for fd, mask in sandbox.watch_fds():
            poller.register(fd, mask)
            watched.add(fd)
        next_sample = start  # at once: a command of a few ms still gets a sample
        arm_at: float | None = start + ARM_LATER_AFTER_S
        settle_at = start + SETTLE_AFTER_S
        status: int | None = None
        while True:
            reap()
            status = exit_status(pid)
            if status is not None:
                break
            self._handle_signals(skip_pgrp)
            now = time.monotonic()
            if settled is not None and now >= settle_at:
                settled()
                settled = None
            if arm_at is not None and now >= arm_at:  # the command runs for a while: look closer
                arm_at = None
                for fd, mask in sandbox.watch_later():
                    poller.register(fd, mask)
                    watched.add(fd)
                next_sample = now
            if now >= next_sample:
                self._sample()
                next_sample = now + sandbox.next_sample_in()
            if self.reason is None and deadline.expired(now):
                self._timeout()
            if self.kill.due(now):
                self.killed_after_grace = True
                sandbox.kill_all()
            wake = [next_sample] if arm_at is None else [next_sample, arm_at]
            if settled is not None:
                wake.append(settle_at)
            if deadline.at is not None and self.reason is None:
                wake.append(deadline.at)
            if self.kill.at is not None:
                wake.append(self.kill.at)
            timeout_ms = max(0, math.ceil((min(wake) - time.monotonic()) * 1000))
            notified = [fd for fd, _ in poller.poll(timeout_ms) if fd in watched]
            if notified:
                sandbox.acknowledge(notified)
                self._sample()  # the kernel says memory changed: look now
        wall = time.monotonic() - start
        self.deadline.resume()  # a tree frozen to the end: its frozen time is complete
        forget(pid)
        sandbox.command_ended(status)
        # The final kill: nothing of the tree outlives the command.
        if not sandbox.is_empty():
            sandbox.kill_all()
        if ended is not None:
            ended()
        sandbox.wait_empty()
        self._handle_signals(skip_pgrp)
        if self.reason is None and sandbox.memory_exceeded(None):
            self.reason = "memory"
            self._logged_kill("memory", "the kernel's OOM killer acted inside the sandbox")
        cpu = sandbox.cpu_seconds()
        if cpu is None:
            cpu = _children_cpu() - rusage_before
        return self._outcome(status, wall, cpu)

    # -- events -----------------------------------------------------------------

    def _handle_signals(self, skip_pgrp: int | None) -> None:
        for signum in self.interrupts.take():
            if signum == KILL_REQUEST:
                if self.reason not in ("memory", "interrupt"):
                    self.reason = "killed"
                self._logged_kill("killed", "killed by 'seqbox kill'")
                self.sandbox.kill_all()
            elif signum in STOP_SIGNALS:
                if self.stop_signal is None:
                    self.stop_signal = signum
                    self.reason = "interrupt"
                    self._logged_kill("interrupt", f"seqbox got signal {signum}")
                    # From a terminal, the command's process group got it too.
                    from_tty = signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
                    self.sandbox.signal_all(signum, skip_pgrp if from_tty else None)
                    self.kill.set_in(self.limits.grace)
                else:  # a second stop signal: no more grace
                    self.sandbox.kill_all()

    def _sample(self) -> None:
        sandbox, limits = self.sandbox, self.limits
        usage = sandbox.sample()  # a run of a lock with a budget may freeze or thaw itself here (3b)
        if sandbox.frozen:  # time frozen does not count toward --timeout
            self.deadline.pause()
        else:
            self.deadline.resume()
        self.procs_peak = max(self.procs_peak, usage.procs)  # the kernel's pids.peak is read once, at the end
        if self.top_at is not None and usage.mem >= self.top_at:
            self._read_top(usage.mem)
        if self.events is not None:
            self.events.sample(usage.mem, usage.procs, sandbox.cpu_seconds)
        if self.reason not in ("memory", "interrupt") and sandbox.memory_exceeded(usage):
            self.reason = "memory"
            # the kernel may have freed some already: its peak is what reached the limit
            mem = max(usage.mem, sandbox.peak_mem() or 0)
            limit = format_size(limits.mem) if limits.mem else "of the enclosing sandbox"
            self._logged_kill("memory", f"memory limit {limit} exceeded (at {format_size(mem)})", mem=mem)
            sandbox.kill_all()
            return
        if self.reason is None and sandbox.pids_exceeded(usage):
            self.reason = "pids"
            self._logged_kill("pids", f"process limit {limits.pids} exceeded", procs=usage.procs)
            sandbox.kill_all()
            return
        if limits.mem and limits.warn_at and not self.warned_at and usage.mem > limits.warn_at * limits.mem:
            self.warned_at = True
            share = 100 * usage.mem / limits.mem
            self._warn(
                f"warning: memory at {share:.0f}% of the limit "
                f"({format_size(usage.mem)} of {format_size(limits.mem)})"
            )
        if (
            limits.mem_high
            and not self.warned_high
            and not sandbox.throttles_mem_high
            and usage.mem > limits.mem_high
        ):
            self.warned_high = True
            self._warn(
                f"warning: memory above --mem-high {format_size(limits.mem_high)} ({format_size(usage.mem)})"
            )

    def _read_top(self, mem: int) -> None:
        """Remember the tree's biggest processes at its fullest sample, by the
        sum of what each process holds (after the kernel's OOM killer acted, the
        usage can still be high while the victim holds nothing: the survivors
        are no culprit). Read when the usage is the highest yet (by 1 % of the
        limit), else at most every :data:`TOP_EVERY_S` (a polled tree is sampled
        10 times a second)."""
        now = time.monotonic()
        if mem < self.top_mem + self.top_step and now - self.top_read_at < TOP_EVERY_S:
            return
        from seqbox.topprocs import biggest

        self.top_mem, self.top_read_at = max(mem, self.top_mem), now
        top, total = biggest(self.sandbox.pids(), named=self.top_named)
        if top and total >= self.top_total:
            self.top, self.top_total = top, total

    def _culprit(self, kind: str, peak: int | None) -> list[Culprit] | None:
        from seqbox.culprit import entries, wanted

        if not self.top or not wanted(kind, peak, self.limits.mem):
            return None
        return entries(self.top)

    def _warn(self, message: str) -> None:
        self.out.warning(message)
        if self.events is not None:
            self.events.event("warn", message=message)

    def _logged_kill(self, reason: str, message: str, **fields: object) -> None:
        if self.events is not None:
            self.events.event("kill", reason=reason, message=message, **fields)

    def _timeout(self) -> None:
        self.reason = "timeout"
        self._logged_kill("timeout", f"timeout after {format_duration(self.limits.timeout or 0)}")
        self.sandbox.signal_all(self.limits.signal)
        self.kill.set_in(self.limits.grace)

    # -- results ----------------------------------------------------------------

    def _outcome(self, status: int, wall: float, cpu: float) -> Outcome:
        refused = self.sandbox.forks_refused() if self.limits.pids else None
        if refused:
            from seqbox.describe import plural

            forks = plural(refused, "fork")
            self._warn(
                f"--pids {self.limits.pids} refused {forks} of the command "
                "(its 'cannot fork' errors); raise --pids if it needs more processes"
            )
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        peak = self.sandbox.peak_mem()
        culprit = self._culprit("memory" if self.reason == "memory" else "", peak)
        kind, code = self._verdict(status, sig, peak, culprit)
        return Outcome(
            kind,
            code,
            signal=sig,
            wall_s=wall,
            cpu_s=cpu,
            peak_mem_bytes=peak,
            procs_peak=max(self.procs_peak, self.sandbox.tasks_peak() or 0, 1),
            interrupted=self.reason == "interrupt",
            frozen_s=self.deadline.frozen_s,
            culprit=culprit,
        )

    def _verdict(
        self, status: int, sig: int | None, peak: int | None, culprit: list[Culprit] | None = None
    ) -> tuple[str, int]:
        """(status, exit code) by the first reason the tree was stopped for."""
        limits, reason = self.limits, self.reason
        if reason == "memory":
            from seqbox.culprit import kill_hint

            hit = self.sandbox.which_limit()
            if hit is not None and hit.kind != "run":  # a limit above this run's (a container's...)
                self.out.note(hit.message(peak))
                return "memory", 137
            limit = format_size(limits.mem) if limits.mem else "of the enclosing sandbox"
            hint = kill_hint(culprit)
            self.out.note(f"killed: memory limit {limit} exceeded (peak {format_size(peak)}){hint}")
            return "memory", 137
        if reason == "interrupt" and self.stop_signal is not None:
            return "signal", 128 + self.stop_signal
        if reason == "timeout":
            said = f"timeout: stopped after {format_duration(limits.timeout or 0)}"
            if self.killed_after_grace:
                sig = limits.signal
                name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
                grace = format_duration(limits.grace)
                said += f"; the tree ignored {name} and was SIGKILLed after the {grace} grace"
            self.out.note(said)
            return "timeout", 124
        if reason == "pids":
            self.out.note(f"killed: process limit {limits.pids} exceeded")
            return "signal", 128 + signal.SIGKILL
        if reason == "killed":
            self.out.note("killed by 'seqbox kill'")
            return "signal", 128 + (sig or signal.SIGKILL)
        if sig is not None:
            return "signal", 128 + sig
        code = os.WEXITSTATUS(status)
        return ("ok" if code == 0 else "failed"), code


def spawn_failed(err: SpawnError, out: Output) -> Outcome:
    """The outcome of a command that could not be started (126/127, or 125)."""
    if err.stage == "exec":
        what = "command not found" if err.exit_code == 127 else "cannot execute"
        out.error(f"{what}: {err.argv0} ({os.strerror(err.errno)})")
        return Outcome("error", err.exit_code)
    if err.stage == "chdir":
        out.error(f"cannot change directory: {os.strerror(err.errno)}")
    else:
        out.error(f"cannot start the command in the sandbox ({err.stage}: {os.strerror(err.errno)})")
    return Outcome("error", 125)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
