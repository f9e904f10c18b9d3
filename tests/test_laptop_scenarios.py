"""The unprivileged developer on a systemd machine (the laptop lane,
scripts/vm-laptop): ``seqbox run`` re-runs itself in a delegated scope from the
user's systemd manager and gets a cgroup v2 of its own; without a manager that
answers it polls, saying so once; ``doctor`` says what ``run`` does."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path

from tests.capabilities import needs
from tests.helpers import MIB, SeqboxRunner, prog, slack

pytestmark = needs("user_manager")

LIMIT = 200 * MIB
HOG_400M = prog("hog", "--total", "400", "--chunk", "16")


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


def test_a_run_takes_the_delegated_scope_and_leaves_nothing(sbx: SeqboxRunner) -> None:
    res = sbx.run("--json", "--", *prog("cgroupinfo"))
    assert res.returncode == 0, res
    assert res.json()["backend"] == "cgroup2", res
    assert res.seqbox_lines() == [], res  # no note: nothing fell back
    cgroup = _cgroups(res.json())[""]
    scope = _scope_of(cgroup)
    assert f"/user-{os.getuid()}.slice/user@{os.getuid()}.service/" in scope, cgroup
    assert "/seqbox-" in cgroup[len(scope) :], cgroup  # the sandbox is inside the scope
    deadline = time.monotonic() + slack(5)  # systemd removes an empty scope right after it empties
    while os.path.exists(scope) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(scope), f"the scope {scope} outlived the run"


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


def test_systemd_run_failing_before_the_command_falls_back(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """The manager answers but systemd-run fails anyway (a stand-in on PATH): the
    command still runs once, polled, and seqbox says why in one note."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemd-run"
    fake.write_text("#!/bin/sh\necho 'Failed to connect to bus: Connection refused' >&2\nexit 1\n")
    fake.chmod(0o755)
    count = tmp_path / "count"
    res = sbx.run(
        "--json", "--", "sh", "-c", f"echo x >> {count}; exit 3",
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert res.returncode == 3, res
    assert count.read_text() == "x\n", "the command must run exactly once"
    assert res.json()["backend"] == "poll", res
    notes = res.seqbox_lines()
    assert len(notes) == 1, res
    assert "systemd-run could not start a delegated scope (it exited 1)" in notes[0], res


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
