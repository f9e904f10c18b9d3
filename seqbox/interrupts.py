"""seqbox's own signal handling.

Two phases. While waiting for the lock, SIGINT/SIGTERM/SIGHUP/SIGQUIT raise
:class:`Interrupted`, so the wait unwinds and cleans up. While supervising,
every signal of interest is recorded and wakes the supervisor's ``select``
through a self-pipe (``signal.set_wakeup_fd``), so the loop sleeps until
something happens: a child exits (SIGCHLD), seqbox is asked to stop, or
``seqbox kill`` asks for the tree to go (SIGUSR1).
"""

from __future__ import annotations

import os
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
KILL_REQUEST = signal.SIGUSR1


class Interrupted(BaseException):
    """seqbox itself got a stop signal; exit with 128 + signum.

    A BaseException, like KeyboardInterrupt: no ``except Exception`` (a probe
    that must not fail, say) may swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum


def _raise(signum: int, frame: object) -> None:
    raise Interrupted(signum)


class Interrupts:
    """Records signals and wakes a select() loop."""

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self._old_wakeup = -1

    def raising(self) -> None:
        """Phase 1: stop signals raise Interrupted."""
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) != signal.SIG_IGN:
                signal.signal(sig, _raise)
        signal.signal(KILL_REQUEST, _raise)

    def recording(self) -> None:
        """Phase 2: every signal of interest is recorded and wakes the loop."""
        self._old_wakeup = signal.set_wakeup_fd(self.wake_w)
        for sig in (*STOP_SIGNALS, KILL_REQUEST, signal.SIGCHLD):
            if sig in STOP_SIGNALS and signal.getsignal(sig) == signal.SIG_IGN:
                continue  # started ignored (nohup): stay that way
            signal.signal(sig, self._record)

    def _record(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def take(self) -> list[int]:
        """The signals received since the last call, oldest first."""
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        taken, self.pending = self.pending, []
        return taken

    def restore(self) -> None:
        signal.set_wakeup_fd(self._old_wakeup)
        for sig in (*STOP_SIGNALS, KILL_REQUEST, signal.SIGCHLD):
            if signal.getsignal(sig) not in (signal.SIG_IGN, None):
                signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
