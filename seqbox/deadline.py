"""The supervisor's clock for ``--timeout`` and the grace period after it.

A :class:`Deadline` counts the command's running time against a limit; time
between :meth:`Deadline.pause` and :meth:`Deadline.resume` (a frozen tree)
does not count. :class:`Deadline` with no limit never expires.
"""

from __future__ import annotations

import time


class Deadline:
    """A limit on running time, on the monotonic clock."""

    __slots__ = ("_paused_at", "frozen_s", "limit", "start")

    def __init__(self, limit: float | None, start: float | None = None) -> None:
        self.limit = limit or None
        self.start = time.monotonic() if start is None else start
        #: time spent paused so far (seconds), excluded from the limit
        self.frozen_s = 0.0
        self._paused_at: float | None = None

    @property
    def at(self) -> float | None:
        """The monotonic time at which the limit is reached; None: never, or paused."""
        if self.limit is None or self._paused_at is not None:
            return None
        return self.start + self.frozen_s + self.limit

    def expired(self, now: float) -> bool:
        at = self.at
        return at is not None and now >= at

    def pause(self, now: float | None = None) -> None:
        """Stop counting (the tree is frozen)."""
        if self._paused_at is None:
            self._paused_at = time.monotonic() if now is None else now

    def resume(self, now: float | None = None) -> None:
        """Count again; the paused time is added to :attr:`frozen_s`."""
        if self._paused_at is not None:
            self.frozen_s += (time.monotonic() if now is None else now) - self._paused_at
            self._paused_at = None


class Alarm:
    """A one-shot moment (the end of the grace period): set, due, cleared."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None

    def set_in(self, seconds: float, now: float | None = None) -> None:
        self.at = (time.monotonic() if now is None else now) + seconds

    def due(self, now: float) -> bool:
        """True once when the moment has come (then it is cleared)."""
        if self.at is not None and now >= self.at:
            self.at = None
            return True
        return False
