"""The line shown while waiting for the lock:

    seqbox: waiting for lock "default": 2 ahead; held by pid 4121 "pytest -x" for 1m12s
    seqbox: waiting for memory on lock "agents": needs 2.0 GiB, 1.2 GiB of 8.0 GiB free

redrawn in place every second on a TTY, printed every 30 s otherwise."""

from __future__ import annotations

import time

from seqbox.describe import describe_command
from seqbox.output import Output
from seqbox.units import format_duration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from seqbox.queue import QueueView
    from seqbox.records import Entry

TTY_EVERY_S = 1.0
LOG_EVERY_S = 30.0


def _number(entry: Entry) -> int:
    return entry.get("number", 0)


class WaitLine:
    def __init__(self, out: Output, lock: str, number: int) -> None:
        self.out = out
        self.lock = lock
        self.number = number
        self.tty = out.is_tty()
        self.every = TTY_EVERY_S if self.tty else LOG_EVERY_S
        self.last: float | None = None

    @property
    def tick(self) -> float:
        return self.every

    def __call__(self, look: Callable[[], QueueView], waited: float) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last < self.every:
            return
        self.last = now
        self.out.live(self.render(look()))

    def render(self, queue: QueueView) -> str:
        for waiter in queue.waiters:  # the head of a lock with a budget says what it waits for
            if _number(waiter) == self.number and "waiting_for" in waiter:
                return waiter["waiting_for"]
        ahead = len(queue.holders) + sum(1 for w in queue.waiters if _number(w) < self.number)
        text = f'waiting for lock "{self.lock}": {ahead} ahead'
        if queue.holders:
            now = time.time()
            held = []
            for holder in queue.holders:  # with --slots, every holder
                since = holder.get("since")
                took = format_duration(max(0.0, now - since)) if since is not None else "?"
                held.append(f'pid {holder.get("pid")} "{describe_command(holder.get("command"))}" for {took}')
            text += "; held by " + ", ".join(held)
        return text

    def done(self) -> None:
        self.out.end_live()
