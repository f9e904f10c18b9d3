"""When seqbox asks systemd for a delegated scope (an unprivileged user on a
systemd machine gets a cgroup v2 of its own). The decision is pure and tested
on canned probe details; whether a user manager answers is tested on real
sockets; the re-run itself (and its fallback) on a stand-in for systemd-run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from seqbox.backends import candidates, select
from seqbox.backends.cgroup.v2 import Cgroup2Backend
from seqbox.backends.systemd import rerun
from seqbox.backends.systemd.scope import FAILED, NONE, DelegationPlan, Scope, delegation_plan, user_manager
from tests.capabilities import needs
from tests.helpers import read_pids, wait_dead

DELEGABLE = {"delegation": True, "user_manager": True, "user_manager_reason": "it answers"}


def _plan(**overrides: object) -> DelegationPlan:
    args: dict[str, object] = {
        "python": "/usr/bin/python3",
        "uid": 1000,
        "backend": "auto",
        "cgroup2": DELEGABLE,
        "systemd_run": "/usr/bin/systemd-run",
    }
    args.update(overrides)
    return delegation_plan(["--mem", "1G", "--", "make"], **args)  # type: ignore[arg-type]


def test_an_unprivileged_user_on_systemd_gets_a_delegated_scope() -> None:
    assert _plan().command == [
        "/usr/bin/systemd-run", "--user", "--scope", "--quiet", "--collect", "-p", "Delegate=yes",
        "--", "/usr/bin/python3", "-m", "seqbox", "run", "--mem", "1G", "--", "make",
    ]  # fmt: skip
    assert _plan(backend="cgroup2").command is not None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"uid": 0}, "root makes its own cgroups"),
        ({"backend": "poll"}, "--backend poll was asked for"),
        ({"cgroup2": {"delegation": False}}, "would not give a cgroup v2"),
        ({"systemd_run": None}, "systemd-run is not installed"),
        (
            {"cgroup2": {"delegation": True, "user_manager": False, "user_manager_reason": "a stale socket"}},
            "a stale socket",
        ),
    ],
)
def test_no_scope_when_it_would_not_help(overrides: dict[str, object], reason: str) -> None:
    plan = _plan(**overrides)
    assert plan.command is None
    assert reason in plan.reason


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    (tmp_path / "systemd").mkdir()
    return tmp_path


@pytest.fixture
def listening(runtime: Path) -> Iterator[Path]:
    """A socket that accepts, where the user manager's would be."""
    path = runtime / "systemd" / "private"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen(4)
        yield path


def test_a_listening_user_manager_answers(runtime: Path, listening: Path) -> None:
    answers, why = user_manager({"XDG_RUNTIME_DIR": str(runtime)})
    assert answers, why
    assert str(listening) in why


def test_a_stale_socket_does_not_answer(runtime: Path) -> None:
    path = runtime / "systemd" / "private"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))  # bound, never listened on, then closed: what a dead manager leaves
    assert path.exists()
    answers, why = user_manager({"XDG_RUNTIME_DIR": str(runtime)})
    assert not answers
    assert why == f"no systemd user manager answers at {path} (a stale socket)"


def test_no_socket_no_manager(runtime: Path) -> None:
    assert user_manager({"XDG_RUNTIME_DIR": str(runtime)}) == (
        False,
        f"no systemd user manager ({runtime}/systemd/private does not exist)",
    )
    assert user_manager({}) == (False, "no systemd user manager (XDG_RUNTIME_DIR is not set)")


def test_a_failed_scope_reaches_the_choice() -> None:
    """The scope step's result is handed to the choice (not through the environment)."""
    failed = Scope(FAILED, rerun.failure(1))
    assert failed.failure == "systemd-run could not start a delegated scope (it exited 1)"
    assert Scope(NONE, "no scope was wanted").failure is None
    made = {backend.name: backend for backend in candidates(failed)}
    if "cgroup2" in made:
        assert isinstance(made["cgroup2"], Cgroup2Backend)
        assert made["cgroup2"].scope_failure == failed.failure


@needs("user_manager")
def test_a_failed_scope_is_the_reason_cgroup2_gives() -> None:
    """Where a delegated scope would give cgroup2 (the laptop lane), the probe
    says why there is none, and the fallback's cause is it."""
    failed = Scope(FAILED, rerun.failure(1))
    selection = select("auto", failed)
    cgroup2 = next((p for p in selection.rejected if p.name == "cgroup2"), None)
    assert cgroup2 is not None, selection.rejected
    assert cgroup2.details.get("delegation"), cgroup2.details
    assert (
        cgroup2.details["user_manager_reason"]
        == "systemd-run could not start a delegated scope (it exited 1)"
    )
    assert selection.fallback_cause() == "systemd-run could not start a delegated scope (it exited 1)"


def _stand_in(tmp_path: Path, body: str) -> list[str]:
    """A stand-in for ``systemd-run ... -- python -m seqbox run``: a script."""
    script = tmp_path / "systemd-run"
    script.write_text(f"import os, sys\n{body}\n")
    return [sys.executable, str(script)]


def test_the_inner_run_reports_in_and_its_status_comes_back(tmp_path: Path) -> None:
    command = _stand_in(
        tmp_path,
        "from seqbox.backends.systemd.rerun import STARTED_FD_ENV, report_started\n"
        "assert report_started(os.environ)\n"
        "assert STARTED_FD_ENV not in os.environ  # the command never sees it\n"
        "sys.exit(7)",
    )
    assert rerun.run_in_scope(command, dict(os.environ)) == (True, 7)


def test_systemd_run_failing_before_the_command_is_not_started(tmp_path: Path) -> None:
    command = _stand_in(tmp_path, "print('Failed to connect to bus', file=sys.stderr); sys.exit(1)")
    assert rerun.run_in_scope(command, dict(os.environ)) == (False, 1)


def test_a_signal_death_is_128_plus_n(tmp_path: Path) -> None:
    command = _stand_in(
        tmp_path,
        "from seqbox.backends.systemd.rerun import report_started\n"
        "report_started(os.environ)\n"
        "import signal; os.kill(os.getpid(), signal.SIGTERM)",
    )
    assert rerun.run_in_scope(command, dict(os.environ)) == (True, 143)


def test_the_inner_run_dies_with_the_waiting_seqbox(tmp_path: Path) -> None:
    """SIGKILL to the seqbox the caller started ends the re-run too, as it would
    an exec'd seqbox (PR_SET_PDEATHSIG)."""
    pids = tmp_path / "pids"
    command = _stand_in(
        tmp_path,
        "from seqbox.backends.systemd.rerun import report_started\n"
        "report_started(os.environ)\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}}\\n')\n"
        "import time; time.sleep(60)",
    )
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from seqbox.backends.systemd import rerun; import os; "
            f"rerun.run_in_scope({command!r}, os.environ)",
        ]
    )
    try:
        inner = read_pids(pids)["0"]
    finally:
        waiter.send_signal(signal.SIGKILL)
        waiter.wait(timeout=10)
    assert wait_dead([inner], timeout=5) == []
