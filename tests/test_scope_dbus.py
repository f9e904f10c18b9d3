"""Asking the user manager for a delegated scope over D-Bus
(seqbox/backends/scope_dbus.py), against a stand-in manager on a real Unix
socket: the SASL exchange, the call seqbox sends, and each way the answer can
go wrong. That systemd itself accepts the call, moves seqbox and removes the
scope afterwards is tested in the laptop lane (tests/test_laptop_scenarios.py)."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from seqbox.backends import dbus, scope_dbus
from seqbox.backends.dbus import Variant
from seqbox.errors import BackendError

JOB = "/org/freedesktop/systemd1/job/42"
#: what a stand-in manager does once it has read seqbox's call: it sends bytes back
Answer = Callable[[dbus.Message], list[bytes]]


def reply(call: dbus.Message, signature: str = "o", body: list[object] | None = None) -> bytes:
    fields = [(dbus.REPLY_SERIAL, Variant("u", call.serial))]
    return dbus.encode_message(dbus.METHOD_RETURN, 100, fields, signature, [JOB] if body is None else body)


def error(call: dbus.Message, name: str, text: str) -> bytes:
    fields = [(dbus.REPLY_SERIAL, Variant("u", call.serial)), (dbus.ERROR_NAME, Variant("s", name))]
    return dbus.encode_message(dbus.ERROR, 101, fields, "s", [text])


def signal(member: str, signature: str, body: list[object]) -> bytes:
    fields = [
        (dbus.PATH, Variant("o", "/org/freedesktop/systemd1")),
        (dbus.INTERFACE, Variant("s", "org.freedesktop.systemd1.Manager")),
        (dbus.MEMBER, Variant("s", member)),
    ]
    return dbus.encode_message(dbus.SIGNAL, 102, fields, signature, body)


def job_removed(unit: str, result: str, job: str = JOB) -> bytes:
    return signal("JobRemoved", "uoss", [42, job, unit, result])


class StandIn:
    """A user manager's private socket that serves one connection: SASL
    (``auth`` is its answer to ``AUTH``), then reads one message and sends
    what ``answer`` makes of it."""

    def __init__(self, path: Path, auth: bytes, answer: Answer) -> None:
        self.path = path
        self.auth = auth
        self.answer = answer
        self.opening = b""
        self.call: dbus.Message | None = None
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
            while not data.startswith(b"BEGIN\r\n") or dbus.split_message(data[7:]) is None:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            split = dbus.split_message(data[7:])
            assert split is not None
            self.call = split[0]
            for chunk in self.answer(self.call):
                conn.sendall(chunk)
            self.answered.set()
            conn.recv(1)  # until seqbox hangs up

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
    return scope_dbus.move_into_scope(
        str(stand_in.path), "seqbox run -- make", uid=1000, pid=4321, move_timeout=timeout, moved=moved
    )


def test_the_scope_is_asked_for_and_waited_on(manager: Callable[..., StandIn]) -> None:
    def answer(call: dbus.Message) -> list[bytes]:
        unit = str(call.values()[0])
        noise = signal("UnitNew", "so", [unit, "/org/freedesktop/systemd1/unit/x"]) + signal(
            "PropertiesChanged", "sa{sv}as", ["org.freedesktop.systemd1.Unit", [("N", Variant("t", 1))], []]
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
    assert stand_in.opening == b"\0AUTH EXTERNAL 31303030"  # "1000" in hex
    call = stand_in.call
    assert call is not None
    assert call.kind == dbus.METHOD_CALL
    assert call.fields == {
        dbus.PATH: "/org/freedesktop/systemd1",
        dbus.INTERFACE: "org.freedesktop.systemd1.Manager",
        dbus.MEMBER: "StartTransientUnit",
        dbus.DESTINATION: "org.freedesktop.systemd1",
        dbus.SIGNATURE: "ssa(sv)a(sa(sv))",
    }
    assert call.values() == [
        unit,
        "fail",
        [
            ("Description", Variant("s", "seqbox run -- make")),
            ("PIDs", Variant("au", [4321])),
            ("Delegate", Variant("b", True)),
            ("CollectMode", Variant("s", "inactive-or-failed")),
        ],
        [],
    ]


def test_two_scopes_never_share_a_name() -> None:
    assert scope_dbus.unit_name(1, os.urandom(4)) != scope_dbus.unit_name(1, os.urandom(4))


def test_a_refused_uid(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [], auth=b"REJECTED EXTERNAL\r\n")
    with pytest.raises(BackendError, match="did not accept uid 1000 \\(it answered 'REJECTED EXTERNAL'\\)"):
        _ask(stand_in, lambda unit: False)


def test_an_error_reply_says_what_the_manager_said(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [error(call, "org.freedesktop.systemd1.UnitExists", "Unit x exists.")])
    why = r"refused run-seqbox-.*: Unit x exists\. \(org\.freedesktop\.systemd1\.UnitExists\)"
    with pytest.raises(BackendError, match=why):
        _ask(stand_in, lambda unit: False)


def test_a_failed_start_job_fails_at_once(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [reply(call), job_removed(str(call.values()[0]), "failed")])
    with pytest.raises(BackendError, match="its start job ended: failed"):
        _ask(stand_in, lambda unit: False, timeout=30)  # not the timeout: the job's end


def test_a_scope_this_process_never_enters_times_out(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [reply(call), job_removed(str(call.values()[0]), "done")])
    with pytest.raises(BackendError, match="was not moved into it in time"):
        _ask(stand_in, lambda unit: False, timeout=0.3)


def test_an_answer_that_is_not_a_job(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [reply(call, "u", [7])])
    with pytest.raises(BackendError, match="not a job"):
        _ask(stand_in, lambda unit: False)


def test_an_answer_that_is_not_d_bus(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [b"HTTP/1.1 400 Bad Request\r\n\r\n"])
    with pytest.raises(BackendError, match="not D-Bus: a message in byte order b'H'"):
        _ask(stand_in, lambda unit: False)


def test_a_manager_that_hangs_up(manager: Callable[..., StandIn]) -> None:
    stand_in = manager(lambda call: [], auth=b"")  # reads AUTH, answers nothing, closes
    with pytest.raises(BackendError, match="closed the connection"):
        _ask(stand_in, lambda unit: False)


def test_no_manager_at_all(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"cannot connect to .*private: No such file or directory"):
        scope_dbus.move_into_scope(str(tmp_path / "private"), "d", moved=lambda unit: False)


@pytest.mark.parametrize(
    ("text", "inside"),
    [
        ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-seqbox-1-ab.scope\n", True),
        ("0::/user.slice/user-1000.slice/session-2.scope\n", False),
        ("0::/user.slice/x/run-seqbox-1-ab.scope/seqbox-sup-1\n", False),
    ],
)
def test_inside_the_unit_from_proc_self_cgroup(text: str, inside: bool) -> None:
    assert scope_dbus.in_unit(text, "run-seqbox-1-ab.scope") is inside
