"""A delegated scope for this very process, asked of the user manager over D-Bus.

What ``systemd-run --user --scope -p Delegate=yes`` does, without systemd-run
and without a second Python: connect to the user manager's private socket
(``$XDG_RUNTIME_DIR/systemd/private``), authenticate as this user (SASL
``EXTERNAL``), and call ``org.freedesktop.systemd1.Manager.StartTransientUnit``
for a scope holding this process (``PIDs``), delegated (``Delegate``), removed
once it is empty or failed (``CollectMode``). systemd moves the process when
the scope's start job runs (a user manager asks the system manager to, when
the process sits in a cgroup the user does not own): seqbox waits, boundedly,
until ``/proc/self/cgroup`` shows it inside the scope.

The messages are jeepney's (its wire format, its SASL client). The private
socket is a peer-to-peer connection: no bus daemon answers there, so the bus's
``Hello`` (which jeepney's ready-made connections send first) must not be
sent; the socket is driven here with jeepney's I/O-free parts instead
(:class:`jeepney.auth.Authenticator`, :class:`jeepney.Parser`).

A run of a lock with a budget first gets the lock's slice
(seqbox/ceiling.py): ``StartTransientUnit`` of the slice with ``MemoryMax`` the
budget and ``MemorySwapMax`` 0, or, when it exists already (the manager answers
``org.freedesktop.systemd1.UnitExists``), ``SetUnitProperties`` (at runtime)
with the same, so that its limit is the current budget; the scope then asks for
``Slice=`` that slice. A slice that cannot be had is said (the run then has no
shared ceiling, and fails closed: see seqbox/lockbudget.py); the scope is still
asked for, in its usual place.

Every failure of the scope raises :class:`~seqbox.errors.BackendError` with one
line that says what went wrong; the caller then tries systemd-run.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from jeepney import DBusAddress, HeaderFields, MatchRule, Message, MessageType, Parser, new_method_call
from jeepney.auth import BEGIN, AuthenticationError, Authenticator

from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: how long connecting and each answer of the user manager may take
ANSWER_TIMEOUT = 2.0
#: how long the move into the new scope may take in all (it takes milliseconds)
MOVE_TIMEOUT = 5.0
#: how often to look whether the move happened, at most (the news comes on no socket)
MOVE_POLL = 0.005
#: the scope's name: transient scopes are ``run-*.scope`` (as systemd-run's); not
#: ``seqbox-*``, which names a run's cgroups (see backends/cgroup/leftovers.py)
UNIT_PREFIX = "run-seqbox-"
DESCRIPTION_MAX = 200
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
#: the manager's error for a unit that is there already
UNIT_EXISTS = "org.freedesktop.systemd1.UnitExists"
MANAGER = DBusAddress(
    "/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1", interface=MANAGER_INTERFACE
)
#: the manager's news of a job's end: (id, job path, unit, result)
JOB_REMOVED = MatchRule(type="signal", interface=MANAGER_INTERFACE, member="JobRemoved")
#: what jeepney's parser raises on bytes that are not D-Bus
NOT_DBUS = (ValueError, KeyError, IndexError, struct.error)


def unit_name(pid: int, nonce: bytes) -> str:
    """A scope name no other unit has: the pid and random bytes."""
    return f"{UNIT_PREFIX}{pid}-{nonce.hex()}.scope"


class SliceAsk:
    """The lock's slice a scope is to go in: its unit name, the budget (its
    ``MemoryMax``) and a description."""

    __slots__ = ("budget", "description", "unit")

    def __init__(self, unit: str, budget: int, description: str) -> None:
        self.unit = unit
        self.budget = budget
        self.description = description

    def __repr__(self) -> str:
        return f"SliceAsk({self.unit!r}, {self.budget})"


def _one_line(description: str) -> str:
    # a transient unit is saved as a unit file, one setting a line
    return "".join(c if c.isprintable() else " " for c in description[:DESCRIPTION_MAX])


def slice_limits(budget: int) -> list[tuple[str, tuple[str, object]]]:
    """Pure: the properties that hold a lock's slice to its budget, swap closed."""
    return [("MemoryMax", ("t", budget)), ("MemorySwapMax", ("t", 0))]


def start_transient_slice(ask: SliceAsk) -> Message:
    """Pure: the StartTransientUnit call for a lock's slice, limited to its budget."""
    properties = [("Description", ("s", _one_line(ask.description))), *slice_limits(ask.budget)]
    message: Message = new_method_call(
        MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))", (ask.unit, "fail", properties, [])
    )
    return message


def set_slice_limits(ask: SliceAsk) -> Message:
    """Pure: the SetUnitProperties call (runtime only) that sets an existing
    lock slice's limit to the current budget."""
    message: Message = new_method_call(
        MANAGER, "SetUnitProperties", "sba(sv)", (ask.unit, True, slice_limits(ask.budget))
    )
    return message


def start_transient_scope(unit: str, pid: int, description: str, in_slice: str | None = None) -> Message:
    """Pure: the StartTransientUnit call for a delegated scope holding ``pid``
    (in the slice ``in_slice``, when given)."""
    properties = [
        ("Description", ("s", _one_line(description))),
        ("PIDs", ("au", [pid])),
        ("Delegate", ("b", True)),
        ("CollectMode", ("s", "inactive-or-failed")),
    ]
    if in_slice is not None:
        properties.append(("Slice", ("s", in_slice)))
    message: Message = new_method_call(
        MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))", (unit, "fail", properties, [])
    )
    return message


def in_unit(cgroup_text: str, unit: str) -> bool:
    """Pure: whether a /proc/self/cgroup text puts this process in ``unit``."""
    return any(line.endswith(f"/{unit}") for line in cgroup_text.splitlines())


def own_cgroup_in(unit: str) -> bool:
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            return in_unit(f.read(), unit)
    except OSError:
        return False


def move_into_scope(
    socket_path: str,
    description: str,
    *,
    pid: int | None = None,
    move_timeout: float = MOVE_TIMEOUT,
    moved: Callable[[str], bool] = own_cgroup_in,
    lock_slice: SliceAsk | None = None,
) -> tuple[str, str | None]:
    """Ask the user manager at ``socket_path`` for a delegated scope holding
    this process (in the lock's slice ``lock_slice``, limited to its budget,
    when given), and wait until it is inside: the scope's unit name, and why
    the scope is not in the lock's slice (None when it is, or none was asked for)."""
    pid = os.getpid() if pid is None else pid
    slice_failure = None
    unit = unit_name(pid, os.urandom(4))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ANSWER_TIMEOUT)
        try:
            sock.connect(socket_path)
        except OSError as err:
            raise BackendError(f"cannot connect to {socket_path}: {err.strerror or err}") from None
        conn = _Connection(sock)
        conn.authenticate()
        in_slice = None
        if lock_slice is not None:
            slice_failure = conn.limit_slice(lock_slice)
            in_slice = lock_slice.unit if slice_failure is None else None
        job = conn.start_scope(start_transient_scope(unit, pid, description, in_slice), unit)
        conn.wait_until_moved(unit, job, time.monotonic() + move_timeout, moved)
    except OSError as err:
        raise BackendError(f"the user manager's connection failed: {err.strerror or err}") from None
    except NOT_DBUS as err:
        raise BackendError(f"the user manager's answer is not D-Bus: {err}") from None
    finally:
        sock.close()
    return unit, slice_failure


class _Connection:
    """The client end of a peer-to-peer D-Bus connection (one call, then its signals)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = Parser()
        self.closed = False
        self.serial = 0

    def _receive(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise BackendError("the user manager closed the connection")
        return data

    def authenticate(self) -> None:
        """SASL EXTERNAL as this process's user (the NUL byte first, then AUTH)."""
        auth = Authenticator()
        try:
            for line in auth:
                if line:
                    self.sock.sendall(line)
                auth.feed(self._receive())
        except AuthenticationError as err:
            shown = bytes(err.data).decode("ascii", "replace")[:80]
            uid = os.geteuid()
            raise BackendError(f"the user manager did not accept uid {uid} (it answered {shown!r})") from None

    def next_message(self) -> Message:
        while True:
            message: Message | None = self.parser.get_next_message()
            if message is not None:
                return message
            self.parser.add_data(self._receive())

    def call(self, call: Message) -> Message:
        """Send the call (the first after BEGIN) and return its reply (signals
        that come first are skipped)."""
        self.serial += 1
        serial = self.serial
        self.sock.sendall((BEGIN if serial == 1 else b"") + call.serialise(serial=serial))
        while True:
            message = self.next_message()
            if message.header.fields.get(HeaderFields.reply_serial) == serial:
                return message

    def start_scope(self, call: Message, unit: str) -> str:
        """Send the call; the start job's object path from the reply."""
        message = self.call(call)
        header, body = message.header, message.body
        if header.message_type is MessageType.error:
            raise BackendError(f"the user manager refused {unit}: {_error_text(message)}")
        if header.message_type is not MessageType.method_return or not body or not isinstance(body[0], str):
            raise BackendError("the user manager's answer to StartTransientUnit is not a job")
        job: str = body[0]
        return job

    def limit_slice(self, ask: SliceAsk) -> str | None:
        """Start the lock's slice with its limit, or set the limit of the one
        there already: None when done, else why not. Its start job is not
        waited on: the scope's start job waits for it (a unit in a slice needs
        the slice), and systemd writes the slice's limit before it makes the
        scope's cgroup inside."""
        reply = self.call(start_transient_slice(ask))
        if reply.header.message_type is MessageType.method_return:
            return None
        if reply.header.fields.get(HeaderFields.error_name) != UNIT_EXISTS:
            return f"the user manager refused the lock's slice {ask.unit}: {_error_text(reply)}"
        reply = self.call(set_slice_limits(ask))  # the lock's slice, there already: the current budget
        if reply.header.message_type is MessageType.method_return:
            return None
        return f"the user manager did not set the limit of the lock's slice {ask.unit}: {_error_text(reply)}"

    def wait_until_moved(self, unit: str, job: str, deadline: float, moved: Callable[[str], bool]) -> None:
        """Until this process is in ``unit``: read the manager's signals (a
        peer-to-peer connection gets them all) for the end of ``job``, and
        look at the cgroup in between. A job that ends other than ``done``
        fails at once; the move itself may come a moment after ``done``."""
        pause = 0.001
        while not moved(unit):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(f"{unit} was started, but this process was not moved into it in time")
            if self.closed:
                time.sleep(min(pause, left))
            else:
                self.sock.settimeout(min(pause, left))
                try:
                    self.parser.add_data(self._receive())
                except TimeoutError:
                    pass
                except BackendError:  # closed: the job was queued, the move may still come
                    pass
            try:
                self._job_results(unit, job)
            except NOT_DBUS:  # unreadable news: the move may still come, stop listening
                self.closed = True
            pause = min(pause * 2, MOVE_POLL)

    def _job_results(self, unit: str, job: str) -> None:
        while (message := self.parser.get_next_message()) is not None:
            if not JOB_REMOVED.matches(message):
                continue
            body = message.body  # id, job path, unit, result
            if len(body) == 4 and body[1] == job and body[3] != "done":
                raise BackendError(f"systemd could not start {unit} (its start job ended: {body[3]})")


def _error_text(message: Message) -> str:
    """``Unit x exists. (org.freedesktop.systemd1.UnitExists)`` of an error reply."""
    body = message.body
    text = body[0] if body and isinstance(body[0], str) else "no message"
    return f"{text} ({message.header.fields.get(HeaderFields.error_name)})"
