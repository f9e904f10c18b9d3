"""Admission that learns, with real runs (section 3b): the lock's parent
cgroup (made by the first run, gone after the last, also after a SIGKILLed
holder), a run that outgrows its reservation frozen rather than killed and
finishing after it thaws, a frozen tree ended cleanly by ``--timeout``,
``seqbox kill`` and Ctrl-C, ``--reserve`` above ``--mem`` refused, and the
Python API's agents sharing one learned reservation through ``key=``.

A 400 MiB budget: a holder B fills 100 MiB and waits for a gate file; a run A
that reserved 100 MiB grows to 330 MiB in small steps. Past 90 % of the budget
A, the run furthest over its reservation, freezes (the lock's parent cgroup
would otherwise stop it at 400 MiB); when B leaves, A thaws and finishes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import seqbox
from seqbox.backends.base import is_lock_slice, lock_dir_parts
from seqbox.backends.cgroup import leftovers
from seqbox.project import project_key
from seqbox.suspend import frozen_runs
from tests.capabilities import needs
from tests.helpers import SeqboxRunner, alive, read_pids, seqbox_cgroups, slack

MIB = 1 << 20
BUDGET = ["--budget", "400M", "--mem", "400M"]

#: write READY.pid (its pid), grow to TOTAL MiB in STEP MiB steps (PAUSE s
#: apart), write READY, then wait for GATE ("-": none) and hold HOLD seconds
GROW = """
import os, sys, time
total, step, pause, ready, gate, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), *sys.argv[4:7]
with open(ready + ".pid", "w") as f:
    f.write(f"{os.getpid()}\\n")
blocks = []
while len(blocks) * step < total:
    block = bytearray(step << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    blocks.append(block)
    time.sleep(pause)
with open(ready, "w") as f:
    f.write(f"{os.getpid()}\\n")
while gate != "-" and not os.path.exists(gate):
    time.sleep(0.02)
time.sleep(float(hold))
"""


def grow(
    tmp_path: Path, total: int, step: int, pause: float, ready: Path, gate: Path | None, hold: float
) -> list[str]:
    script = tmp_path / "grow.py"
    script.write_text(GROW)
    gate_arg = str(gate) if gate is not None else "-"
    return [
        "--",
        sys.executable,
        str(script),
        str(total),
        str(step),
        str(pause),
        str(ready),
        gate_arg,
        str(hold),
    ]


def wait_until(what: str, check: object, timeout: float = 30.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + slack(timeout)
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def key_of(sbx: SeqboxRunner) -> str:
    return project_key(os.path.realpath(sbx.project))


def runs_in(parent: str) -> list[str]:
    """The runs' cgroups in a lock's parent: directly in it, or (in a lock's
    systemd slice, the laptop path) in the delegated scopes in it."""
    found = []
    for dirpath, dirnames, _ in os.walk(parent):
        found += [os.path.join(dirpath, name) for name in dirnames if leftovers.parse_name(name) is not None]
        dirnames[:] = [name for name in dirnames if name.endswith(".scope")]
    return found


def parents(sbx: SeqboxRunner) -> list[str]:
    """The lock parents of this test's project (seqbox/ceiling.py). A lock's
    systemd slice (the laptop path) stays after its last run, empty: it
    counts while a run is in it."""
    key = key_of(sbx)
    found = []
    for path in seqbox_cgroups():
        parts = lock_dir_parts(os.path.basename(path))
        if parts is not None and parts[1] == key and (not is_lock_slice(path) or runs_in(path)):
            found.append(path)
    return sorted(found)


def summary(proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, object]:
    out, err = proc.communicate(timeout=slack(timeout))
    assert out, err
    doc: dict[str, object] = json.loads(out)
    doc["_stderr"] = err.decode()
    return doc


class Scene:
    """B holds 100 MiB until its gate opens; A outgrows its reservation and freezes."""

    def __init__(self, sbx: SeqboxRunner, backend: str, tmp_path: Path, *a_options: str) -> None:
        self.sbx, self.tmp = sbx, tmp_path
        self.gate = tmp_path / "gate"
        ready_b, self.ready_a = tmp_path / "ready-b", tmp_path / "ready-a"
        b_command = grow(tmp_path, 100, 100, 0, ready_b, self.gate, 0)
        self.b = sbx.start(*BUDGET, "--reserve", "120M", "--json", *b_command, backend=backend)
        self.b_pid = read_pids(ready_b, timeout=slack(30))["0"]
        self.a = sbx.start(*BUDGET, "--reserve", "100M", "--json", *a_options,
                           *grow(tmp_path, 330, 10, 0.02, self.ready_a, None, 0.2 if not a_options else 300),
                           backend=backend)  # fmt: skip
        wait_until("A to freeze", lambda: frozen_runs(key_of(sbx), "default") or self.a.poll() is not None)
        assert self.a.poll() is None, self.a.communicate()

    def open_gate(self) -> None:
        self.gate.touch()


def test_budget_a_run_over_its_reservation_freezes_then_finishes(
    sbx: SeqboxRunner, backend: str, tmp_path: Path
) -> None:
    scene = Scene(sbx, backend, tmp_path)
    if backend != "poll":
        assert len(parents(sbx)) == 1  # both runs live in the lock's parent cgroup
    status = sbx.cli("status").stdout
    assert "reserves 100.0 MiB (given), frozen (budget)" in status, status
    assert (
        "reserves 120.0 MiB (given), 2 processes" in status
        or "reserves 120.0 MiB (given), 1 process" in status
    )
    running = json.loads(sbx.cli("status", "--json").stdout)["locks"][0]["running"]
    assert sorted(run["frozen"] for run in running) == [False, True]
    time.sleep(0.3)
    scene.open_gate()
    a, b = summary(scene.a), summary(scene.b)
    assert (a["status"], b["status"]) == ("ok", "ok"), (a, b)
    assert isinstance(a["frozen_s"], float), a
    assert a["frozen_s"] >= 0.2, a
    assert b["frozen_s"] == 0.0
    assert (a["reserved_bytes"], b["reserved_bytes"]) == (100 * MIB, 120 * MIB)
    events = [json.loads(line) for line in Path(str(a["log"])).read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.index("freeze") < kinds.index("thaw"), kinds
    start = events[0]
    assert (start["reserved"], start["reserved_how"]) == (100 * MIB, "given")
    assert parents(sbx) == []  # the last run removed the lock's parent


def test_budget_runs_within_their_reservations_are_not_frozen(
    sbx: SeqboxRunner, backend: str, tmp_path: Path
) -> None:
    """B and C hold 100 MiB each (~103 MiB with their interpreter; reserved
    108) while A outgrows its 100 (slowly: it freezes within ~10 MiB of the
    line on every backend): A freezes, and the lock's total stays above 90 %
    of the budget. B and C, within what they reserved, go on (what they may
    still take fits): before, one of them froze too (the rule chose among
    every runner, and froze until one was left)."""
    gate = tmp_path / "gate"
    holders = []
    for name in ("b", "c"):
        ready = tmp_path / f"ready-{name}"
        command = grow(tmp_path, 100, 100, 0, ready, gate, 0)
        holders.append(sbx.start(*BUDGET, "--reserve", "108M", "--json", *command, backend=backend))
        read_pids(ready, timeout=slack(30))
    ready_a = tmp_path / "ready-a"
    a = sbx.start(*BUDGET, "--reserve", "100M", "--json", *grow(tmp_path, 250, 10, 0.2, ready_a, None, 0),
                  backend=backend)  # fmt: skip
    wait_until("A to freeze", lambda: frozen_runs(key_of(sbx), "default") or a.poll() is not None)
    assert a.poll() is None, a.communicate()
    time.sleep(1.0)  # ten samples of each holder, the total above 90 % all along
    assert len(frozen_runs(key_of(sbx), "default")) == 1
    gate.touch()
    docs = [summary(proc) for proc in (a, *holders)]
    assert [doc["status"] for doc in docs] == ["ok"] * 3, docs
    frozen = docs[0]["frozen_s"]
    assert isinstance(frozen, float), docs[0]
    assert frozen > 0.5, docs[0]
    assert [doc["frozen_s"] for doc in docs[1:]] == [0.0, 0.0], docs


def test_budget_a_run_that_may_still_grow_freezes_when_a_frozen_run_took_its_room(
    sbx: SeqboxRunner, backend: str, tmp_path: Path
) -> None:
    """B holds 80 MiB (reserved 100), A outgrows its 60 to 160 MiB, then C
    (reserved 170) fills 160 MiB slowly. Past 90 % A, over its reservation,
    freezes; C is within its reservation but would take the lock past its
    budget (the ceiling kills on cgroups): C freezes too, B goes on. When B
    leaves, A thaws, then C, and all finish."""
    gate = tmp_path / "gate"
    ready_b, ready_a, ready_c = (tmp_path / f"ready-{name}" for name in "bac")
    b = sbx.start(*BUDGET, "--reserve", "100M", "--json", *grow(tmp_path, 80, 80, 0, ready_b, gate, 0),
                  backend=backend)  # fmt: skip
    read_pids(ready_b, timeout=slack(30))
    a = sbx.start(*BUDGET, "--reserve", "60M", "--json", *grow(tmp_path, 160, 10, 0.02, ready_a, gate, 0),
                  backend=backend)  # fmt: skip
    read_pids(ready_a, timeout=slack(30))
    c = sbx.start(*BUDGET, "--reserve", "170M", "--json", *grow(tmp_path, 160, 10, 0.2, ready_c, None, 0),
                  backend=backend)  # fmt: skip
    wait_until(
        "A and C to freeze", lambda: len(frozen_runs(key_of(sbx), "default")) == 2 or c.poll() is not None
    )
    assert c.poll() is None, c.communicate()
    gate.touch()
    docs = {name: summary(proc) for name, proc in (("a", a), ("b", b), ("c", c))}
    assert [doc["status"] for doc in docs.values()] == ["ok"] * 3, docs
    assert docs["b"]["frozen_s"] == 0.0, docs
    for name in "ac":
        frozen = docs[name]["frozen_s"]
        assert isinstance(frozen, float), docs
        assert frozen > 0.0, docs


@pytest.mark.parametrize("how", ["timeout", "kill", pytest.param("interrupt", marks=needs("sigint"))])
def test_budget_a_frozen_tree_is_thawed_and_ended(
    sbx: SeqboxRunner, backend: str, tmp_path: Path, how: str
) -> None:
    """--timeout (frozen time does not count), seqbox kill and Ctrl-C end a
    frozen tree cleanly: nothing of it is left (the leak guard checks)."""
    # A must grow and freeze before its timeout: 3 s here, stretched where starting is slow (the VM)
    timeout = max(3, round(slack(3)))
    scene = Scene(sbx, backend, tmp_path, *(["--timeout", str(timeout)] if how == "timeout" else []))
    a_pid = read_pids(Path(f"{scene.ready_a}.pid"))["0"]
    if how == "timeout":
        time.sleep(2.5)  # frozen: not counted
        assert scene.a.poll() is None
        scene.open_gate()
        a = summary(scene.a)
        assert (a["status"], a["exit_code"]) == ("timeout", 124), a
        assert isinstance(a["frozen_s"], float), a
        assert isinstance(a["wall_s"], float), a
        assert a["frozen_s"] >= 2.0, a
        assert a["wall_s"] >= timeout + a["frozen_s"] - 0.5, a
    elif how == "kill":
        done = sbx.cli("kill")
        assert done.returncode == 0, done
        a = summary(scene.a)
        assert a["status"] == "signal", a
    else:
        scene.a.send_signal(signal.SIGINT)
        a = summary(scene.a)
        assert (a["status"], a["exit_code"]) == ("signal", 130), a
    assert alive([a_pid]) == []
    scene.open_gate()
    scene.b.communicate(timeout=slack(60))
    wait_until("the lock's parent to go", lambda: parents(sbx) == [])


def test_budget_parent_cgroup_lives_while_the_lock_is_held(
    sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    holder = sbx.start(*BUDGET, "--", "sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.01; done', "sh", str(gate),
                       backend=cgroup_backend)  # fmt: skip
    wait_until("the lock's parent", lambda: parents(sbx) != [])
    (parent,) = parents(sbx)
    limit = "memory.max" if cgroup_backend == "cgroup2" else "memory.limit_in_bytes"
    assert int(Path(parent, limit).read_text()) == 400 * MIB
    assert runs_in(parent)
    gate.touch()
    assert holder.wait(timeout=slack(30)) == 0
    assert parents(sbx) == []


def test_budget_parent_cgroup_goes_after_a_sigkilled_frozen_holder(
    sbx: SeqboxRunner, backend: str, tmp_path: Path
) -> None:
    """A's supervisor dies while A is frozen: the next run of the project
    thaws and ends A's tree, and the lock's parent goes with the last run."""
    scene = Scene(sbx, backend, tmp_path, "--timeout", "60")
    a_pid = read_pids(Path(f"{scene.ready_a}.pid"))["0"]
    scene.a.kill()
    scene.a.wait(timeout=slack(10))
    assert alive([a_pid]) == [a_pid]  # frozen, in its cgroup (or stopped), its supervisor gone
    scene.open_gate()
    assert scene.b.wait(timeout=slack(60)) == 0
    done = sbx.run(*BUDGET, "--", "true", backend=backend)
    assert done.returncode == 0, done
    wait_until("A's tree to end", lambda: alive([a_pid]) == [], timeout=10)
    assert parents(sbx) == []


def test_budget_clean_removes_the_parent_a_sigkilled_holder_left(
    sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    holder = sbx.start(*BUDGET, "--", "sh", "-c", 'echo $$ > "$1"; exec sleep 300', "sh", str(pidfile),
                       backend=cgroup_backend)  # fmt: skip
    pid = read_pids(pidfile)["0"]
    holder.kill()
    holder.wait(timeout=slack(10))
    (parent,) = parents(sbx)
    done = sbx.cli("clean")
    assert done.returncode == 0, done
    if not is_lock_slice(parent):  # a lock's systemd slice is systemd's: it stays, empty
        assert "removed the lock's cgroup" in done.stdout, done
    assert alive([pid]) == []
    assert parents(sbx) == []


def test_budget_a_kill_at_the_lock_ceiling_names_the_budget(
    sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path
) -> None:
    """B (250 MiB, reserved 50) freezes as the run furthest over its reservation;
    A, the last one running, outgrows the rest: the lock's parent cgroup stops
    the pair at the budget. The run the kernel kills is a memory kill that
    names the lock's budget."""
    gate, ready = tmp_path / "gate", tmp_path / "ready-b"
    options = ["--budget", "300M", "--mem", "300M", "--reserve", "50M", "--json"]
    b = sbx.start(*options, *grow(tmp_path, 250, 250, 0, ready, gate, 0), backend=cgroup_backend)
    read_pids(ready, timeout=slack(30))
    a = sbx.start(
        *options, *grow(tmp_path, 120, 20, 0.05, tmp_path / "ready-a", None, 0.5), backend=cgroup_backend
    )
    first = summary(a)
    gate.touch()
    second = summary(b)
    killed = [doc for doc in (first, second) if doc["status"] == "memory"]
    assert killed, (first, second)
    assert 'seqbox: killed: the budget 300.0 MiB of lock "default" was reached' in str(killed[0]["_stderr"])
    assert killed[0]["exit_code"] == 137
    assert parents(sbx) == []


def test_budget_reserve_above_mem_is_refused(sbx: SeqboxRunner) -> None:
    done = sbx.run("--budget", "1G", "--mem", "100M", "--reserve", "200M", "--", "true")
    assert done.returncode == 125
    assert done.stderr.startswith("seqbox: --reserve 200.0 MiB is above --mem 100.0 MiB"), done
    assert done.stderr.count("\n") == 1


def test_budget_api_agents_share_a_learned_reservation(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """Three runs of key "agent" teach a small reservation: the next agents,
    each with mem 200M under a 300M budget, then run side by side (with their
    --mem they would run one at a time)."""
    record = tmp_path / "record"
    agent = [
        "sh",
        "-c",
        'echo "start $(date +%s%N)" >> "$1"; sleep 1; echo "end $(date +%s%N)" >> "$1"',
        "sh",
    ]
    options: dict[str, object] = {
        "mem": "200M",
        "budget": "300M",
        "lock": "agents",
        "key": "agent",
        "cwd": str(sbx.project),
    }
    for _ in range(3):
        assert seqbox.run([*agent, str(tmp_path / "warmup")], **options).status == "ok"  # type: ignore[arg-type]

    async def agents() -> list[seqbox.Result]:
        return await asyncio.gather(*(seqbox.run_async([*agent, str(record)], **options) for _ in range(4)))  # type: ignore[arg-type]

    results = asyncio.run(agents())
    assert [r.status for r in results] == ["ok"] * 4, results
    assert all(r.reserved_bytes is not None and r.reserved_bytes < 200 * MIB for r in results), results
    events = sorted(
        (int(ns), kind) for kind, ns in (line.split() for line in record.read_text().splitlines())
    )
    running = most = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    assert most >= 3, events
