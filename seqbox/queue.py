"""The project queue's files: one FIFO queue per project and lock name, and
reading who holds and who waits.

Layout, under the per-user state directory (all 0700, opened O_NOFOLLOW)::

    projects/<project key>/locks/<lock name>/
        door        flock'd for a moment by each arrival; holds the last number
        t-<number>  a waiter's ticket: flock'd (exclusive) while it waits
        slot-<k>    flock'd (exclusive) by the k-th holder while it runs
        cancel      ``seqbox kill --all``: waiters numbered up to this give up
        bell        a FIFO: a holder that hands over writes a byte into it, which
                    wakes a head of the line waiting for room

Order: an arrival takes the next number under the door lock and creates its
ticket, already locked, by renaming a locked temporary file into place. A
waiter blocks on the ticket of the live waiter just ahead of it; only the head
of the line competes for a slot. So waiters start in arrival order, the kernel
wakes exactly one process per handoff, and a waiter or holder that dies (even
by SIGKILL) frees its place at once: its flock goes with it.

With a memory budget (``--budget``), the head also asks an admission gate
whether it fits next to the holders (their reservations are in their slot
files). A head that waits for room (a budget, or ``--slots`` above 1) sleeps
in poll() on the bell, which any holder handing over rings, and on a pidfd of
each holder, which wakes it when one dies (even by SIGKILL). It looks again at
least every ``RECHECK_S`` anyway: the gate also depends on what nothing rings
for (the machine's available memory). Nobody behind it overtakes it.

Who does what: :mod:`seqbox.tickets` (a place in the line),
:mod:`seqbox.slots` (a held slot), :mod:`seqbox.policies` (one slot, N slots,
a memory budget: when the head may take one), :mod:`seqbox.turn` (the wait),
:mod:`seqbox.housekeeping` (tidying, cancelling, listing from outside a run).
"""

from __future__ import annotations

import json
import os
import stat
import time

from seqbox import flocks
from seqbox.errors import StateError
from seqbox.schema import ENTRY, check
from seqbox.state import open_existing_dir, open_path, open_private_dir, open_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from seqbox.records import Entry

TICKET_PREFIX = "t-"
SLOT_PREFIX = "slot-"
DOOR = "door"
CANCEL = "cancel"
BELL = "bell"


class Cancelled(Exception):
    """``seqbox kill --all`` cancelled this waiter before it started."""


def ticket_name(number: int) -> str:
    return f"{TICKET_PREFIX}{number}"


def slot_name(k: int) -> str:
    return f"{SLOT_PREFIX}{k}"


def _numbered(names: list[str], prefix: str) -> list[int]:
    return sorted(int(n[len(prefix) :]) for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit())


class LockDir:
    """An open ``projects/<key>/locks/<name>`` directory."""

    def __init__(
        self, project_key: str, lock: str, environ: Mapping[str, str] | None = None, create: bool = True
    ) -> None:
        self.project_key = project_key
        self.lock = lock
        self.environ = environ
        self.fd = _open_lock_dir(project_key, lock, environ, create)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def names(self) -> list[str]:
        try:
            return os.listdir(self.fd)
        except FileNotFoundError:
            return []

    def tickets(self) -> list[int]:
        return _numbered(self.names(), TICKET_PREFIX)

    def slots(self) -> list[int]:
        return _numbered(self.names(), SLOT_PREFIX)

    def cancel_mark(self) -> int:
        fd = flocks.open_file(self.fd, CANCEL, create=False)
        if fd is None:
            return -1
        try:
            text = flocks.read_fd(fd).decode().strip()
            return int(text) if text.isdigit() else -1
        finally:
            os.close(fd)


def _open_lock_dir(project_key: str, lock: str, environ: Mapping[str, str] | None, create: bool) -> int:
    parts = ("projects", project_key, "locks", lock)
    state = open_state_dir(environ)
    try:
        fd = open_path(state, parts, "<state>", open_private_dir if create else open_existing_dir)
    finally:
        os.close(state)
    if fd is None:  # create=False, and a part is missing
        raise StateError(f"no such lock directory <state>/{'/'.join(parts)}")
    return fd


# -- reading entries --------------------------------------------------------------


def read_entry(dir_fd: int, name: str) -> Entry | None:
    """The entry a ticket or slot holds; None when absent, torn or not one."""
    fd = flocks.open_file(dir_fd, name, create=False)
    if fd is None:
        return None
    try:
        for _ in range(3):
            try:
                return parse_entry(flocks.read_fd(fd))
            except ValueError:
                time.sleep(0.001)
        return None
    finally:
        os.close(fd)


#: appended to a slot's entry by a holder that handed over in order (see Turn.hand_over)
ENDED_MARK = b"\nended\n"


def parse_entry(data: bytes) -> Entry | None:
    """A ticket's or slot's content: one JSON object, then :data:`ENDED_MARK`
    once its holder has handed over in order. Raises ValueError when torn."""
    entry = entry_from_json(json.loads(data.partition(b"\n")[0] or b"null"))
    if entry is not None and handed_over(data):
        entry["ended"] = True
    return entry


def handed_over(data: bytes) -> bool:
    """Whether a slot's content says its holder handed over in order (its entry, then :data:`ENDED_MARK`)."""
    return data.partition(b"\n")[2].startswith(ENDED_MARK[1:])


def entry_from_json(data: object) -> Entry | None:
    """What another process wrote, checked once here so that readers need not:
    a dict with a positive int ``pid``, each key of its kind (:data:`seqbox.schema.ENTRY`)."""
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    return check(data, ENTRY)  # type: ignore[return-value]  # checked key by key


def dumps(entry: Entry) -> bytes:
    """An entry as its file holds it (one line of JSON)."""
    return json.dumps(entry).encode()


def held(dir_fd: int, name: str) -> bool:
    """Whether someone holds ``name``'s lock (a live waiter or holder)."""
    fd = flocks.open_file(dir_fd, name, create=False)
    if fd is None:
        return False
    try:
        return not flocks.try_lock(fd, exclusive=False)
    finally:
        os.close(fd)


class QueueView:
    """Who holds a lock and who waits for it, now."""

    __slots__ = ("holders", "waiters")

    def __init__(self, holders: list[Entry], waiters: list[Entry]) -> None:
        self.holders = holders
        self.waiters = waiters


def view(lockdir: LockDir, *, prune: bool = False) -> QueueView:
    """The live holders (by slot) and waiters (in order) of a lock.

    A run holds its slot a moment before it leaves the line (until its command
    runs): it is a holder then, not also a waiter. With ``prune``, the tickets
    of dead waiters are removed.
    """
    held = holders(lockdir)
    numbers = {entry.get("number") for entry in held}
    waiters = _live_entries(lockdir, [ticket_name(n) for n in lockdir.tickets()], prune=prune)
    return QueueView(held, [entry for entry in waiters if entry.get("number") not in numbers])


def holders(lockdir: LockDir) -> list[Entry]:
    """The entries of the live holders, by slot."""
    return _live_entries(lockdir, [slot_name(k) for k in lockdir.slots()], prune=False)


def _live_entries(lockdir: LockDir, names: list[str], *, prune: bool) -> list[Entry]:
    """The entries of the files that are held (their process lives), in
    order; with ``prune``, the unheld files are removed."""
    entries = []
    for name in names:
        if held(lockdir.fd, name):
            entry = read_entry(lockdir.fd, name)
            if entry is not None:
                entries.append(entry)
        elif prune:
            unlink(lockdir.fd, name)
    return entries


def unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


# -- the bell ---------------------------------------------------------------------


def ring(dir_fd: int) -> None:
    """Wake the head of the line if it waits for room (costs one failed open when nobody does)."""
    try:
        fd = os.open(BELL, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:  # no bell yet, or nobody listening (ENXIO)
        return
    try:
        os.write(fd, b"\0")
    except OSError:  # full: a wake-up is pending anyway
        pass
    finally:
        os.close(fd)


def open_bell(dir_fd: int) -> int | None:
    """The bell, open for reading (and writing, so that it never reads as
    EOF), non-blocking; None where no FIFO can be made (then we poll)."""
    try:
        os.mkfifo(BELL, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        pass
    except (OSError, NotImplementedError):
        return None
    try:
        fd = os.open(BELL, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd
