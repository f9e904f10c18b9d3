"""Suspend, don't kill (section 3b): a run of a lock with a budget freezes its
own tree when the lock's runs together near the budget, and thaws when there
is room again.

Each holder's supervisor publishes, on the lock's *board* (one small file per
running holder in the state directory, ``budget/<project key>/<lock>/``), its
tree's memory, its reservation and whether it is frozen. At each sample it
reads the board and the lock's total (the lock's parent cgroup's usage on
cgroup backends, see seqbox/ceiling.py; the sum of the published usages on
poll) and applies the pure rules of seqbox/learn.py to itself only: the one
chosen freezes its own tree (cgroup v2 ``cgroup.freeze``, the v1 freezer, or
SIGSTOP of the polled tree), the first frozen thaws first. Admission looks at
the board too: nobody starts while a run is frozen.

:class:`Suspendable` wraps the run's sandbox, so that the supervisor needs to
know nothing of this but the frozen time (``frozen_s``, which does not count
toward ``--timeout``): every kill and signal thaws the tree first (a frozen
task cannot die), and so does closing the sandbox, whatever ended the run. A
supervisor that dies with its tree frozen leaves a cgroup the next run's
leftover handling thaws before it kills (:func:`thaw_cgroup`).
"""

from __future__ import annotations

import json
import os
import select
import signal
import time

from seqbox.backends import procinfo
from seqbox.backends.base import Sandbox
from seqbox.backends.cgroup.leftovers import thaw as thaw_cgroup
from seqbox.ceiling import leave, usage
from seqbox.learn import FREEZE_AT, GROW_WINDOW_S, Holding, freezing, growth, to_thaw
from seqbox.state import open_private_dir, open_state_dir, state_dir_path
from seqbox.units import format_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from seqbox.backends.base import Usage
    from seqbox.backends.cgroup.enclosing import LimitHit
    from seqbox.output import Output
    from seqbox.records import SandboxInfo
    from seqbox.runlog import RunLog
    from seqbox.spawn import Prepared, Stdio

__all__ = ["Board", "Suspendable", "freezer_of", "frozen_runs", "holdings", "thaw_cgroup"]

#: how often a run of a lock with a budget looks at the lock's total (at most)
SAMPLE_S = 0.1
#: how long a freeze may take to settle before the run goes on anyway
FREEZE_SETTLE_S = 1.0
#: how often a run refreshes its record on the board while there is nothing to decide
PUBLISH_S = 1.0
#: who freezes is decided only on records this fresh (every holder refreshes its
#: own at each sample once the total nears the budget)
FRESH_S = 0.5
#: a board entry not refreshed for this long belongs to a stuck or dead supervisor
STALE_S = 30.0


# -- freezing one tree ------------------------------------------------------------


def freezer_of(cgroups: list[str]) -> tuple[str, str] | None:
    """(kind, file) that freezes a sandbox's tree: the v1 freezer's
    ``freezer.state``, else cgroup v2's ``cgroup.freeze`` (the run's own
    cgroup, or its unified one on a hybrid layout); None: no cgroup can."""
    for path in cgroups:
        state = os.path.join(path, "freezer.state")
        if os.path.exists(state):
            return "v1", state
    for path in cgroups:
        freeze = os.path.join(path, "cgroup.freeze")
        if os.path.exists(freeze):
            return "v2", freeze
    return None


def _write(path: str, value: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def _settled(kind: str, file: str) -> bool:
    """Whether the freeze took (v1: FROZEN; v2: ``frozen 1`` in cgroup.events)."""
    try:
        if kind == "v1":
            with open(file) as f:
                return f.read().strip() == "FROZEN"
        with open(os.path.join(os.path.dirname(file), "cgroup.events")) as f:
            return "frozen 1" in f.read()
    except OSError:
        return True


# -- the board --------------------------------------------------------------------


class Board:
    """The running holders of one lock with a budget, as they publish themselves."""

    def __init__(self, project_key: str, lock: str, environ: Mapping[str, str] | None = None) -> None:
        shown = os.path.join(state_dir_path(environ), "budget")
        state_fd = open_state_dir(environ)
        try:
            top = open_private_dir(state_fd, "budget", shown)
        finally:
            os.close(state_fd)
        try:
            project = open_private_dir(top, project_key, os.path.join(shown, project_key))
        finally:
            os.close(top)
        try:
            self.fd = open_private_dir(project, lock, os.path.join(shown, project_key, lock))
        finally:
            os.close(project)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def publish(self, name: str, record: dict[str, object]) -> None:
        """Write our record (a new file renamed over the old: readers never see half)."""
        temporary = f".{name}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=self.fd)  # fmt: skip
            try:
                os.write(fd, json.dumps(record).encode())
            finally:
                os.close(fd)
            os.rename(temporary, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError:
            pass  # the board is advisory: the kernel's ceiling still holds

    def remove(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except OSError:
            pass

    def read(self) -> dict[str, dict[str, object]]:
        """Every live holder's record by name; a dead one's is removed."""
        records: dict[str, dict[str, object]] = {}
        try:
            names = os.listdir(self.fd)
        except OSError:
            return records
        for name in names:
            if name.startswith("."):
                continue
            record = _read_record(self.fd, name)
            if record is None:
                continue
            pid, start = record.get("pid"), record.get("start")
            if not isinstance(pid, int) or not procinfo.is_alive(
                pid, start if isinstance(start, float) else None
            ):
                self.remove(name)
                continue
            records[name] = record
        return records


def _read_record(dir_fd: int, name: str) -> dict[str, object] | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            data = os.read(fd, 65536)
        finally:
            os.close(fd)
        record = json.loads(data.decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def holdings(records: Mapping[str, Mapping[str, object]]) -> list[Holding]:
    out = []
    for name, record in records.items():
        usage, reserved = record.get("usage"), record.get("reservation")
        frozen, since, grew = record.get("frozen_since"), record.get("since"), record.get("grew")
        out.append(Holding(
            name,
            usage if isinstance(usage, int) else 0,
            reserved if isinstance(reserved, int) else 0,
            frozen_since=float(frozen) if isinstance(frozen, (int, float)) else None,
            since=float(since) if isinstance(since, (int, float)) else 0.0,
            grew=grew if isinstance(grew, int) else 0,
        ))  # fmt: skip
    return out


def frozen_runs(project_key: str, lock: str, environ: Mapping[str, str] | None = None) -> dict[str, float]:
    """The run ids of the lock's frozen holders, with when each froze (for
    ``status``, ``monitor`` and admission). Empty when the lock has no board."""
    path = os.path.join(state_dir_path(environ), "budget", project_key, lock)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        found = {}
        for name in os.listdir(fd):
            record = None if name.startswith(".") else _read_record(fd, name)
            if record is not None and isinstance(record.get("frozen_since"), (int, float)):
                pid = record.get("pid")
                if isinstance(pid, int) and procinfo.is_alive(pid, None):
                    found[name] = float(record["frozen_since"])  # type: ignore[arg-type]
        return found
    finally:
        os.close(fd)


# -- the sandbox that suspends itself --------------------------------------------


class Suspendable(Sandbox):
    """A run's sandbox under a lock with a budget: it watches the lock's total
    at each sample and freezes or thaws its own tree by the rules."""

    def __init__(
        self,
        inner: Sandbox,
        *,
        board: Board,
        name: str,
        reservation: int,
        budget: int,
        lock: str,
        parent: str | None,
        out: Output,
        events: RunLog | None,
    ) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.limits = inner.limits
        self.throttles_mem_high = inner.throttles_mem_high
        self.sample_interval = min(inner.sample_interval, SAMPLE_S)
        self.cgroups = inner.cgroups
        self.board = board
        self.name = name
        self.reservation = reservation
        self.budget = budget
        self.lock = lock
        self.parent = parent
        self.out = out
        self.events = events
        self.frozen_at: float | None = None  # monotonic
        self.frozen_epoch: float | None = None
        self.frozen_total = 0.0
        self.freezes = 0
        self.usage = 0
        self.since = time.time()
        self._record: dict[str, object] = {}
        self._freezer: tuple[str, str] | bool | None = False  # not looked up yet
        self._watch: list[int] = []
        self._published_at = -PUBLISH_S
        self._samples: list[tuple[float, int]] = []

    # what suspension adds ------------------------------------------------------

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None

    @property
    def frozen_s(self) -> float:
        ongoing = 0.0 if self.frozen_at is None else time.monotonic() - self.frozen_at
        return self.frozen_total + ongoing

    def _publish(self) -> None:
        self._published_at = time.monotonic()
        if not self._record:
            pid = os.getpid()
            self._record = {"pid": pid, "start": procinfo.start_time(pid), "since": self.since}
        now = {"usage": self.usage, "reservation": self.reservation, "frozen_since": self.frozen_epoch,
               "grew": growth(self._samples, time.monotonic()), "t": round(time.time(), 3)}  # fmt: skip
        self.board.publish(self.name, {**self._record, **now})

    def look(self) -> None:
        """Read the board and the lock's total; freeze or thaw ourselves by the rules.
        While the lock's parent says the total is under the freezing line and we
        run, there is nothing to decide: one file read, and our record refreshed
        about once a second (the others read it when they have a decision to make)."""
        total = None
        if self.parent is not None:
            total = usage(self.parent)
            if total is not None and self.frozen_at is None and total <= FREEZE_AT * self.budget:
                if time.monotonic() - self._published_at >= PUBLISH_S:
                    self._publish()
                return
        self._publish()
        records = self.board.read()
        now = time.time()
        board = [h for h in holdings(records) if isinstance(records[h.name].get("t"), (int, float))
                 and now - float(records[h.name]["t"]) < STALE_S]  # type: ignore[arg-type]  # fmt: skip
        if total is None:
            total = sum(h.usage for h in board)
        if self.frozen_at is None:
            if any(now - float(records[h.name]["t"]) > FRESH_S for h in board):  # type: ignore[arg-type]
                return  # a holder's record is older than its usage now: it refreshes it within a sample
            if self.name in freezing(board, total, self.budget):
                self.freeze(total)
        elif to_thaw(board, total, self.budget) == self.name:
            self.thaw(total)

    def _freezer_file(self) -> tuple[str, str] | None:
        if self._freezer is False:
            self._freezer = freezer_of(self.inner.cgroups) if self.inner.cgroups else None
        return self._freezer if isinstance(self._freezer, tuple) else None

    def freeze(self, total: int) -> None:
        freezer = self._freezer_file()
        if freezer is not None:
            kind, file = freezer
            _write(file, "FROZEN" if kind == "v1" else "1")
            deadline = time.monotonic() + FREEZE_SETTLE_S
            while not _settled(kind, file) and time.monotonic() < deadline:
                time.sleep(0.002)
        else:
            self._stop_tree(signal.SIGSTOP)
        self.frozen_at, self.frozen_epoch = time.monotonic(), time.time()
        self.freezes += 1
        self._publish()  # at once: nobody else should pick the same moment
        share = 100 * total / self.budget if self.budget else 0
        message = (
            f'frozen (budget): lock "{self.lock}" at {share:.0f}% of its budget {format_size(self.budget)}; '
            f"this run uses {format_size(self.usage)}, reserved {format_size(self.reservation)}"
        )
        self.out.info(message)
        if self.events is not None:
            self.events.event("freeze", message=message, mem=self.usage, total=total)

    def thaw(self, total: int | None = None) -> None:
        if self.frozen_at is None:
            return
        freezer = self._freezer_file()
        if freezer is not None:
            kind, file = freezer
            _write(file, "THAWED" if kind == "v1" else "0")
        else:
            self._stop_tree(signal.SIGCONT)
        took = time.monotonic() - self.frozen_at
        self.frozen_total += took
        self.frozen_at = self.frozen_epoch = None
        self._publish()
        self.out.info(f"thawed after {took:.1f}s frozen")
        if self.events is not None:
            self.events.event("thaw", frozen_s=round(took, 3), total=total)

    def _stop_tree(self, sig: int) -> None:
        """SIGSTOP (or SIGCONT) every process of the tree: rounds until no
        new one shows up (a child forked before its parent stopped)."""
        done: set[int] = set()
        for _ in range(10):
            fresh = [pid for pid in self.inner.pids() if pid not in done]
            if not fresh:
                break
            for pid in fresh:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
                done.add(pid)

    # the sandbox, with suspension --------------------------------------------------

    def sample(self) -> Usage:
        usage = self.inner.sample()
        self.usage = usage.mem
        now = time.monotonic()  # our usages of late: whether we grow (see learn.to_freeze)
        self._samples = [s for s in self._samples if now - s[0] <= GROW_WINDOW_S] + [(now, usage.mem)]
        self.look()
        return usage

    def watch_later(self) -> list[tuple[int, int]]:
        """On cgroup v1, the kernel wakes us when the lock's total crosses the
        freezing line (no need to wait for the next sample)."""
        fds = list(self.inner.watch_later())
        if self.parent is not None and hasattr(os, "eventfd"):
            control = os.path.join(self.parent, "cgroup.event_control")
            usage = os.path.join(self.parent, "memory.usage_in_bytes")
            if os.path.exists(control) and os.path.exists(usage):
                efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
                ufd = os.open(usage, os.O_RDONLY | os.O_CLOEXEC)
                if _write(control, f"{efd} {ufd} {int(FREEZE_AT * self.budget)}"):
                    self._watch += [efd, ufd]
                    fds.append((efd, select.POLLIN))
                else:
                    os.close(efd)
                    os.close(ufd)
        return fds

    def acknowledge(self, fds: list[int]) -> None:
        mine = [fd for fd in fds if fd in self._watch]
        for fd in mine:
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                pass
        self.inner.acknowledge([fd for fd in fds if fd not in mine])

    def signal_all(self, sig: int, skip_pgrp: int | None = None) -> None:
        self.thaw()  # a stopped or frozen tree would not act on it
        self.inner.signal_all(sig, skip_pgrp)

    def kill_all(self) -> None:
        self.thaw()
        self.inner.kill_all()

    def close(self) -> None:
        try:
            self.thaw()
        finally:
            for fd in self._watch:
                os.close(fd)
            self._watch = []
            self.board.remove(self.name)
            self.board.close()
            try:
                self.inner.close()
            finally:
                if self.parent is not None:
                    leave(self.parent)  # the last run of the lock removes its parent

    # plain delegation ----------------------------------------------------------------

    def prepare(
        self, argv: list[str], *, cwd: str | None, env: dict[str, str], stdio: Stdio, new_session: bool
    ) -> Prepared:
        return self.inner.prepare(argv, cwd=cwd, env=env, stdio=stdio, new_session=new_session)

    def describe(self) -> SandboxInfo:
        return self.inner.describe()

    def next_sample_in(self) -> float:
        return min(self.inner.next_sample_in(), SAMPLE_S)

    def memory_exceeded(self, usage: Usage | None) -> bool:
        return self.inner.memory_exceeded(usage)

    def command_ended(self, status: int) -> None:
        self.inner.command_ended(status)

    def watch_fds(self) -> list[tuple[int, int]]:
        return self.inner.watch_fds()

    def tasks_peak(self) -> int | None:
        return self.inner.tasks_peak()

    def forks_refused(self) -> int | None:
        return self.inner.forks_refused()

    def pids_exceeded(self, usage: Usage | None) -> bool:
        return self.inner.pids_exceeded(usage)

    def which_limit(self) -> LimitHit | None:
        return self.inner.which_limit()

    def peak_mem(self) -> int | None:
        return self.inner.peak_mem()

    def cpu_seconds(self) -> float | None:
        return self.inner.cpu_seconds()

    def pids(self) -> list[int]:
        return self.inner.pids()

    def is_empty(self) -> bool:
        return self.inner.is_empty()

    def wait_empty(self, timeout: float = 5.0) -> bool:
        return self.inner.wait_empty(timeout)
