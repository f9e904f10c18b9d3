"""Asking the user manager for a delegated scope over D-Bus
(seqbox/backends/systemd/bus.py, with jeepney), against a stand-in manager on
a real Unix socket: the SASL exchange, the call seqbox sends, and each way the
answer can go wrong. That systemd itself accepts the call, moves seqbox and
removes the scope afterwards is tested in the laptop lane
(tests/backends/test_laptop_scenarios.py)."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jeepney import (
    DBusAddress,
    HeaderFields,
    Message,
    MessageType,
    Parser,
    new_error,
    new_method_return,
    new_signal,
)

from seqbox.backends.systemd import bus
from seqbox.errors import BackendError

JOB = "/org/freedesktop/systemd1/job/42"
MANAGER = DBusAddress("/org/freedesktop/systemd1", interface="org.freedesktop.systemd1.Manager")
#: what a stand-in manager does once it has read seqbox's call: it sends bytes back
Answer = Callable[[Message], list[bytes]]


def reply(call: Message, signature: str = "o", body: tuple[object, ...] = (JOB,)) -> bytes:
    data: bytes = new_method_return(call, signature, body).serialise(serial=100)
    return data


def error(call: Message, name: str, text: str) -> bytes:
    data: bytes = new_error(call, name, "s", (text,)).serialise(serial=101)
    return data


def signal(member: str, signature: str, body: tuple[object, ...]) -> bytes:
    data: bytes = new_signal(MANAGER, member, signature, body).serialise(serial=102)
    return data


def job_removed(unit: str, result: str, job: str = JOB) -> bytes:
    return signal("JobRemoved", "uoss", (42, job, unit, result))


def unit_of(call: Message) -> str:
    return str(call.body[0])


class StandIn:
    """A user manager's private socket that serves one connection: SASL
    (``auth`` is its answer to ``AUTH``), then reads each message and sends
    what ``answer`` makes of it, until seqbox hangs up."""

    def __init__(self, path: Path, auth: bytes, answer: Answer) -> None:
        self.path = path
        self.auth = auth
        self.answer = answer
        self.opening = b""
        self.call: Message | None = None
        #: every call read, in order (``call`` is the first)
        self.calls: list[Message] = []
        self.answered = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n" not in data:
                data += conn.recv(4096)
            self.opening, _, data = data.partition(b"\r\n")
            conn.sendall(self.auth)
            if not self.auth.startswith(b"OK"):
                return
            parser = Parser()
            while not data.startswith(b"BEGIN\r\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            parser.add_data(data[len(b"BEGIN\r\n") :])
            while True:  # until seqbox hangs up
                while (call := parser.get_next_message()) is None:
                    try:
                        chunk = conn.recv(4096)
                    except OSError:
                        return
                    if not chunk:
                        return
                    parser.add_data(chunk)
                self.calls.append(call)
                self.call = self.calls[0]
                try:
                    for chunk in self.answer(call):
                        conn.sendall(chunk)
                except OSError:  # seqbox hung up before the last of it (it was moved)
                    return
                finally:
                    self.answered.set()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Callable[..., StandIn]]:
    made: list[StandIn] = []

    def make(answer: Answer, auth: bytes = b"OK 0123456789abcdef0123456789abcdef\r\n") -> StandIn:
        made.append(StandIn(tmp_path / "private", auth, answer))
        return made[-1]

    yield make
    for stand_in in made:
        stand_in.close()


def _ask(stand_in: StandIn, moved: Callable[[str], bool], timeout: float = 5.0) -> str:
    unit, no_slice = bus.move_into_scope(
        str(stand_in.path), "seqbox run -- make", pid=4321, move_timeout=timeout, moved=moved
    )
    assert no_slice is None  # none was asked for
    return unit


def test_the_scope_is_asked_for_and_waited_on(manager: Callable[..., StandIn]) -> None:
    def answer(call: Message) -> list[bytes]:
        unit = unit_of(call)
        noise = signal("UnitNew", "so", (unit, "/org/freedesktop/systemd1/unit/x")) + signal(
            "PropertiesChanged", "sa{sv}as", ("org.freedesktop.systemd1.Unit", {"N": ("t", 1)}, [])
        )
        return [
            noise,
            reply(call),
            job_removed("other.service", "failed", "/job/1"),
            job_removed(unit, "done"),
        ]

    stand_in = manager(answer)
    unit = _ask(stand_in, lambda unit: stand_in.answered.is_set())
    assert re.fullmatch(r"run-seqbox-4321-[0-9a-f]{8}\.scope", unit), unit
    uid_hex = str(os.geteuid()).encode().hex().encode()
    assert stand_in.opening == b"\0AUTH EXTERNAL " + uid_hex
    call = stand_in.call
    assert call is not None
    _is_our_call(call, unit, 4321, "seqbox run -- make")


def _is_our_call(call: Message, unit: str, pid: int, description: str) -> None:
    """Our StartTransientUnit call: to the manager, a scope holding ``pid``,
    delegated, collected once it is empty or failed."""
    assert call.header.message_type is MessageType.method_call
    fields = call.header.fields
    assert fields[HeaderFields.path] == "/org/freedesktop/systemd1"
    assert fields[HeaderFields.interface] == "org.freedesktop.systemd1.Manager"
    assert fields[HeaderFields.member] == "StartTransientUnit"
    assert fields[HeaderFields.destination] == "org.freedesktop.systemd1"
    assert fields[HeaderFields.signature] == "ssa(sv)a(sa(sv))"
    assert call.body == (
        unit,
        "fail",
        [
            ("Description", ("s", description)),
            ("PIDs", ("au", [pid])),
            ("Delegate", ("b", True)),
            ("CollectMode", ("s", "inactive-or-failed")),
        ],
        [],
    )


def test_our_call_read_back_from_the_wire() -> None:
    """The call as jeepney puts it on the wire and reads it back; a description
    is one printable line of at most 200 characters (systemd saves it in a unit file)."""
    message = bus.start_transient_scope("run-seqbox-1-ab.scope", 1, "seqbox run -- make\nall" + "x" * 300)
    parser = Parser()
    parser.add_data(message.serialise(serial=1))
    call = parser.get_next_message()
    assert call is not None
    _is_our_call(call, "run-seqbox-1-ab.scope", 1, ("seqbox run -- make all" + "x" * 300)[:200])


def test_two_scopes_never_share_a_name() -> None:
    assert bus.unit_name(1, os.urandom(4)) != bus.unit_name(1, os.urandom(4))


def test_a_refused_uid(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [], auth=b"REJECTED EXTERNAL\r\n")
    why = f"did not accept uid {os.geteuid()} \\(it answered 'REJECTED EXTERNAL'\\)"
    with pytest.raises(BackendError, match=why):
        _ask(stand_in, lambda unit: False)


def test_an_error_reply_says_what_the_manager_said(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [error(call, "org.freedesktop.systemd1.UnitExists", "Unit x exists.")])
    why = r"refused run-seqbox-.*: Unit x exists\. \(org\.freedesktop\.systemd1\.UnitExists\)"
    with pytest.raises(BackendError, match=why):
        _ask(stand_in, lambda unit: False)


def test_a_failed_start_job_fails_at_once(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [reply(call), job_removed(unit_of(call), "failed")])
    with pytest.raises(BackendError, match="its start job ended: failed"):
        _ask(stand_in, lambda unit: False, timeout=30)  # not the timeout: the job's end


def test_a_scope_this_process_never_enters_times_out(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [reply(call), job_removed(unit_of(call), "done")])
    with pytest.raises(BackendError, match="was not moved into it in time"):
        _ask(stand_in, lambda unit: False, timeout=0.3)


def test_an_answer_that_is_not_a_job(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [reply(call, "u", (7,))])
    with pytest.raises(BackendError, match="not a job"):
        _ask(stand_in, lambda unit: False)


def test_an_answer_that_is_not_d_bus(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [b"HTTP/1.1 400 Bad Request\r\n\r\n"])
    with pytest.raises(BackendError, match="not D-Bus"):
        _ask(stand_in, lambda unit: False)


def test_a_manager_that_hangs_up(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [], auth=b"")  # reads AUTH, answers nothing, closes
    with pytest.raises(BackendError, match="closed the connection"):
        _ask(stand_in, lambda unit: False)


def test_no_manager_at_all(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"cannot connect to .*private: No such file or directory"):
        bus.move_into_scope(str(tmp_path / "private"), "d", moved=lambda unit: False)


@pytest.mark.parametrize(
    ("text", "inside"),
    [
        ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-seqbox-1-ab.scope\n", True),
        ("0::/user.slice/user-1000.slice/session-2.scope\n", False),
        ("0::/user.slice/x/run-seqbox-1-ab.scope/seqbox-sup-1\n", False),
    ],
)
def test_inside_the_unit_from_proc_self_cgroup(text: str, inside: bool) -> None:
    assert bus.in_unit(text, "run-seqbox-1-ab.scope") is inside


# -- the lock's slice (seqbox/ceiling.py): limited to the budget, the scope put in it -------

SLICE = "seqboxlock-default\\x40proj\\x2d0123456789abcdef.slice"
BUDGET = 300 << 20
LIMITS = [("MemoryMax", ("t", BUDGET)), ("MemorySwapMax", ("t", 0))]


def member(call: Message) -> str:
    return str(call.header.fields[HeaderFields.member])


def _scope_answer(call: Message) -> list[bytes]:
    return [reply(call), job_removed(unit_of(call), "done")]


def _ask_in_slice(stand_in: StandIn) -> tuple[str, str | None]:
    def moved(unit: str) -> bool:  # once the scope's call is answered
        return any(unit_of(call) == unit for call in stand_in.calls) and stand_in.answered.is_set()

    return bus.move_into_scope(
        str(stand_in.path),
        "seqbox run -- make",
        pid=4321,
        moved=moved,
        lock_slice=bus.SliceAsk(SLICE, BUDGET, 'seqbox: the runs of lock "default"'),
    )


def _scope_call(stand_in: StandIn, unit: str) -> Message:
    (call,) = [call for call in stand_in.calls if unit_of(call) == unit]
    assert member(call) == "StartTransientUnit"
    return call


def test_a_new_lock_slice_is_started_with_the_budget_and_the_scope_goes_in(
    manager: Callable[..., StandIn],
) -> None:
    def answer(call: Message) -> list[bytes]:
        if unit_of(call) == SLICE:
            return [reply(call, "o", ("/org/freedesktop/systemd1/job/41",))]
        return _scope_answer(call)

    stand_in = manager(answer)
    unit, no_slice = _ask_in_slice(stand_in)
    assert no_slice is None
    first = stand_in.calls[0]
    assert (member(first), first.header.fields[HeaderFields.signature]) == (
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
    )
    assert first.body == (
        SLICE,
        "fail",
        [("Description", ("s", 'seqbox: the runs of lock "default"')), *LIMITS],
        [],
    )
    properties = _scope_call(stand_in, unit).body[2]
    assert properties[-1] == ("Slice", ("s", SLICE)), properties
    assert len(stand_in.calls) == 2


def test_an_existing_lock_slice_gets_the_current_budget(manager: Callable[..., StandIn]) -> None:
    """The manager answers UnitExists (another run of the lock made the slice):
    SetUnitProperties, at runtime, sets its limit to this run's budget."""

    def answer(call: Message) -> list[bytes]:
        if member(call) == "SetUnitProperties":
            return [reply(call, "", ())]
        if unit_of(call) == SLICE:
            return [error(call, bus.UNIT_EXISTS, f"Unit {SLICE} was already loaded or has a fragment file.")]
        return _scope_answer(call)

    stand_in = manager(answer)
    unit, no_slice = _ask_in_slice(stand_in)
    assert no_slice is None
    second = stand_in.calls[1]
    assert (member(second), second.header.fields[HeaderFields.signature]) == ("SetUnitProperties", "sba(sv)")
    assert second.body == (SLICE, True, LIMITS)
    assert _scope_call(stand_in, unit).body[2][-1] == ("Slice", ("s", SLICE))


@pytest.mark.parametrize("refused", ["StartTransientUnit", "SetUnitProperties"])
def test_a_slice_that_cannot_be_had_is_said_and_the_scope_goes_without(
    manager: Callable[..., StandIn], refused: str
) -> None:
    """No limit on the lock's slice: the scope is still had, outside it, and the
    caller is told why (the run then fails closed, seqbox/lockbudget.py)."""

    def answer(call: Message) -> list[bytes]:
        if member(call) == refused and unit_of(call) == SLICE:
            return [error(call, "org.freedesktop.DBus.Error.AccessDenied", "Access denied")]
        if unit_of(call) == SLICE:
            return [error(call, bus.UNIT_EXISTS, "exists")]
        return _scope_answer(call)

    stand_in = manager(answer)
    unit, no_slice = _ask_in_slice(stand_in)
    assert no_slice is not None
    assert SLICE in no_slice
    assert "Access denied (org.freedesktop.DBus.Error.AccessDenied)" in no_slice
    properties = _scope_call(stand_in, unit).body[2]
    assert all(name != "Slice" for name, _ in properties), properties
