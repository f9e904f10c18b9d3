"""seqbox inside a container on a pure cgroup v2 machine: a cgroup standing for
the pod (``memory.max`` 256 MiB, ``pids.max``), entered with a private cgroup
namespace and /sys/fs/cgroup mounted again, as container runtimes do; with or
without another process (the container's init) beside seqbox.

* beside the container's init, unasked, seqbox cannot use cgroup2 (the
  container's cgroup is not the machine's root, so the no-internal-processes
  rule holds): ``doctor`` says so with the fix, exit 1, and ``run`` polls;
* with ``SEQBOX_CGROUP_TAKEOVER=1`` the first run moves the container's
  processes into ``init`` (as docker-in-docker does) and uses cgroup2; later
  runs do too, without the variable;
* as the container's entrypoint (alone), seqbox uses cgroup2 and leaves the
  cgroup as it found it;
* a run stopped by the container's limit is status ``memory`` and says so.

These run in the cgroup v2 VM lane (scripts/vm-test); elsewhere they skip.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.capabilities import needs
from tests.conftest import Tracker
from tests.helpers import FORCED_CHARGES, SEQBOX_PIDS, Completed, SeqboxRunner, prog, slack
from tests.helpers import own_v2_cgroup as _own_cgroup
from tests.helpers import write_file as _write

pytestmark = [needs("cgroup2", "root"), pytest.mark.vm_top]

ROOT = "/sys/fs/cgroup"
POD_MEMORY = 256 << 20
TAKEOVER = {"SEQBOX_CGROUP_TAKEOVER": "1"}
#: what a container runtime does for a private cgroup namespace: /sys/fs/cgroup
#: shows the container's cgroup as its top
ENTER = 'umount -l /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"'


def _into(path: str) -> Callable[[], None]:
    def move() -> None:
        _write(os.path.join(path, "cgroup.procs"), str(os.getpid()))

    return move


def _children(path: str) -> list[str]:
    return sorted(name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name)))


@pytest.fixture
def pod(token: str) -> Iterator[str]:
    """The pod's cgroup, with a memory and a pids limit; emptied and removed afterwards."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    _write(f"{ROOT}/cgroup.subtree_control", "+memory +pids")
    path = f"{ROOT}/sbxpod-{token[:12]}"
    os.mkdir(path)
    _write(os.path.join(path, "memory.max"), str(POD_MEMORY))
    _write(os.path.join(path, "memory.swap.max"), "0")
    _write(os.path.join(path, "pids.max"), "512")
    yield path
    _write(os.path.join(path, "cgroup.kill"), "1")
    for dirpath, _, _ in os.walk(path, topdown=False):
        for _ in range(500):
            try:
                os.rmdir(dirpath)
                break
            except OSError:
                time.sleep(0.01)


@pytest.fixture
def init(pod: str, procs: Tracker) -> int:
    """The container's init (a stand-in): the first process in the pod's cgroup,
    in the container's namespaces (a private cgroup namespace rooted at the pod,
    cgroup2 mounted afresh)."""
    proc = subprocess.Popen(["unshare", "--cgroup", "--mount", "sh", "-c", ENTER, "sh", "sleep", "600"],
                            preexec_fn=_into(pod))  # noqa: PLW1509  # fmt: skip
    procs.track(proc.pid)
    deadline = time.monotonic() + slack(10)
    while not os.readlink(f"/proc/{proc.pid}/exe").endswith("sleep"):  # in the namespaces by then
        assert time.monotonic() < deadline, "the stand-in init did not start"
        time.sleep(0.01)
    return proc.pid


def _exec_into(pod: str, init: int) -> Callable[[], None]:
    """What ``docker exec`` does with cgroups (runc, crun): join the container's
    cgroup, or, when that has controllers enabled (EBUSY), the init's."""
    init_cgroup = ROOT + _own_cgroup(init)

    def move() -> None:
        try:
            _write(os.path.join(pod, "cgroup.procs"), str(os.getpid()))
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            _write(os.path.join(init_cgroup, "cgroup.procs"), str(os.getpid()))

    return move


def in_container(
    sbx: SeqboxRunner,
    pod: str,
    *args: str,
    init: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> Completed:
    """``seqbox ARGS`` in the pod: entered as ``docker exec`` does when the
    container has an ``init`` (its cgroup, then its namespaces), else as the
    container's entrypoint (a private cgroup namespace of its own)."""
    if init is None:
        argv = ["unshare", "--cgroup", "--mount", "sh", "-c", ENTER, "sh", *sbx.argv(list(args))]
        into = _into(pod)
    else:
        argv = ["nsenter", "-t", str(init), "--cgroup", "--mount", *sbx.argv(list(args))]
        into = _exec_into(pod, init)
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=sbx.project,
        env=sbx.env(env),
        preexec_fn=into,  # noqa: PLW1509 - the test process forks no threads
    )
    sbx.started.append(proc)
    SEQBOX_PIDS.setdefault(sbx.token, set()).add(proc.pid)
    out, err = proc.communicate(timeout=slack(timeout))
    return Completed(argv, proc.returncode, out, err, time.monotonic() - start)


def _cgroup2_probe(doc: dict[str, object]) -> dict[str, object]:
    backends = doc["backends"]
    assert isinstance(backends, list)
    return next(b for b in backends if b["name"] == "cgroup2")


def test_beside_the_init_doctor_and_run_both_fall_back(sbx: SeqboxRunner, pod: str, init: int) -> None:
    """Unasked, seqbox moves no other process: no cgroup2 here, and doctor says
    what run will do (before: doctor said cgroup2, run fell back on EBUSY)."""
    doctor = in_container(sbx, pod, "doctor", "--json", init=init)
    assert doctor.returncode == 1, doctor
    facts = json.loads(doctor.stdout)
    assert facts["backend"] == "poll", facts
    assert "holds other processes" in str(_cgroup2_probe(facts)["reason"]), facts
    assert "SEQBOX_CGROUP_TAKEOVER=1" in str(facts["hint"]), facts

    text = in_container(sbx, pod, "doctor", init=init)
    assert "SEQBOX_CGROUP_TAKEOVER=1" in text.stdout, text

    res = in_container(
        sbx, pod, "run", "--json", "--mem", "128M", "--", *prog("hog", "--chunk", "16"), init=init
    )
    assert res.returncode == 137, res
    doc = res.json()
    assert (doc["backend"], doc["status"]) == ("poll", "memory"), res
    notes = [line for line in res.seqbox_lines() if "poll" in line]
    assert len(notes) == 1, res  # said once; doctor (above) says why
    assert _own_cgroup(init) == pod[len(ROOT) :], "the init was moved"
    assert _children(pod) == []


def test_takeover_when_asked(sbx: SeqboxRunner, pod: str, init: int) -> None:
    doctor = in_container(sbx, pod, "doctor", "--json", init=init, env=TAKEOVER)
    assert doctor.returncode == 0, doctor
    facts = json.loads(doctor.stdout)
    assert facts["backend"] == "cgroup2", facts
    assert _cgroup2_probe(facts)["details"]["placement"] == "takeover", facts  # type: ignore[index]

    res = in_container(
        sbx,
        pod,
        "run",
        "--json",
        "--mem",
        "128M",
        "--",
        *prog("hog", "--chunk", "16"),
        init=init,
        env=TAKEOVER,
    )
    assert res.returncode == 137, res
    doc = res.json()
    assert (doc["backend"], doc["status"]) == ("cgroup2", "memory"), res
    assert isinstance(doc["peak_mem_bytes"], int)
    assert doc["peak_mem_bytes"] <= (128 << 20) + FORCED_CHARGES
    assert _own_cgroup(init) == pod[len(ROOT) :] + "/init", "the init was not moved into the leaf"
    assert _children(pod) == ["init"]

    # Taken over once, it stays so (as docker-in-docker leaves it): later runs
    # go beside init, without the variable, and doctor agrees.
    doctor = in_container(sbx, pod, "doctor", "--json", init=init)
    assert doctor.returncode == 0, doctor
    assert _cgroup2_probe(json.loads(doctor.stdout))["details"]["placement"] == "sibling"  # type: ignore[index]
    res = in_container(sbx, pod, "run", "--json", "--", *prog("cgroupinfo"), init=init)
    assert res.returncode == 0, res
    doc = res.json()
    assert doc["backend"] == "cgroup2", res
    where = json.loads(str(doc["stdout"]))["dirs"][""]
    assert os.path.basename(os.path.dirname(where)).startswith("seqbox-"), where  # seen from inside
    assert _children(pod) == ["init"]


def test_as_the_entrypoint_alone(sbx: SeqboxRunner, pod: str) -> None:
    """seqbox alone in the container's cgroup moves itself into a leaf, and
    leaves the cgroup as it found it."""
    res = in_container(sbx, pod, "run", "--json", "--mem", "128M", "--", *prog("hog", "--chunk", "16"))
    assert res.returncode == 137, res
    assert (res.json()["backend"], res.json()["status"]) == ("cgroup2", "memory"), res
    assert any("memory limit 128.0 MiB exceeded" in line for line in res.seqbox_lines()), res
    assert _children(pod) == []
    with open(os.path.join(pod, "cgroup.subtree_control")) as f:
        assert f.read().strip() == ""


def test_the_containers_limit_is_named(sbx: SeqboxRunner, pod: str) -> None:
    """--mem 1G under a pod of 256 MiB: the pod's limit stops the command; the
    kernel's counters (the pod's memory.events.local) say whose limit it was."""
    res = in_container(sbx, pod, "run", "--json", "--mem", "1G", "--", *prog("hog", "--chunk", "16"))
    assert res.returncode == 137, res
    doc = res.json()
    assert (doc["backend"], doc["status"]) == ("cgroup2", "memory"), res
    lines = [line for line in res.seqbox_lines() if "killed" in line]
    assert len(lines) == 1, res
    assert lines[0].startswith("seqbox: killed: the container's memory limit 256.0 MiB was reached"), res


@pytest.mark.parametrize("mem", [["--mem", "4G"], []], ids=["mem-4G", "default-mem"])
def test_a_polled_run_beside_the_init_names_the_containers_limit(
    sbx: SeqboxRunner, pod: str, init: int, mem: list[str]
) -> None:
    """Beside the container's init, unasked, seqbox polls; the pod's 256 MiB
    stops the command (the kernel's OOM killer, inside the pod's cgroup). Before:
    status ``signal``, exit 137, not a word."""
    res = in_container(sbx, pod, "run", "--json", *mem, "--", *prog("hog", "--chunk", "16"), init=init)
    assert res.returncode == 137, res
    doc = res.json()
    assert (doc["backend"], doc["status"], doc["exit_code"]) == ("poll", "memory", 137), res
    lines = [line for line in res.seqbox_lines() if "killed" in line]
    assert len(lines) == 1, res
    assert lines[0].startswith("seqbox: killed: the container's memory limit 256.0 MiB was reached"), res
