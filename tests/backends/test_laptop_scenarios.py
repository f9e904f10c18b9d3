"""The unprivileged developer on a systemd machine (the laptop lane,
scripts/vm-laptop): ``seqbox run`` asks the user's systemd manager over D-Bus
for a delegated scope holding itself and gets a cgroup v2 of its own; when
that fails it re-runs itself under systemd-run; without a manager that
answers it polls, saying so once; ``doctor`` says what ``run`` does."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from seqbox.backends.base import LOCK_PREFIX, LOCK_SLICES, lock_dir_parts, lock_slice_name
from seqbox.project import project_key
from tests.capabilities import REAL_RUNTIME_DIR, needs
from tests.helpers import MIB, SeqboxRunner, prog, read_pids, slack, wait_dead

pytestmark = needs("user_manager")

LIMIT = 200 * MIB
HOG_400M = prog("hog", "--total", "400", "--chunk", "16")
#: the scope seqbox asks for over D-Bus (systemd-run's are run-r<hex>.scope, run-u<N>.scope)
OVER_DBUS = re.compile(r"run-seqbox-\d+-[0-9a-f]{8}\.scope")
#: the -v line of a scope had over D-Bus
OBTAINED = "in a delegated scope from the systemd user manager, asked for over D-Bus: "


def _cgroups(doc: dict[str, object]) -> dict[str, str]:
    """The cgroups ``cgroupinfo`` printed, from a ``--json`` document (which
    carries the command's stdout)."""
    info = json.loads(str(doc["stdout"]).splitlines()[0])
    dirs: dict[str, str] = info["dirs"]
    return dirs


def _scope_of(cgroup: str) -> str:
    """The ``run-*.scope`` directory a sandbox's cgroup sits in."""
    parts = cgroup.split("/")
    scopes = [i for i, part in enumerate(parts) if part.startswith("run-") and part.endswith(".scope")]
    assert scopes, f"not inside a transient scope: {cgroup}"
    return "/".join(parts[: scopes[-1] + 1])


def _no_manager_runtime(tmp_path: Path, *, stale: bool) -> Path:
    """An XDG_RUNTIME_DIR with no user manager: empty, or holding a stale socket
    (bound by a manager that is gone: the file is there, nothing answers)."""
    runtime = tmp_path / ("stale-runtime" if stale else "empty-runtime")
    (runtime / "systemd").mkdir(parents=True, mode=0o700)
    if stale:
        path = runtime / "systemd" / "private"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(path))
        assert stat.S_ISSOCK(path.stat().st_mode)
    return runtime


def _gone(scope: str) -> bool:
    """Whether the scope's cgroup is gone (systemd removes an empty scope right after it empties)."""
    deadline = time.monotonic() + slack(5)
    while os.path.exists(scope) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not os.path.exists(scope)


@pytest.fixture
def refusing_runtime(tmp_path: Path) -> Iterator[Path]:
    """An XDG_RUNTIME_DIR whose systemd/private accepts connections (so a user
    manager seems to answer) but refuses every D-Bus authentication, as a
    manager would refuse a client of another uid: seqbox's own D-Bus request
    fails in earnest, at its first step."""
    runtime = tmp_path / "refusing-runtime"
    (runtime / "systemd").mkdir(parents=True, mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(runtime / "systemd" / "private"))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    if conn.recv(4096):  # a probe only connects and closes
                        conn.sendall(b"REJECTED EXTERNAL\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield runtime
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)


def _systemd_run_wrapper(tmp_path: Path, body: str) -> dict[str, str]:
    """The environment that puts a stand-in ``systemd-run`` (a shell script) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemd-run"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_the_scope_is_asked_for_over_d_bus(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """No systemd-run, no second seqbox: this seqbox asks for the scope, moves
    into it, and the scope carries what was asked for (systemd's own view)."""
    show, where = tmp_path / "show", tmp_path / "where"
    script = (
        "import re, subprocess, sys\n"
        "cgroup = open('/proc/self/cgroup').read().strip().split('::', 1)[1]\n"
        "unit = re.findall(r'run-seqbox-[^/]*\\.scope', cgroup)[0]\n"
        "props = 'Delegate,CollectMode,Description,ActiveState'\n"
        "argv = ['systemctl', '--user', 'show', '-p', props, unit]\n"
        "out = subprocess.run(argv, capture_output=True, text=True)\n"
        f"open({str(show)!r}, 'w').write(out.stdout)\n"
        f"open({str(where)!r}, 'w').write(cgroup)\n"
        "sys.exit(3)\n"
    )
    res = sbx.run("-v", "--json", "--", "python3", "-c", script)
    assert res.returncode == 3, res  # the command's own status
    assert res.json()["backend"] == "cgroup2", res
    obtained = [line for line in res.seqbox_lines() if OBTAINED in line]
    assert len(obtained) == 1, res
    unit = obtained[0].split(OBTAINED)[1].split(" ")[0]
    assert OVER_DBUS.fullmatch(unit), res
    assert "systemd-run" not in res.stderr, res
    assert "polling" not in res.stderr, res
    props = dict(line.split("=", 1) for line in show.read_text().splitlines())
    assert props["Delegate"] == "yes", props
    assert props["CollectMode"] == "inactive-or-failed", props
    assert props["ActiveState"] == "active", props
    assert props["Description"].startswith("seqbox run -v --json -- python3 -c"), props
    scope = _scope_of(where.read_text())
    assert scope.endswith(f"/{unit}"), scope
    assert _gone(f"/sys/fs/cgroup{scope}"), f"the scope {scope} outlived the run"


def test_a_signal_to_seqbox_in_its_scope(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """SIGTERM to seqbox (which is in the scope itself now, no waiting parent
    in between): 143, as on the root path; the command's tree and the scope
    are gone."""
    pidfile = tmp_path / "family"
    proc = sbx.start("--grace", "1", "--", *prog("family", "--pids", pidfile, "--exit", "wait"))
    pids = read_pids(pidfile, count=4)
    with open(f"/proc/{proc.pid}/cgroup") as f:
        cgroup = f.read().strip().split("::", 1)[1]
    scope = "/sys/fs/cgroup" + _scope_of(cgroup)
    assert OVER_DBUS.fullmatch(os.path.basename(scope)), scope
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=slack(10)) == 143
    assert wait_dead(pids.values(), 2) == []
    assert _gone(scope), f"the scope {scope} outlived the run"


def test_a_run_takes_the_delegated_scope_and_leaves_nothing(sbx: SeqboxRunner) -> None:
    res = sbx.run("--json", "--", *prog("cgroupinfo"))
    assert res.returncode == 0, res
    assert res.json()["backend"] == "cgroup2", res
    assert res.seqbox_lines() == [], res  # no note: nothing fell back
    cgroup = _cgroups(res.json())[""]
    scope = _scope_of(cgroup)
    assert f"/user-{os.getuid()}.slice/user@{os.getuid()}.service/" in scope, cgroup
    assert "/seqbox-" in cgroup[len(scope) :], cgroup  # the sandbox is inside the scope
    assert OVER_DBUS.fullmatch(os.path.basename(scope)), cgroup
    assert _gone(scope), f"the scope {scope} outlived the run"


def test_a_memory_hog_in_the_scope_is_killed_by_the_kernel(sbx: SeqboxRunner) -> None:
    res = sbx.run("--json", "--mem", "200M", "--", *HOG_400M, timeout=120)
    assert res.returncode == 137, res
    doc = res.json()
    assert (doc["status"], doc["backend"], doc["mem_limit_bytes"]) == ("memory", "cgroup2", LIMIT), res


def test_without_a_user_manager_it_polls_and_says_so_once(sbx: SeqboxRunner, tmp_path: Path) -> None:
    runtime = _no_manager_runtime(tmp_path, stale=False)
    res = sbx.run("--json", "--", "sh", "-c", "exit 3", env={"XDG_RUNTIME_DIR": str(runtime)})
    assert res.returncode == 3, res
    assert res.json()["backend"] == "poll", res
    note = res.one_line()
    assert "no systemd user manager" in note, res
    assert "polling" in note, res


def test_a_stale_user_manager_socket_polls_and_says_so_once(sbx: SeqboxRunner, tmp_path: Path) -> None:
    runtime = _no_manager_runtime(tmp_path, stale=True)
    res = sbx.run("--json", "--", "sh", "-c", "exit 3", env={"XDG_RUNTIME_DIR": str(runtime)})
    assert res.returncode == 3, res  # the command ran; systemd-run's failure is not passed off as its status
    assert res.json()["backend"] == "poll", res
    note = res.one_line()
    assert "a stale socket" in note, res
    assert "polling" in note, res


def test_systemd_run_is_the_fallback_when_d_bus_fails(
    sbx: SeqboxRunner, tmp_path: Path, refusing_runtime: Path
) -> None:
    """seqbox's D-Bus request is refused; systemd-run (pointed back at the real
    user manager by a wrapper) gives the scope, and -v says so."""
    env = _systemd_run_wrapper(tmp_path, f'XDG_RUNTIME_DIR={REAL_RUNTIME_DIR} exec /usr/bin/systemd-run "$@"')
    env["XDG_RUNTIME_DIR"] = str(refusing_runtime)
    res = sbx.run("-v", "--json", "--", *prog("cgroupinfo"), env=env)
    assert res.returncode == 0, res
    assert res.json()["backend"] == "cgroup2", res
    assert not any(OBTAINED in line for line in res.seqbox_lines()), res
    fell_back = [line for line in res.seqbox_lines() if "asking systemd-run" in line]
    assert len(fell_back) == 1, res
    assert "no delegated scope over D-Bus (the user manager did not accept uid" in fell_back[0], res
    assert "REJECTED EXTERNAL" in fell_back[0], res
    assert "polling" not in res.stderr, res
    scope = _scope_of(_cgroups(res.json())[""])
    assert not OVER_DBUS.fullmatch(os.path.basename(scope)), scope  # systemd-run's own scope
    assert _gone(scope), f"the scope {scope} outlived the run"


def test_systemd_run_failing_before_the_command_falls_back(
    sbx: SeqboxRunner, tmp_path: Path, refusing_runtime: Path
) -> None:
    """The manager seems to answer, but neither D-Bus nor systemd-run (a
    stand-in that fails) gives a scope: the command still runs once, polled,
    and seqbox says why in one note (-v: both reasons)."""
    env = _systemd_run_wrapper(tmp_path, "echo 'Failed to connect to bus: Connection refused' >&2\nexit 1")
    env["XDG_RUNTIME_DIR"] = str(refusing_runtime)
    count = tmp_path / "count"
    res = sbx.run("--json", "--", "sh", "-c", f"echo x >> {count}; exit 3", env=env)
    assert res.returncode == 3, res
    assert count.read_text() == "x\n", "the command must run exactly once"
    assert res.json()["backend"] == "poll", res
    notes = res.seqbox_lines()
    assert len(notes) == 1, res
    assert "systemd-run could not start a delegated scope (it exited 1)" in notes[0], res

    res = sbx.run("-v", "--", "true", env=env)
    assert res.returncode == 0, res
    assert "no delegated scope over D-Bus (the user manager did not accept uid" in res.stderr, res
    assert "systemd-run could not start a delegated scope (it exited 1)" in res.stderr, res
    assert "Traceback" not in res.stderr, res


def test_nested_runs_inside_the_scope(sbx: SeqboxRunner) -> None:
    inner = ["python3", "-m", "seqbox", "run", "--json", "--mem", "1G", "--", *prog("cgroupinfo")]
    res = sbx.run("--json", "--mem", "300M", "--", *inner, timeout=120)
    assert res.returncode == 0, res
    inner_doc = json.loads(str(res.json()["stdout"]).strip().splitlines()[-1])
    assert inner_doc["backend"] == "cgroup2", res
    assert inner_doc["mem_limit_bytes"] == 300 * MIB, "a nested run never gets more than its outer run"
    cgroup = _cgroups(inner_doc)[""]
    scope = _scope_of(cgroup)
    assert cgroup[len(scope) :].count("/seqbox-") == 2, f"the inner sandbox is inside the outer's: {cgroup}"
    assert res.seqbox_lines() == [], res


def test_a_nested_hog_is_stopped_by_the_outer_limit(sbx: SeqboxRunner) -> None:
    inner = [
        "python3",
        "-m",
        "seqbox",
        "run",
        "--json",
        "--",
        *HOG_400M,
    ]
    res = sbx.run("--json", "--mem", "200M", "--", *inner, timeout=120)
    assert res.returncode == 137, res
    doc = res.json()
    assert doc["status"] == "memory", res
    assert doc["backend"] == "cgroup2", res


def test_doctor_agrees_with_run(sbx: SeqboxRunner, tmp_path: Path) -> None:
    doctor = sbx.cli("doctor", "--json")
    facts = json.loads(doctor.stdout)
    run = sbx.run("--json", "--", "true")
    assert (facts["backend"], facts["delegated_scope"]) == ("cgroup2", True), doctor
    assert run.json()["backend"] == facts["backend"], run
    assert doctor.returncode == 0, doctor
    assert "delegated scope" in str(facts["why"])
    text = sbx.cli("doctor")
    assert "auto picks:    cgroup2 (inside a delegated scope" in text.stdout, text

    runtime = _no_manager_runtime(tmp_path, stale=True)
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    doctor = sbx.cli("doctor", "--json", env=env)
    facts = json.loads(doctor.stdout)
    run = sbx.run("--json", "--", "true", env=env)
    assert (facts["backend"], facts["delegated_scope"], doctor.returncode) == ("poll", False, 1), doctor
    assert run.json()["backend"] == "poll", run
    assert "a stale socket" in str(facts["why"])
    assert "a stale socket" in run.one_line()


# -- a lock with a budget: its runs share the lock's slice (seqbox/ceiling.py) --------------

#: write this process's cgroup (v2 path) to FILE, then wait for GATE
WHERE_THEN_WAIT = (
    "import os, sys, time\n"
    "where, gate = sys.argv[1:3]\n"
    "cgroup = open('/proc/self/cgroup').read().strip().split('::', 1)[1]\n"
    "open(where + '.tmp', 'w').write(cgroup)\n"
    "os.rename(where + '.tmp', where)\n"
    "while not os.path.exists(gate):\n"
    "    time.sleep(0.02)\n"
)


def _wait_for(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + slack(timeout)
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never came"
        time.sleep(0.02)
    return path.read_text()


def _lock_slice_of(scope: str) -> Path:
    """The lock's slice a run's scope sits in (its parent), checked by name
    (``scope`` as /proc/self/cgroup shows it, or under the mount)."""
    parent = Path(scope if scope.startswith("/sys/fs/cgroup/") else "/sys/fs/cgroup" + scope).parent
    assert parent.name.startswith(LOCK_PREFIX), parent
    assert parent.name.endswith(".slice"), parent
    assert parent.parent.name == LOCK_SLICES, parent
    assert parent.parent.parent.name == f"user@{os.getuid()}.service", parent
    return parent


def test_two_runs_of_a_budget_lock_share_its_slice(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """Two runs of a lock with a budget, each in its own delegated scope, land in
    the one slice of the lock, whose memory.max is the budget (swap closed): the
    lock's ceiling (section 3b). After them the slice stays, empty, limited."""
    script = tmp_path / "where.py"
    script.write_text(WHERE_THEN_WAIT)
    gate = tmp_path / "gate"
    options = ["--budget", "300M", "--mem", "100M", "--json"]
    runs = [sbx.start(*options, "--", "python3", str(script), str(tmp_path / f"where-{i}"), str(gate))
            for i in range(2)]  # fmt: skip
    cgroups = [_wait_for(tmp_path / f"where-{i}") for i in range(2)]
    scopes = [_scope_of(cgroup) for cgroup in cgroups]
    assert scopes[0] != scopes[1], scopes  # a scope each
    assert all(OVER_DBUS.fullmatch(os.path.basename(scope)) for scope in scopes), scopes
    slices = {_lock_slice_of(scope) for scope in scopes}
    assert len(slices) == 1, f"the runs are not in one slice: {cgroups}"
    (lock_slice,) = slices
    key = project_key(os.path.realpath(sbx.project))
    assert lock_slice.name == lock_slice_name("default", key)
    assert lock_dir_parts(lock_slice.name) == ("default", key)
    assert int((lock_slice / "memory.max").read_text()) == 300 * MIB
    swap = lock_slice / "memory.swap.max"
    if swap.exists():
        assert swap.read_text().strip() == "0"
    gate.touch()
    for run in runs:
        out, err = run.communicate(timeout=slack(60))
        assert run.returncode == 0, err
        doc = json.loads(out)
        assert (doc["backend"], doc["status"]) == ("cgroup2", "ok"), doc
        assert b"no memory ceiling" not in err, err
    assert all(_gone(f"/sys/fs/cgroup{scope}") for scope in scopes)
    assert lock_slice.is_dir()  # systemd keeps the slice: empty, with its limit (docs/admission.md)
    assert int((lock_slice / "memory.max").read_text()) == 300 * MIB
    assert not [p for p in lock_slice.iterdir() if p.is_dir()], "a run is left in the lock's slice"


def test_a_kill_at_the_slice_names_the_lock_budget(sbx: SeqboxRunner) -> None:
    """One run over the lock's budget (its --mem above it is refused, so it has
    none): the slice's limit stops it, and the kill names the lock's budget."""
    res = sbx.run("--budget", "200M", "--mem", "0", "--json", "--", *HOG_400M, timeout=120)
    assert res.returncode == 137, res
    assert res.json()["status"] == "memory", res
    assert 'the budget 200.0 MiB of lock "default" was reached' in res.stderr, res


def test_systemd_run_puts_its_scope_in_the_lock_slice(
    sbx: SeqboxRunner, tmp_path: Path, refusing_runtime: Path
) -> None:
    """D-Bus is refused: systemctl set-property limits the lock's slice and
    systemd-run --slice= puts the re-run seqbox in it; it reserves what it is
    told (a ceiling holds it)."""
    real = f"XDG_RUNTIME_DIR={REAL_RUNTIME_DIR}"
    env = _systemd_run_wrapper(tmp_path, f'{real} exec /usr/bin/systemd-run "$@"')
    (tmp_path / "bin" / "systemctl").write_text(f'#!/bin/sh\n{real} exec /usr/bin/systemctl "$@"\n')
    (tmp_path / "bin" / "systemctl").chmod(0o755)
    env["XDG_RUNTIME_DIR"] = str(refusing_runtime)
    res = sbx.run("-v", "--budget", "300M", "--mem", "100M", "--reserve", "50M", "--json", "--",
                  *prog("cgroupinfo"), env=env)  # fmt: skip
    assert res.returncode == 0, res
    asked = [line for line in res.seqbox_lines() if "asking systemd-run" in line]
    assert len(asked) == 1, res
    assert "--slice=seqboxlock-" in asked[0], res
    assert "no memory ceiling" not in res.stderr, res
    doc = res.json()
    assert (doc["backend"], doc["reserved_bytes"]) == ("cgroup2", 50 * MIB), res
    lock_slice = _lock_slice_of(_scope_of(_cgroups(doc)[""]))
    assert int((lock_slice / "memory.max").read_text()) == 300 * MIB


@pytest.mark.parametrize("way", ["dbus", "systemd-run"])
def test_budget_auto_is_the_budget_the_lock_slice_was_given(
    sbx: SeqboxRunner, tmp_path: Path, refusing_runtime: Path, way: str
) -> None:
    """``--budget auto`` is read once, where seqbox starts: the lock's slice is
    limited to it, and admission's gate (and the re-run under systemd-run)
    count that same budget, the one the kernel holds the lock's runs to. (They
    read the machine again inside the slice, whose ancestors need not be those
    of the cgroup where seqbox started.)"""
    env: dict[str, str] = {}
    if way == "systemd-run":
        real = f"XDG_RUNTIME_DIR={REAL_RUNTIME_DIR}"
        env = _systemd_run_wrapper(tmp_path, f'{real} exec /usr/bin/systemd-run "$@"')
        (tmp_path / "bin" / "systemctl").write_text(f'#!/bin/sh\n{real} exec /usr/bin/systemctl "$@"\n')
        (tmp_path / "bin" / "systemctl").chmod(0o755)
        env["XDG_RUNTIME_DIR"] = str(refusing_runtime)
    res = sbx.run("-v", "--budget", "auto", "--mem", "100M", "--json", "--", *prog("cgroupinfo"), env=env)
    assert res.returncode == 0, res
    assert ("asking systemd-run" in res.stderr) == (way == "systemd-run"), res
    assert "no memory ceiling" not in res.stderr, res
    doc = res.json()
    lock_slice = _lock_slice_of(_scope_of(_cgroups(doc)[""]))
    given = int((lock_slice / "memory.max").read_text())
    start = json.loads(Path(str(doc["log"])).read_text().splitlines()[0])
    assert start["event"] == "start"
    assert start["budget"] // 4096 * 4096 == given, (start, given)  # the kernel keeps whole pages
    assert given > 100 * MIB


def test_without_the_lock_slice_a_run_fails_closed(
    sbx: SeqboxRunner, tmp_path: Path, refusing_runtime: Path
) -> None:
    """D-Bus is refused and systemctl cannot limit the lock's slice: the run
    goes in systemd-run's scope without a shared ceiling, says so, and reserves
    its whole --mem (nothing learned, --reserve not trusted)."""
    env = _systemd_run_wrapper(tmp_path, f'XDG_RUNTIME_DIR={REAL_RUNTIME_DIR} exec /usr/bin/systemd-run "$@"')
    env["XDG_RUNTIME_DIR"] = str(refusing_runtime)  # systemctl --user asks the refusing socket
    res = sbx.run("--budget", "300M", "--mem", "100M", "--reserve", "50M", "--json", "--",
                  *prog("cgroupinfo"), env=env)  # fmt: skip
    assert res.returncode == 0, res
    doc = res.json()
    assert (doc["backend"], doc["reserved_bytes"]) == ("cgroup2", 100 * MIB), res
    assert 'warning: no memory ceiling for lock "default"' in res.stderr, res
    assert "this run reserves its --mem, nothing learned" in res.stderr, res
    assert "seqboxlock-" not in _cgroups(doc)[""], res
