"""The project queue: one FIFO queue per project and lock name.

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
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time

from seqbox import flocks
from seqbox.errors import LockTimeout, StateError
from seqbox.jsontext import dumps, loads
from seqbox.state import open_private_dir, open_state_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from seqbox.admission import Gate
    from seqbox.records import Entry, SandboxInfo

    WaitHook = Callable[[Callable[[], "QueueView"], float], None]

TICKET_PREFIX = "t-"
SLOT_PREFIX = "slot-"
DOOR = "door"
CANCEL = "cancel"
BELL = "bell"
#: how often a head waiting for room looks again where holders cannot be watched
#: by pidfd (before Linux 5.3, and off Linux): a holder killed by SIGKILL rings no bell
HEAD_POLL_S = 0.02
RECHECK_S = 0.5  # with a budget: how often a head that cannot fit looks again


class Cancelled(Exception):
    """``seqbox kill --all`` cancelled this waiter before it started."""


def _number(name: str) -> int:
    return int(name[len(TICKET_PREFIX) :])


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
        return sorted(
            _number(n)
            for n in self.names()
            if n.startswith(TICKET_PREFIX) and n[len(TICKET_PREFIX) :].isdigit()
        )

    def slots(self) -> list[int]:
        return sorted(
            int(n[len(SLOT_PREFIX) :])
            for n in self.names()
            if n.startswith(SLOT_PREFIX) and n[len(SLOT_PREFIX) :].isdigit()
        )

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
    state = open_state_dir(environ)
    path = "<state>"
    try:
        fd = state
        for part in ("projects", project_key, "locks", lock):
            path = f"{path}/{part}"
            if not create:
                try:
                    nxt = os.open(part, flocks.FILE_FLAGS & ~os.O_RDWR | os.O_DIRECTORY, dir_fd=fd)
                except FileNotFoundError:
                    raise StateError(f"no such lock directory {path}") from None
                except OSError as err:
                    if err.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise StateError(
                            f"refusing to use {path}: it is a symlink or not a directory",
                            hint="remove it; seqbox will recreate it",
                        ) from None
                    raise
            else:
                nxt = open_private_dir(fd, part, path)
            if fd != state:
                os.close(fd)
            fd = nxt
        return fd
    finally:
        if state != fd:
            os.close(state)


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


#: an entry's keys and the JSON types each may have
_NULLABLE = frozenset({"start", "mem", "pids", "warn_at"})
_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "start": (int, float),
    "command": (list,),
    "run_id": (str,),
    "lock": (str,),
    "mem": (int,),
    "pids": (int,),
    "warn_at": (int, float),
    "arrived": (int, float),
    "number": (int,),
    "since": (int, float),
    "child": (int,),
    "backend": (str,),
    "cgroups": (list,),
    "mem_file": (str,),
    "procs_file": (str,),
    "tree": (str,),
    "reservation": (int,),
    "budget": (int,),
    "reserved_how": (str,),
    "waiting_for": (str,),
}


#: appended to a slot's entry by a holder that handed over in order (see Turn.hand_over)
ENDED_MARK = b"\nended\n"


def parse_entry(data: bytes) -> Entry | None:
    """A ticket's or slot's content: one JSON object, then :data:`ENDED_MARK`
    once its holder has handed over in order. Raises ValueError when torn."""
    text, _, rest = data.partition(b"\n")
    entry = entry_from_json(loads(text or b"null"))
    if entry is not None and rest.startswith(ENDED_MARK[1:]):
        entry["ended"] = True
    return entry


def entry_from_json(data: object) -> Entry | None:
    """What another process wrote, checked once here so that readers need not:
    a dict with a positive int ``pid``; a key of the wrong type is dropped."""
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    entry: dict[str, object] = {}
    for key, value in data.items():
        types = _ENTRY_TYPES.get(key)
        if types is None:
            continue
        if value is None:
            if key in _NULLABLE:
                entry[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            continue
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            continue
        entry[key] = value
    return entry  # type: ignore[return-value]  # checked key by key above


def _held(dir_fd: int, name: str) -> bool:
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

    With ``prune``, the tickets of dead waiters are removed.
    """
    waiters = _live_entries(lockdir, [f"{TICKET_PREFIX}{n}" for n in lockdir.tickets()], prune=prune)
    return QueueView(_holders(lockdir), waiters)


def _holders(lockdir: LockDir) -> list[Entry]:
    """The entries of the live holders, by slot."""
    return _live_entries(lockdir, [f"{SLOT_PREFIX}{k}" for k in lockdir.slots()], prune=False)


def _live_entries(lockdir: LockDir, names: list[str], *, prune: bool) -> list[Entry]:
    """The entries of the files that are held (their process lives), in
    order; with ``prune``, the unheld files are removed."""
    entries = []
    for name in names:
        if _held(lockdir.fd, name):
            entry = read_entry(lockdir.fd, name)
            if entry is not None:
                entries.append(entry)
        elif prune:
            _unlink(lockdir.fd, name)
    return entries


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


# -- taking a turn ----------------------------------------------------------------


class Turn:
    """A place in the queue, then (after :meth:`wait`) a held slot.

    A context manager: leaving the ``with`` gives the place (or the slot) back
    and tidies the lock's files. :meth:`hand_over` is the one other way out: it
    gives the slot back early (the next run starts) and leaves the tidying to
    the end of the ``with``.
    """

    def __init__(
        self, lockdir: LockDir, number: int, ticket_fd: int, slots: int, info: Entry, gate: Gate | None = None
    ) -> None:
        self.lockdir = lockdir
        self.number = number
        self.ticket_fd: int | None = ticket_fd
        self.slots = slots
        self.info = info
        self.slot_fd: int | None = None
        self.slot: int | None = None
        self.wait_s = 0.0
        self._written = 0
        #: who held our slot before us, as its slot file said (see :meth:`_took`)
        self.previous: Entry | None = None
        #: the memory admission gate of a lock with a budget
        self.gate = gate
        #: what this head of the line waits for (the budget), shown in its ticket
        self.waiting_for: str | None = None
        #: the bell, open for reading while this head waits for room
        self._bell: int | None = None

    def __enter__(self) -> Turn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.hand_over()
        self._close_bell()
        if self.lockdir.fd >= 0:
            tidy(self.lockdir)
            self.lockdir.close()

    @property
    def lock(self) -> str:
        return self.lockdir.lock

    def wait(self, *, timeout: float | None, on_wait: WaitHook | None, tick: float) -> None:
        """Block until this turn holds a slot. Raises LockTimeout or Cancelled.

        ``on_wait`` is called whenever the wait goes on (at least every ``tick``
        seconds) with a way to look at the queue, which costs a lock probe of
        every entry: it decides whether to print, and looks only then.
        """
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        while True:
            ahead = self._predecessor()
            holders: list[int] | None = None  # waiting for room: the pids of the holders
            if ahead is None:
                if self.gate is not None or self.slots > 1:
                    self._listen_to_bell()  # before looking, so that no leaving is missed
                if self.gate is None:
                    if self._take_free_slot():
                        break
                    if self.slots > 1:
                        holders = self._holder_pids()
                else:
                    admitted, holders = self._admit()
                    if admitted:
                        break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                if ahead is not None:
                    os.close(ahead)
                raise LockTimeout(f"gave up waiting for lock {self.lock!r} after {timeout:g}s")
            if on_wait is not None:
                on_wait(lambda: view(self.lockdir), now - start)
            wait_for = tick if deadline is None else max(0.001, min(tick, deadline - now))
            if ahead is not None:  # woken when the waiter ahead starts or dies
                try:
                    flocks.wait_lock(ahead, exclusive=False, tick=wait_for)
                finally:
                    os.close(ahead)
            elif holders is not None:
                self._wait_for_room(holders, min(wait_for, RECHECK_S))
            elif self._wait_slot(wait_for):  # --slots 1, no budget
                break
        self._close_bell()
        self.wait_s = time.monotonic() - start
        if self.number <= self.lockdir.cancel_mark():
            self.hand_over()
            raise Cancelled

    def _predecessor(self) -> int | None:
        """A locked fd of the live waiter just ahead (dead ones are removed), or None."""
        for number in reversed(self.lockdir.tickets()):
            if number >= self.number:
                continue
            name = f"{TICKET_PREFIX}{number}"
            fd = flocks.open_file(self.lockdir.fd, name, create=False)
            if fd is None:
                continue
            if flocks.try_lock(fd, exclusive=False):  # nobody holds it: its waiter is gone
                _unlink(self.lockdir.fd, name)
                os.close(fd)
                continue
            return fd
        return None

    def _admit(self) -> tuple[bool, list[int]]:
        """As the head of a lock with a budget: take a slot if we fit now.
        Otherwise say what we wait for, and return the holders' pids."""
        assert self.gate is not None
        holders = _holders(self.lockdir)
        verdict = self.gate.check(holders)
        if verdict.fits and self._take_free_slot():
            return True, []
        self._say_waiting_for(None if verdict.fits else self.gate.text(verdict))
        return False, [entry["pid"] for entry in holders]

    def _holder_pids(self) -> list[int]:
        return [entry["pid"] for entry in _holders(self.lockdir)]

    def _listen_to_bell(self) -> None:
        """Open the bell (made if missing) and empty it: rings from now on wake us."""
        if self._bell is None:
            self._bell = _open_bell(self.lockdir.fd)
        if self._bell is not None:
            try:
                while os.read(self._bell, 4096):
                    pass
            except BlockingIOError:  # empty (we hold it open for writing too: never EOF)
                pass

    def _close_bell(self) -> None:
        if self._bell is not None:
            os.close(self._bell)
            self._bell = None

    def _wait_for_room(self, pids: list[int], tick: float) -> None:
        """Block until a holder leaves, for at most ``tick`` seconds: in order
        (it rings the bell) or by dying, even by SIGKILL (its pidfd wakes us)."""
        pidfds: list[int] = []
        timeout = tick
        try:
            for pid in pids:
                try:
                    pidfds.append(os.pidfd_open(pid))
                except ProcessLookupError:  # it died since we looked: look again now
                    return
                except (AttributeError, OSError):  # no pidfds here: look again soon
                    timeout = min(tick, HEAD_POLL_S)
            if self._bell is None:
                timeout = min(timeout, HEAD_POLL_S)
            poller = select.poll()
            for fd in ([] if self._bell is None else [self._bell]) + pidfds:
                poller.register(fd, select.POLLIN)
            poller.poll(max(1, int(timeout * 1000)))
        finally:
            for fd in pidfds:
                os.close(fd)

    def _say_waiting_for(self, text: str | None) -> None:
        """Put what we wait for into our ticket, for the waiting line and ``status``."""
        if text == self.waiting_for or self.ticket_fd is None:
            return
        self.waiting_for = text
        info: Entry = {**self.info}
        if text is not None:
            info["waiting_for"] = text
        flocks.write_fd(self.ticket_fd, dumps(info).encode())

    def _take_free_slot(self) -> bool:
        for k in range(self.slots):
            name = f"{SLOT_PREFIX}{k}"
            fd = flocks.open_file(self.lockdir.fd, name)
            assert fd is not None
            if flocks.try_lock(fd) and flocks.still_linked(self.lockdir.fd, name, fd):
                self._took(k, fd)
                return True
            os.close(fd)
        return False

    def _wait_slot(self, tick: float) -> bool:
        """As the head of the line with one slot and no budget: block until it is ours."""
        name = f"{SLOT_PREFIX}0"
        fd = flocks.open_file(self.lockdir.fd, name)
        assert fd is not None
        if flocks.wait_lock(fd, exclusive=True, tick=tick) and flocks.still_linked(self.lockdir.fd, name, fd):
            self._took(0, fd)
            return True
        os.close(fd)
        return False

    def _took(self, k: int, fd: int) -> None:
        """The slot is ours: note who had it before, and write who has it now.

        A holder that hands over in order marks its entry ended; one that did
        not died holding the slot (its flock went with its last fd: a zombie
        cannot fake that), and its tree may still run: ``previous`` says where.
        Our entry names our sandbox from now on, so that if we die the next
        holder can end our tree; the command's pid follows in :meth:`started`."""
        self.slot, self.slot_fd = k, fd
        try:
            self.previous = parse_entry(flocks.read_fd(fd))
        except ValueError:
            self.previous = None
        self._write(self.info)

    def _write(self, info: Entry) -> None:
        if self.slot_fd is not None:
            data = dumps(info).encode()
            flocks.write_fd(self.slot_fd, data)
            self._written = len(data)

    @property
    def held(self) -> bool:
        return self.slot_fd is not None

    def started(self, info: Entry) -> None:
        """Record who holds the slot, and leave the line: the next waiter wakes."""
        self._write(info)
        self._leave_line()

    def _leave_line(self) -> None:
        if self.ticket_fd is not None:
            _unlink(self.lockdir.fd, f"{TICKET_PREFIX}{self.number}")
            os.close(self.ticket_fd)
            self.ticket_fd = None

    def hand_over(self) -> None:
        """Give the place (or the slot) back: the next run starts at once. The
        slot's entry is marked ended first (an append, so it needs no new disk
        block), so the next holder knows our tree was ended."""
        self._leave_line()
        if self.slot_fd is not None:
            try:
                os.pwrite(self.slot_fd, ENDED_MARK, self._written)
            except OSError:  # the next holder then ends what it finds of our tree: nothing
                pass
            os.close(self.slot_fd)
            self.slot_fd = None
            ring(self.lockdir.fd)

    def describe(self, sandbox: SandboxInfo) -> None:
        """Where our tree will run: written into the slot as soon as we hold it."""
        self.info = {**self.info, **sandbox}


class NoTurn:
    """No place in any queue (``--no-lock``, or a nested run): the same
    interface as :class:`Turn`, doing nothing."""

    number = 0
    previous: Entry | None = None
    wait_s = 0.0

    def __enter__(self) -> NoTurn:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def wait(self, *, timeout: float | None, on_wait: WaitHook | None, tick: float) -> None:
        pass

    def started(self, info: Entry) -> None:
        pass

    def hand_over(self) -> None:
        pass

    def describe(self, sandbox: SandboxInfo) -> None:
        pass


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


def _open_bell(dir_fd: int) -> int | None:
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


def arrive(
    project_key: str,
    lock: str,
    slots: int,
    info: Entry,
    environ: Mapping[str, str] | None = None,
    gate: Gate | None = None,
) -> Turn:
    """Join the end of the queue: take a number and a locked ticket."""
    for _ in range(100):
        lockdir = LockDir(project_key, lock, environ)
        door = flocks.open_file(lockdir.fd, DOOR)
        if door is None:  # the directory was tidied away under us
            lockdir.close()
            continue
        try:
            flocks.wait_lock(door, exclusive=True, tick=None)
            if not flocks.still_linked(lockdir.fd, DOOR, door):
                lockdir.close()
                continue
            text = flocks.read_fd(door).decode().strip()
            # Numbers are the arrival time in ns, kept increasing: they stay comparable
            # even after the last one out has tidied the directory away.
            number = max(time.time_ns(), (int(text) if text.isdigit() else 0) + 1)
            flocks.write_fd(door, str(number).encode())
            info = {**info, "number": number}
            ticket = _make_ticket(lockdir.fd, number, info)
            return Turn(lockdir, number, ticket, slots, info, gate)
        except BaseException:
            lockdir.close()
            raise
        finally:
            os.close(door)
    raise StateError(f"cannot join the queue of lock {lock!r}: its directory keeps disappearing")


def _make_ticket(dir_fd: int, number: int, info: Entry) -> int:
    """Create ``t-<number>`` already locked: lock a temporary file, then rename."""
    temporary = f".new-{os.getpid()}-{number}"
    fd = os.open(temporary, flocks.FILE_FLAGS | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
    try:
        if not flocks.try_lock(fd):
            raise StateError("cannot lock a new ticket")
        flocks.write_fd(fd, dumps(info).encode())
        os.rename(temporary, f"{TICKET_PREFIX}{number}", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return fd
    except BaseException:
        os.close(fd)
        _unlink(dir_fd, temporary)
        raise


def cancel_waiters(lockdir: LockDir) -> list[Entry]:
    """``seqbox kill --all``: every waiter that has arrived gives up, none starts."""
    door = flocks.open_file(lockdir.fd, DOOR)
    assert door is not None
    try:
        flocks.wait_lock(door, exclusive=True, tick=None)
        text = flocks.read_fd(door).decode().strip()
        last = int(text) if text.isdigit() else 0
        fd = flocks.open_file(lockdir.fd, CANCEL)
        assert fd is not None
        try:
            flocks.write_fd(fd, str(last).encode())
        finally:
            os.close(fd)
        return view(lockdir).waiters
    finally:
        os.close(door)


def tidy(lockdir: LockDir) -> bool:
    """When nobody holds or waits for the lock any more, remove its files and
    directory (the last one out turns off the light). Safe against newcomers:
    they re-check that the files they locked are still linked."""
    fd = lockdir.fd
    door = flocks.open_file(fd, DOOR, create=False)
    if door is None:
        return False
    locked: list[int] = []
    try:
        if not flocks.try_lock(door):
            return False
        for name in lockdir.names():
            if name.startswith(".new-"):  # joining holds the door: this joiner died
                _unlink(fd, name)
            elif name.startswith(TICKET_PREFIX):
                if _held(fd, name):
                    return False
                _unlink(fd, name)
        for k in lockdir.slots():
            slot = flocks.open_file(fd, f"{SLOT_PREFIX}{k}", create=False)
            if slot is None:
                continue
            locked.append(slot)
            if not flocks.try_lock(slot):
                return False
        for name in lockdir.names():
            if name != DOOR:
                _unlink(fd, name)
        _unlink(fd, DOOR)
        _remove_empty_parents(lockdir)
        return True
    finally:
        for slot in locked:
            os.close(slot)
        os.close(door)


def _remove_empty_parents(lockdir: LockDir) -> None:
    """rmdir locks/<name>, then locks/ and projects/<key> when empty."""
    try:
        state = open_state_dir(lockdir.environ)
    except StateError:
        return
    try:
        for path in (
            f"projects/{lockdir.project_key}/locks/{lockdir.lock}",
            f"projects/{lockdir.project_key}/locks",
            f"projects/{lockdir.project_key}",
            "projects",
        ):
            try:
                os.rmdir(path, dir_fd=state)
            except OSError as err:
                if err.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if err.errno != errno.ENOENT:
                    return
    finally:
        os.close(state)


def project_locks(project_key: str, environ: Mapping[str, str] | None = None) -> Iterator[LockDir]:
    """Every lock directory of a project that exists now."""
    state = open_state_dir(environ)
    try:
        names = _listdir_at(state, f"projects/{project_key}/locks")
    finally:
        os.close(state)
    for name in sorted(names):
        try:
            yield LockDir(project_key, name, environ, create=False)
        except StateError:
            continue


def _listdir_at(dir_fd: int, relative: str) -> list[str]:
    """The names in ``relative`` under ``dir_fd``, following no symlink."""
    fd = dir_fd
    try:
        for part in relative.split("/"):
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                return []
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise StateError(
                        f"refusing to use <state>/{relative}: {part} is a symlink or not a directory",
                        hint="remove it; seqbox will recreate it",
                    ) from None
                raise
            if fd != dir_fd:
                os.close(fd)
            fd = nxt
        return os.listdir(fd)
    finally:
        if fd != dir_fd:
            os.close(fd)


def all_projects(environ: Mapping[str, str] | None = None) -> list[str]:
    state = open_state_dir(environ)
    try:
        return sorted(_listdir_at(state, "projects"))
    finally:
        os.close(state)
