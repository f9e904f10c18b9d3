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

Every failure raises :class:`~seqbox.errors.BackendError` with one line that
says what went wrong; the caller then tries systemd-run.
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


def start_transient_scope(unit: str, pid: int, description: str) -> Message:
    """Pure: the StartTransientUnit call for a delegated scope holding ``pid``."""
    # one line (a transient unit is saved as a unit file, one setting a line)
    description = "".join(c if c.isprintable() else " " for c in description[:DESCRIPTION_MAX])
    properties = [
        ("Description", ("s", description)),
        ("PIDs", ("au", [pid])),
        ("Delegate", ("b", True)),
        ("CollectMode", ("s", "inactive-or-failed")),
    ]
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
) -> str:
    """Ask the user manager at ``socket_path`` for a delegated scope holding
    this process, and wait until it is inside: the scope's unit name."""
    pid = os.getpid() if pid is None else pid
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
        job = conn.start_scope(start_transient_scope(unit, pid, description), unit)
        conn.wait_until_moved(unit, job, time.monotonic() + move_timeout, moved)
    except OSError as err:
        raise BackendError(f"the user manager's connection failed: {err.strerror or err}") from None
    except NOT_DBUS as err:
        raise BackendError(f"the user manager's answer is not D-Bus: {err}") from None
    finally:
        sock.close()
    return unit


class _Connection:
    """The client end of a peer-to-peer D-Bus connection (one call, then its signals)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = Parser()
        self.closed = False

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

    def start_scope(self, call: Message, unit: str) -> str:
        """Send the call (after BEGIN); the start job's object path from the
        reply (signals that come first are skipped)."""
        serial = 1
        self.sock.sendall(BEGIN + call.serialise(serial=serial))
        while True:
            message = self.next_message()
            header = message.header
            if header.fields.get(HeaderFields.reply_serial) != serial:
                continue
            body = message.body
            if header.message_type is MessageType.error:
                text = body[0] if body and isinstance(body[0], str) else "no message"
                name = header.fields.get(HeaderFields.error_name)
                raise BackendError(f"the user manager refused {unit}: {text} ({name})")
            if (
                header.message_type is not MessageType.method_return
                or not body
                or not isinstance(body[0], str)
            ):
                raise BackendError("the user manager's answer to StartTransientUnit is not a job")
            job: str = body[0]
            return job

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
