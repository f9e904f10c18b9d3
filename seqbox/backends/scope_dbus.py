"""A delegated scope for this very process, asked of the user manager over D-Bus.

What ``systemd-run --user --scope -p Delegate=yes`` does, without systemd-run
and without a second Python: connect to the user manager's private socket
(``$XDG_RUNTIME_DIR/systemd/private``, a peer-to-peer D-Bus connection: no bus
daemon, no ``Hello``), authenticate as this uid (SASL ``EXTERNAL``), and call
``org.freedesktop.systemd1.Manager.StartTransientUnit`` for a scope holding
this process (``PIDs``), delegated (``Delegate``), removed once it is empty or
failed (``CollectMode``). systemd moves the process when the scope's start job
runs (a user manager asks the system manager to, when the process sits in a
cgroup the user does not own): seqbox waits, boundedly, until
``/proc/self/cgroup`` shows it inside the scope.

Every failure raises :class:`~seqbox.errors.BackendError` with one line that
says what went wrong; the caller then tries systemd-run.
"""

from __future__ import annotations

import os
import time

from seqbox.backends import dbus
from seqbox.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

#: how long connecting and each answer of the user manager may take
ANSWER_TIMEOUT = 2.0
#: how long the move into the new scope may take in all (it takes milliseconds)
MOVE_TIMEOUT = 5.0
#: how often to look whether the move happened, at most (the news comes on no socket)
MOVE_POLL = 0.005
#: the scope's name: transient scopes are ``run-*.scope`` (as systemd-run's); not
#: ``seqbox-*``, which names a run's cgroups (see backends/leftovers.py)
UNIT_PREFIX = "run-seqbox-"
DESCRIPTION_MAX = 200
MANAGER = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"


def unit_name(pid: int, nonce: bytes) -> str:
    """A scope name no other unit has: the pid and random bytes."""
    return f"{UNIT_PREFIX}{pid}-{nonce.hex()}.scope"


def start_transient_scope(serial: int, unit: str, pid: int, description: str) -> bytes:
    """Pure: the StartTransientUnit call for a delegated scope holding ``pid``."""
    # one line (a transient unit is saved as a unit file, one setting a line)
    description = "".join(c if c.isprintable() else " " for c in description[:DESCRIPTION_MAX])
    properties = [
        ("Description", dbus.Variant("s", description)),
        ("PIDs", dbus.Variant("au", [pid])),
        ("Delegate", dbus.Variant("b", True)),
        ("CollectMode", dbus.Variant("s", "inactive-or-failed")),
    ]
    return dbus.method_call(
        serial,
        path=MANAGER_PATH,
        interface=MANAGER_INTERFACE,
        member="StartTransientUnit",
        destination=MANAGER,
        signature="ssa(sv)a(sa(sv))",
        body=[unit, "fail", properties, []],
    )


def auth_external(uid: int) -> bytes:
    """Pure: the SASL exchange's opening: a NUL byte, then ``AUTH EXTERNAL`` with
    the uid as a decimal string, hex-encoded."""
    return b"\0AUTH EXTERNAL " + str(uid).encode().hex().encode() + b"\r\n"


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
    uid: int | None = None,
    pid: int | None = None,
    move_timeout: float = MOVE_TIMEOUT,
    moved: Callable[[str], bool] = own_cgroup_in,
) -> str:
    """Ask the user manager at ``socket_path`` for a delegated scope holding
    this process, and wait until it is inside: the scope's unit name."""
    import socket

    uid = os.getuid() if uid is None else uid
    pid = os.getpid() if pid is None else pid
    unit = unit_name(pid, os.urandom(4))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ANSWER_TIMEOUT)
        conn = _Connection(sock)
        try:
            sock.connect(socket_path)
        except OSError as err:
            raise BackendError(f"cannot connect to {socket_path}: {err.strerror or err}") from None
        conn.authenticate(uid)
        job = conn.start_scope(unit, pid, description)
        conn.wait_until_moved(unit, job, time.monotonic() + move_timeout, moved)
    except OSError as err:
        raise BackendError(f"the user manager's connection failed: {err.strerror or err}") from None
    except dbus.BusError as err:
        raise BackendError(f"the user manager's answer is not D-Bus: {err}") from None
    finally:
        sock.close()
    return unit


class _Connection:
    """The client end of a peer-to-peer D-Bus connection (one call, then its signals)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise BackendError("the user manager closed the connection")
        self.buffer += data

    def authenticate(self, uid: int) -> None:
        self.sock.sendall(auth_external(uid))
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > 4096:
                raise BackendError("the user manager's authentication answer is not SASL")
            self._receive()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        if not line.startswith(b"OK"):
            shown = line.decode("ascii", "replace")[:80]
            raise BackendError(f"the user manager did not accept uid {uid} (it answered {shown!r})")

    def next_message(self) -> dbus.Message:
        while True:
            split = dbus.split_message(self.buffer)
            if split is not None:
                message, size = split
                self.buffer = self.buffer[size:]
                return message
            self._receive()

    def start_scope(self, unit: str, pid: int, description: str) -> str:
        """Send StartTransientUnit; the start job's object path from the reply
        (signals that come first are skipped)."""
        serial = 1
        self.sock.sendall(b"BEGIN\r\n" + start_transient_scope(serial, unit, pid, description))
        while True:
            message = self.next_message()
            if message.field(dbus.REPLY_SERIAL) != serial:
                continue
            if message.kind == dbus.ERROR:
                values = message.values()
                text = values[0] if values and isinstance(values[0], str) else "no message"
                name = message.field(dbus.ERROR_NAME)
                raise BackendError(f"the user manager refused {unit}: {text} ({name})")
            values = message.values()
            if message.kind != dbus.METHOD_RETURN or not values or not isinstance(values[0], str):
                raise BackendError("the user manager's answer to StartTransientUnit is not a job")
            return values[0]

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
                    self._receive()
                except TimeoutError:
                    pass
                except BackendError:  # closed: the job was queued, the move may still come
                    pass
                try:
                    self._job_results(unit, job)
                except dbus.BusError:  # unreadable news: the move may still come, stop listening
                    self.closed = True
            pause = min(pause * 2, MOVE_POLL)

    def _job_results(self, unit: str, job: str) -> None:
        while (split := dbus.split_message(self.buffer)) is not None:
            message, size = split
            self.buffer = self.buffer[size:]
            if message.kind != dbus.SIGNAL or message.field(dbus.MEMBER) != "JobRemoved":
                continue
            values = message.values()  # id, job path, unit, result
            if len(values) == 4 and values[1] == job and values[3] != "done":
                raise BackendError(f"systemd could not start {unit} (its start job ended: {values[3]})")
