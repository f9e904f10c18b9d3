"""``seqbox monitor``: the live view of a project's runs and queue, redrawn
every second until ``q`` (or Ctrl-C)."""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live

from seqbox.errors import SeqboxError
from seqbox.history import load
from seqbox.project import project_key
from seqbox.render import monitor_screen, plain
from seqbox.runlog import SUFFIX
from seqbox.status import collect

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from rich.console import RenderableType

    from seqbox.records import Status

REFRESH_S = 1.0
HISTORY = 120  # samples kept per run for the sparkline


class History:
    """Memory samples per running run: what its run log recorded before the
    monitor started, then one per refresh."""

    def __init__(self, log_dir: str | None) -> None:
        self.log_dir = log_dir
        self.values: dict[str, list[int]] = {}

    def add(self, data: Status) -> None:
        live = set()
        for lock in data["locks"]:
            for run in lock["running"]:
                run_id = str(run["run_id"])
                live.add(run_id)
                values = self.values.get(run_id)
                if values is None:
                    values = self.values[run_id] = self._from_log(run_id)
                if run["mem_bytes"] is not None:
                    values.append(run["mem_bytes"])
                del values[:-HISTORY]
        for run_id in set(self.values) - live:
            del self.values[run_id]

    def _from_log(self, run_id: str) -> list[int]:
        if self.log_dir is None:
            return []

        try:
            record = load(os.path.join(self.log_dir, run_id + SUFFIX))
        except SeqboxError:  # pruned meanwhile: the monitor only loses some history
            return []
        return record.mem_samples()


def screen(
    root: str, history: History, environ: Mapping[str, str] | None = None, live: bool = True
) -> RenderableType:
    data = collect(project_key(root), root, environ)
    history.add(data)
    return monitor_screen(data, history.values, live=live)


def run(root: str, log_dir: str | None, *, once: bool = False) -> int:
    """Show the live view until ``q``; with ``once``, print one frame."""
    console = Console(markup=False)
    history = History(log_dir)
    if once:
        frame = screen(root, history, live=False)
        if console.is_terminal:
            console.print(frame)
        else:  # a pipe or a file: nothing cut to 80 columns
            sys.stdout.write(plain(frame))
        return 0
    with _keys() as pressed, Live(console=console, screen=True, auto_refresh=False) as live:
        while True:
            live.update(screen(root, history), refresh=True)
            deadline = time.monotonic() + REFRESH_S
            while (left := deadline - time.monotonic()) > 0:
                if pressed(left) in ("q", "Q"):
                    return 0


class _keys:
    """Single key presses from a terminal on stdin (cbreak mode, restored on
    exit); without a terminal, no keys: just wait."""

    def __enter__(self) -> Callable[[float], str | None]:
        self.saved = None
        self.fd = sys.stdin.fileno() if sys.stdin is not None else -1
        if self.fd >= 0 and os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self.read

    def read(self, timeout: float) -> str | None:
        if self.saved is None:
            time.sleep(timeout)
            return None
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self.fd, 1)
        return data.decode("utf-8", "replace") if data else None

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
