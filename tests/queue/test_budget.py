"""Memory admission with real runs (``--budget``): runs of a lock start only
while their reservations (``--mem``) fit in the budget, first come first
served, a run without a limit runs alone, one that can never fit fails at
once, a SIGKILLed holder frees its reservation, nested runs reserve nothing,
and the Python API's ``asyncio.gather`` runs as many as fit.

Each command records when it started and ended (and what it reserved); the
reservations of the commands running at any moment must stay within the budget.
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
from typing import TYPE_CHECKING

import pytest

import seqbox
from seqbox.errors import StateError
from seqbox.project import project_key
from seqbox.queue import LockDir, view
from tests.helpers import PROG, SeqboxRunner, slack

if TYPE_CHECKING:
    from seqbox.records import Entry

MIB = 1 << 20
BUDGET = "300M"
#: records "start TAG NS" and "end TAG NS" around an allocator holding MIB for SECONDS
JOB = (
    'echo "start $2 $(date +%s%N)" >> "$1"; '
    f'{sys.executable} {PROG} hog --total "$3" --chunk 16 --hold "$4"; '
    'echo "end $2 $(date +%s%N)" >> "$1"'
)


def job(record: Path, tag: str, mib: int = 40, hold: float = 0.6) -> list[str]:
    return ["--", "sh", "-c", JOB, "sh", str(record), tag, str(mib), str(hold)]


def intervals(record: Path) -> dict[str, tuple[int, int]]:
    """{tag: (start ns, end ns)} of every command that ran to its end."""
    starts: dict[str, int] = {}
    spans: dict[str, tuple[int, int]] = {}
    for line in record.read_text().splitlines():
        kind, tag, ns = line.split()
        if kind == "start":
            starts[tag] = int(ns)
        else:
            spans[tag] = (starts[tag], int(ns))
    return spans


def peak_reserved(spans: dict[str, tuple[int, int]], reserved: dict[str, int]) -> tuple[int, int]:
    """(the largest sum of reservations running at once, the most runs at once)."""
    events = sorted((t, kind, tag) for tag, (a, b) in spans.items() for t, kind in ((a, 1), (b, 0)))
    total = count = peak = most = 0
    for _, kind, tag in events:  # at equal times an end (0) sorts before a start (1)
        sign = 1 if kind else -1
        total += sign * reserved[tag]
        count += sign
        peak, most = max(peak, total), max(most, count)
    return peak, most


def overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def lock_view(project: Path, lock: str = "default") -> tuple[list[Entry], list[Entry]]:
    try:
        lockdir = LockDir(project_key(os.path.realpath(project)), lock, create=False)
    except StateError:
        return [], []
    try:
        queue = view(lockdir)
        return queue.holders, queue.waiters
    finally:
        lockdir.close()


def wait_until(what: str, check: object, timeout: float = 20.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + slack(timeout)
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def finish(*procs: subprocess.Popen[bytes], timeout: float = 60) -> list[int]:
    for proc in procs:
        proc.wait(timeout=slack(timeout))
    return [proc.returncode for proc in procs]


@pytest.mark.slow
def test_runs_never_reserve_more_than_the_budget(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    """Seven allocators of 100 or 200 MiB under a 300 MiB budget: at no moment
    do the running ones reserve more than 300 MiB, yet more than one runs."""
    record = tmp_path / "record"
    sizes = {"a": 100, "b": 200, "c": 100, "d": 100, "e": 200, "f": 100, "g": 100}
    procs = [
        sbx.start("--budget", BUDGET, "--mem", f"{mib}M", *job(record, tag), backend=backend)
        for tag, mib in sizes.items()
    ]
    assert finish(*procs) == [0] * len(procs), [p.stderr.read() for p in procs if p.stderr]
    spans = intervals(record)
    assert sorted(spans) == sorted(sizes)
    peak, most = peak_reserved(spans, {tag: mib * MIB for tag, mib in sizes.items()})
    assert peak <= 300 * MIB
    assert most >= 2  # admission let runs share the budget


def test_a_big_run_at_the_head_is_not_overtaken(sbx: SeqboxRunner, tmp_path: Path) -> None:
    record, gate = tmp_path / "record", tmp_path / "gate"
    first = sbx.start(
        "--budget", BUDGET, "--mem", "200M", "--", "sh", "-c",
        'echo "start first $(date +%s%N)" >> "$1"; while [ ! -e "$2" ]; do sleep 0.01; done; '
        'echo "end first $(date +%s%N)" >> "$1"', "sh", str(record), str(gate),
    )  # fmt: skip
    wait_until("the first run to hold", lambda: len(lock_view(sbx.project)[0]) == 1)
    big = sbx.start("--budget", BUDGET, "--mem", "300M", *job(record, "big"))
    wait_until(
        "the big run to wait for memory", lambda: any(w.get("waiting_for") for w in lock_view(sbx.project)[1])
    )
    small = sbx.start("--budget", BUDGET, "--mem", "100M", *job(record, "small"))  # would fit now
    wait_until("the small run to queue", lambda: len(lock_view(sbx.project)[1]) == 2)
    time.sleep(0.3)
    assert not (tmp_path / "record").read_text().count("small")  # it waits behind the big one
    gate.touch()
    assert finish(first, big, small) == [0, 0, 0]
    spans = intervals(record)
    assert spans["first"][1] < spans["big"][0] < spans["big"][1] < spans["small"][0]


def test_a_run_without_limit_runs_alone(sbx: SeqboxRunner, tmp_path: Path) -> None:
    record = tmp_path / "record"
    procs = [sbx.start("--budget", BUDGET, "--mem", "100M", *job(record, "before"))]
    wait_until("the first run to hold", lambda: len(lock_view(sbx.project)[0]) == 1)
    procs.append(sbx.start("--budget", BUDGET, "--mem", "0", *job(record, "unlimited")))
    wait_until("the unlimited run to queue", lambda: len(lock_view(sbx.project)[1]) == 1)
    procs.append(sbx.start("--budget", BUDGET, "--mem", "100M", *job(record, "after")))
    assert finish(*procs) == [0, 0, 0]
    spans = intervals(record)
    assert not overlap(spans["unlimited"], spans["before"])
    assert not overlap(spans["unlimited"], spans["after"])


def test_a_run_larger_than_the_budget_fails_at_once(sbx: SeqboxRunner) -> None:
    res = sbx.run("--budget", BUDGET, "--mem", "400M", "--", "true", timeout=10)
    assert res.returncode == 125, res
    assert res.one_line() == (
        "seqbox: --mem 400.0 MiB can never fit in --budget 300.0 MiB (lower --mem or raise --budget)"
    )
    res = sbx.run("--budget", "auto", "--mem", "100T", "--", "true", timeout=10)
    assert res.returncode == 125, res
    assert "can never fit in --budget auto" in res.one_line()


def test_budget_from_the_config_and_the_environment(sbx: SeqboxRunner) -> None:
    (sbx.project / "seqbox.toml").write_text('budget = "300M"\n')
    res = sbx.run("--mem", "400M", "--", "true", timeout=10)
    assert res.returncode == 125, res
    assert "can never fit in --budget 300.0 MiB" in res.one_line()
    res = sbx.run("--mem", "400M", "--", "true", timeout=10, env={"SEQBOX_BUDGET": "500M"})
    assert res.returncode == 0, res


def test_slots_still_cap_the_count(sbx: SeqboxRunner, tmp_path: Path) -> None:
    record = tmp_path / "record"
    procs = [
        sbx.start("--budget", BUDGET, "--slots", "1", "--mem", "100M", *job(record, tag, hold=0.3))
        for tag in "abc"
    ]
    assert finish(*procs) == [0, 0, 0]
    assert peak_reserved(intervals(record), dict.fromkeys("abc", 100 * MIB))[1] == 1


def test_budget_and_no_lock_cannot_be_used_together(sbx: SeqboxRunner) -> None:
    res = sbx.run("--no-lock", "--budget", BUDGET, "--", "true", timeout=10)
    assert res.returncode == 125, res
    assert res.one_line() == "seqbox: --budget and --no-lock cannot be used together"


def test_a_bad_budget_is_refused(sbx: SeqboxRunner) -> None:
    res = sbx.run("--budget", "lots", "--", "true", timeout=10)
    assert res.returncode == 125, res
    assert res.one_line() == "seqbox: --budget: expected a size like 8G, or auto, got 'lots'"


def test_a_sigkilled_holder_frees_its_reservation(sbx: SeqboxRunner, tmp_path: Path) -> None:
    record = tmp_path / "record"
    holder = sbx.start("--budget", BUDGET, "--mem", "300M", "--", "sleep", "60")
    wait_until("the holder to run", lambda: len(lock_view(sbx.project)[0]) == 1)
    waiter = sbx.start("--budget", BUDGET, "--mem", "100M", *job(record, "waiter", hold=0))
    wait_until(
        "the waiter to wait for memory", lambda: any(w.get("waiting_for") for w in lock_view(sbx.project)[1])
    )
    killed = time.monotonic()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert finish(waiter) == [0]
    assert time.monotonic() - killed < slack(5)


def test_nested_runs_reserve_nothing(sbx: SeqboxRunner) -> None:
    """The outer run reserves the whole budget; a nested run with a budget
    starts at once inside it instead of waiting for memory forever."""
    inner = f"{sys.executable} -m seqbox run --budget {BUDGET} --mem 100M -- echo nested-ran"
    res = sbx.run("--budget", BUDGET, "--mem", "300M", "--", "sh", "-c", inner, timeout=30)
    assert res.returncode == 0, res
    assert "nested-ran" in res.stdout


def test_waiting_line_and_status_show_memory(sbx: SeqboxRunner, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wait_gate = 'while [ ! -e "$1" ]; do sleep 0.01; done'
    holder = sbx.start("--budget", BUDGET, "--mem", "200M", "--", "sh", "-c", wait_gate, "sh", str(gate))
    wait_until("the holder to run", lambda: len(lock_view(sbx.project)[0]) == 1)
    waiter = sbx.start("--budget", BUDGET, "--mem", "150M", "--json", "--", "true")
    wait_until(
        "the waiter to wait for memory", lambda: any(w.get("waiting_for") for w in lock_view(sbx.project)[1])
    )
    text = sbx.cli("status").stdout
    assert "budget 300.0 MiB, 200.0 MiB reserved" in text, text
    assert "reserves 200.0 MiB" in text, text
    assert (
        'waiting for memory on lock "default": needs 150.0 MiB (--mem), 100.0 MiB of 300.0 MiB free' in text
    ), text
    data = sbx.cli("status", "--json").stdout
    assert '"budget_bytes": 314572800, "reserved_bytes": 209715200' in data, data
    time.sleep(0.5)
    gate.touch()
    assert finish(holder, waiter) == [0, 0]
    assert waiter.stdout is not None
    assert json.loads(waiter.stdout.read())["lock_wait_s"] >= 0.5  # the wait for memory counts
    assert waiter.stderr is not None
    assert (
        'seqbox: waiting for memory on lock "default": needs 150.0 MiB (--mem), 100.0 MiB of 300.0 MiB free'
        in (waiter.stderr.read().decode())
    )


def test_api_gather_runs_as_many_as_fit(sbx: SeqboxRunner, tmp_path: Path) -> None:
    record = tmp_path / "record"

    async def agents() -> list[seqbox.Result]:
        return await asyncio.gather(
            *(
                seqbox.run_async(job(record, f"agent{i}")[1:], mem="100M", lock="agents", budget=BUDGET)
                for i in range(5)
            )
        )

    results = asyncio.run(agents())
    assert [r.status for r in results] == ["ok"] * 5, results
    spans = intervals(record)
    peak, most = peak_reserved(spans, dict.fromkeys(spans, 100 * MIB))
    assert peak <= 300 * MIB
    assert most >= 2


def test_the_head_starts_when_any_holder_leaves(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """The head waits for room, not for one holder: when a younger holder
    leaves while the oldest stays, the head starts as soon as after a plain
    handoff (the only holder leaving), not at its next look (0.5 s later)."""
    record, stay = tmp_path / "record", tmp_path / "stay"
    wait_gate = 'while [ ! -e "$1" ]; do sleep 0.005; done; echo "end $2 $(date +%s%N)" >> "$3"'
    held = ["--budget", BUDGET, "--mem", "150M", "--", "sh", "-c", wait_gate, "sh"]

    def gap(tag: str, need: str, holders: int) -> float:
        """Start a holder, then a head needing ``need``; let the holder go:
        from its command's end to the head's command's start."""
        leave = tmp_path / f"leave-{tag}"
        leaver = sbx.start(*held, str(leave), tag, str(record))
        wait_until("the holder to run", lambda: len(lock_view(sbx.project)[0]) == holders)
        head = sbx.start("--budget", BUDGET, "--mem", need, *job(record, f"head-{tag}", mib=1, hold=0))
        waiting = lambda: any(w.get("waiting_for") for w in lock_view(sbx.project)[1])  # noqa: E731
        wait_until("the head to wait for memory", waiting)
        leave.touch()
        assert finish(leaver, head) == [0, 0]
        seen = {(kind, tag): int(ns) for kind, tag, ns in map(str.split, record.read_text().splitlines())}
        return (seen["start", f"head-{tag}"] - seen["end", tag]) / 1e9

    plain = [gap(f"only{i}", "300M", 1) for i in range(3)]
    old = sbx.start(*held, str(stay), "old", "/dev/null")
    try:
        wait_until("the oldest holder to run", lambda: len(lock_view(sbx.project)[0]) == 1)
        younger = [gap(f"young{i}", "150M", 2) for i in range(3)]
    finally:
        stay.touch()
        finish(old)
    # It used to wait on the oldest holder and look again every 0.5 s.
    assert sum(younger) / 3 < sum(plain) / 3 + 0.2, (plain, younger)


def test_doctor_says_what_auto_would_be(sbx: SeqboxRunner, cgroup_backend: str) -> None:
    """Inside a run limited to 1 GiB (a cgroup above seqbox, as a container's
    would be), doctor names the limit and says auto is 1 GiB less 256 MiB."""
    doctor = f"{sys.executable} -m seqbox doctor"
    res = sbx.run("--mem", "1G", "--", "sh", "-c", f"{doctor} --json; {doctor}", backend=cgroup_backend)
    assert res.returncode in (0, 1), res  # 1: nested, only polling may be left
    decoder = json.JSONDecoder()
    facts, end = decoder.raw_decode(res.stdout)
    memory = facts["memory"]
    assert memory["budget_auto_bytes"] == 768 * MIB, memory
    assert [c["limit_bytes"] for c in memory["enclosing"]] == [1024 * MIB], memory
    text = res.stdout[end:]
    assert "budget auto:   768.0 MiB (at most 1.0 GiB here, less a reserve of 256.0 MiB)" in text, text
    assert "  limited by:     " in text, text
    assert ": 1.0 GiB (" in text, text
