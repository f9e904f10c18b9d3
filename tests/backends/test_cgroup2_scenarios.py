"""Where seqbox can make its cgroups on a pure cgroup v2 machine (issue 4):
started from the root cgroup; from a non-root cgroup it shares
with another process (that process stays where it is); alone in a non-root
cgroup (it moves itself into a leaf and back); in a subtree delegated to an
unprivileged user; with /sys/fs/cgroup read-only (it falls back to polling and
still enforces); and nested runs, whose sandbox sits inside the parent's.

These run in the cgroup v2 VM lane (scripts/vm-test); elsewhere they skip with
the capability probe's reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.backends.test_fallback import nobody
from tests.capabilities import needs
from tests.conftest import Tracker
from tests.helpers import FORCED_CHARGES, TOKEN_ENV, Completed, SeqboxRunner, prog, slack
from tests.helpers import own_v2_cgroup as _own_cgroup
from tests.helpers import write_file as _write
from tests.nobody import NOBODY

pytestmark = [needs("cgroup2", "root"), pytest.mark.vm_top]

ROOT = "/sys/fs/cgroup"
CONTROLLERS = "+memory +pids +cpu"


@pytest.fixture
def cgroup(token: str) -> Iterator[str]:
    """A fresh non-root cgroup directly under the root, removed afterwards
    (its processes are the test's own and are gone by then)."""
    _write(f"{ROOT}/cgroup.subtree_control", CONTROLLERS)
    path = f"{ROOT}/sbxtest-{token[:12]}"
    os.mkdir(path)
    yield path
    for dirpath, _, _ in os.walk(path, topdown=False):
        kill = os.path.join(dirpath, "cgroup.kill")
        if os.path.exists(kill):
            _write(kill, "1")
        for _ in range(200):
            try:
                os.rmdir(dirpath)
                break
            except OSError:
                time.sleep(0.01)


def _into(path: str) -> Callable[[], None]:
    """A preexec_fn that moves the new process into the cgroup ``path``."""

    def move() -> None:
        _write(os.path.join(path, "cgroup.procs"), str(os.getpid()))

    return move


def _start_in(sbx: SeqboxRunner, path: str, *args: str) -> subprocess.Popen[bytes]:
    return sbx.start(*args, preexec_fn=_into(path))


def _finish(proc: subprocess.Popen[bytes], timeout: float = 120) -> Completed:
    out, err = proc.communicate(timeout=slack(timeout))
    return Completed([str(a) for a in proc.args], proc.returncode, out, err, 0.0)  # type: ignore[union-attr]


def test_from_the_root_cgroup(sbx: SeqboxRunner) -> None:
    assert _own_cgroup(os.getpid()) == "/", "the VM lane runs the tests in the root cgroup"
    res = sbx.run("--json", "--mem", "128M", "--", *prog("hog", "--chunk", "16"), timeout=120)
    assert res.returncode == 137, res
    doc = res.json()
    assert (doc["backend"], doc["status"]) == ("cgroup2", "memory")
    assert isinstance(doc["peak_mem_bytes"], int)
    assert doc["peak_mem_bytes"] <= (128 << 20) + FORCED_CHARGES


def test_from_a_cgroup_shared_with_another_process(sbx: SeqboxRunner, cgroup: str, procs: Tracker) -> None:
    """The no-internal-processes rule: seqbox cannot enable controllers in a
    cgroup that holds another process, and must not move that process: its
    runs go beside the cgroup, and the other process stays put."""
    other = subprocess.Popen(["sleep", "600"], preexec_fn=_into(cgroup))  # noqa: PLW1509
    procs.track(other.pid)
    try:
        proc = _start_in(sbx, cgroup, "--json", "--", *prog("cgroupinfo"))
        res = _finish(proc)
        assert res.returncode == 0, res
        doc = res.json()
        assert doc["backend"] == "cgroup2"
        info = json.loads(str(doc["stdout"]))
        where = info["dirs"][""]
        assert os.path.basename(os.path.dirname(where)).startswith("seqbox-"), where
        assert not where.startswith(cgroup + "/"), where
        assert _own_cgroup(other.pid) == cgroup[len(ROOT) :], "the other process was moved"
        assert [n for n in os.listdir(cgroup) if os.path.isdir(os.path.join(cgroup, n))] == []
    finally:
        other.kill()
        other.wait()


def test_alone_in_a_non_root_cgroup(sbx: SeqboxRunner, cgroup: str) -> None:
    """Alone in its cgroup, seqbox moves itself into a leaf so the cgroup may
    hold the run's sandbox, and afterwards leaves it as it found it."""
    proc = _start_in(sbx, cgroup, "--json", "--mem", "200M", "--", *prog("cgroupinfo"))
    res = _finish(proc)
    assert res.returncode == 0, res
    info = json.loads(str(res.json()["stdout"]))
    where = info["dirs"][""]
    assert where.startswith(cgroup + "/seqbox-"), where
    assert info["limits"]["memory.max"] == [os.path.dirname(where), str(200 << 20)]
    assert [n for n in os.listdir(cgroup) if os.path.isdir(os.path.join(cgroup, n))] == []
    with open(os.path.join(cgroup, "cgroup.subtree_control")) as f:
        assert f.read().strip() == ""


@pytest.fixture
def delegated(cgroup: str) -> str:
    """``cgroup/launch`` for uid 65534: it owns the subtree (as systemd's
    Delegate=yes gives it), and the memory and pids controllers reach it."""
    _write(os.path.join(cgroup, "cgroup.subtree_control"), "+memory +pids")
    launch = os.path.join(cgroup, "launch")
    os.mkdir(launch)
    for directory in (cgroup, launch):
        for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(os.path.join(directory, name) if name else directory, NOBODY, NOBODY)
    return launch


@needs("cgroup2", "root", "unprivileged")
def test_in_a_subtree_delegated_to_an_unprivileged_user(
    delegated: str, nobody_home: Path, token: str, leak_guard: None
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEQBOX_", "XDG_"))}
    env.update({"HOME": str(nobody_home), "SEQBOX_PROJECT": str(nobody_home), TOKEN_ENV: token})
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            *nobody().seqbox("run", "--json", "--mem", "128M", "--"),
            *nobody().prog("hog", "--chunk", "16")]  # fmt: skip
    proc = subprocess.run(
        argv, cwd=nobody_home, env=env, preexec_fn=_into(delegated),
        capture_output=True, timeout=slack(120), check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    res = Completed(argv, proc.returncode, proc.stdout, proc.stderr, 0.0)
    assert res.returncode == 137, res
    doc = res.json()
    assert (doc["backend"], doc["status"]) == ("cgroup2", "memory"), res
    leftover = [d for d, _, _ in os.walk(delegated) if os.path.basename(d).startswith("seqbox-")]
    assert leftover == [], leftover


@needs("cgroup2", "root")
def test_with_cgroupfs_read_only_falls_back_to_polling(sbx: SeqboxRunner) -> None:
    """As in a default Docker container: /sys/fs/cgroup is mounted read-only."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    inner = sbx.argv(["run", "--json", "--mem", "128M", "--", *prog("hog", "--chunk", "16")])
    res = sbx.run(
        "--no-lock", "--backend", "poll", "--mem", "none", "--",
        "unshare", "-m", "sh", "-c", 'mount -o remount,bind,ro /sys/fs/cgroup && exec "$@"', "sh", *inner,
        timeout=120,
    )  # fmt: skip
    assert res.returncode == 137, res
    doc = res.json()
    assert (doc["backend"], doc["status"]) == ("poll", "memory"), res
    notes = [line for line in res.seqbox_lines() if "poll" in line]
    assert len(notes) == 1, res  # said once, as a note


def test_nested_run_sits_inside_the_parents_sandbox(sbx: SeqboxRunner) -> None:
    inner = sbx.argv(["run", "--mem", "1G", "--", *prog("cgroupinfo")])
    res = sbx.run("--mem", "200M", "--", *inner, timeout=120)
    assert res.returncode == 0, res
    info = json.loads(res.stdout)
    where = info["dirs"][""]
    parts = [p for p in where.split("/") if p.startswith("seqbox-")]
    assert len(parts) == 2, where  # the inner run's node inside the outer run's node
    assert info["limits"]["memory.max"][1] == str(200 << 20), info  # the nearest limit is the parent's


def test_nested_run_cannot_exceed_the_parents_limit(sbx: SeqboxRunner) -> None:
    inner = sbx.argv(["run", "--mem", "1G", "--", *prog("hog", "--chunk", "16")])
    res = sbx.run("--json", "--mem", "128M", "--", *inner, timeout=120)
    assert res.returncode == 137, res
    doc = res.json()
    assert doc["status"] == "memory"
    assert isinstance(doc["peak_mem_bytes"], int)
    assert doc["peak_mem_bytes"] <= (128 << 20) + FORCED_CHARGES
