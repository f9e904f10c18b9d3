"""The culprit: the biggest processes of a tree near or over its memory limit
(summary ``culprit``, the kill line, ``report``, ``logs``), on every backend;
the choice itself on canned input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from seqbox import culprit, topprocs
from tests.helpers import MIB, SeqboxRunner, prog, slack

pytestmark = pytest.mark.poll_reader  # which processes are measured: both ways of reading the tree


# -- the choice, on canned input ---------------------------------------------------------


def test_top_three_biggest_first() -> None:
    procs = [(10, 5 * MIB), (11, 300 * MIB), (12, 0), (13, 7 * MIB), (14, 7 * MIB), (15, 1)]
    assert culprit.top(procs) == [(11, 300 * MIB), (13, 7 * MIB), (14, 7 * MIB)]


def test_top_of_fewer_and_of_none() -> None:
    assert culprit.top([(1, 10)]) == [(1, 10)]
    assert culprit.top([]) == []
    assert culprit.top([(1, 0), (2, 0)]) == []  # nothing resident: zombies, kernel threads


def test_threshold_is_the_warning_share_at_most_ninety_percent() -> None:
    assert culprit.threshold(1000, 0.8) == 800
    assert culprit.threshold(1000, 0.95) == 900
    assert culprit.threshold(1000, None) == 900
    assert culprit.threshold(None, 0.8) is None


@pytest.mark.parametrize(
    ("status", "peak", "limit", "named"),
    [
        ("memory", 10, 100, True),
        ("memory", None, None, True),
        ("ok", 90, 100, True),
        ("failed", 89, 100, False),
        ("ok", 90, None, False),
        ("ok", None, 100, False),
    ],
)
def test_wanted(status: str, peak: int | None, limit: int | None, named: bool) -> None:
    assert culprit.wanted(status, peak, limit) is named


def test_kill_hint_names_the_top_one_and_a_next_step() -> None:
    entries = culprit.entries([(42, "python3 grow.py", 900 * MIB), (43, "sleep 9", MIB)])
    hint = culprit.kill_hint(entries)
    assert hint.startswith("; biggest: pid 42 (python3 grow.py, 900.0 MiB); raise --mem if it needs more")
    assert hint.endswith("('seqbox report' lists the biggest processes)")
    unseen = culprit.kill_hint(None)  # the report then has no list to promise
    assert unseen == "; raise --mem if it needs more, or make it use less (" + culprit.UNSEEN + ")"


def test_a_process_being_killed_keeps_the_command_read_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OOM killer's victim, read as the kernel's notification comes, still
    shows its memory, but its command line reads empty (the kernel then shows
    ``[comm]``): it keeps the one read before. (Seen in the suite: the culprit
    named ``'[python]'``.)"""
    holder = subprocess.Popen([sys.executable, "-c", "x = bytearray(64 << 20); import time; time.sleep(30)"])
    try:
        while topprocs.biggest([holder.pid])[1] < 64 << 20:
            time.sleep(0.01)
        named: dict[int, str] = {}
        (first,), _ = topprocs.biggest([holder.pid], named=named)
        assert "bytearray" in first[1], first
        # as an exiting process reads: no command line, its name still there
        monkeypatch.setattr(topprocs, "_command_proc", lambda pid: None)
        monkeypatch.setattr(topprocs, "_name_proc", lambda pid: "python3")
        (again,), _ = topprocs.biggest([holder.pid], named=named)
        assert again[1] == first[1]
        (unnamed,), _ = topprocs.biggest([holder.pid])
        assert unnamed[1] == "'[python3]'"  # never read before: the kernel's name, as ps shows it
    finally:
        holder.kill()
        holder.wait()


def test_from_json_keeps_well_formed_entries() -> None:
    good = {"pid": 1, "command": "x", "rss_bytes": 2}
    assert culprit.from_json([good, {"pid": "1"}, 3, None]) == [good]
    assert culprit.from_json(None) == []


# -- on every backend ------------------------------------------------------------------------


def _roles(path: Path) -> dict[str, list[int]]:
    roles: dict[str, list[int]] = {}
    for line in path.read_text().splitlines():
        pid, role = line.split()
        roles.setdefault(role, []).append(int(pid))
    return roles


def test_the_one_that_grows_is_named(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # per process, the tree is sampled only above the warning line (80 %, 128 MiB): the
    # grower takes 8 MiB per pause, slowly enough for a sample between it and the limit,
    # also under emulation (the laptop lane once ended the run before one: no culprit)
    pause = f"{slack(0.05):.3f}"
    res = sbx.run(
        "--json", "--mem", "160M", "--", *prog("trio", "--pids", pids, "--chunk", "8", "--pause", pause),
        backend=backend, timeout=60,
    )  # fmt: skip
    assert res.returncode == 137, res
    grower = _roles(pids)["grows"][0]
    doc: dict[str, Any] = res.json()
    assert doc["status"] == "memory"
    named = doc["culprit"]
    assert isinstance(named, list), doc
    assert 1 <= len(named) <= 3, doc
    assert named[0]["pid"] == grower, named
    assert "prog.py trio" in named[0]["command"], named
    assert named[0]["rss_bytes"] >= 100 * MIB, named
    assert [entry["rss_bytes"] for entry in named] == sorted((e["rss_bytes"] for e in named), reverse=True)
    kill = [line for line in res.seqbox_lines() if line.startswith("seqbox: killed")]
    assert re.search(rf"; biggest: pid {grower} \(python\S* \S*prog.py trio", kill[0]), kill
    assert kill[0].endswith("('seqbox report' lists the biggest processes)"), kill
    # the run log's exit event carries it; report and logs show it
    events = [json.loads(line) for line in Path(doc["log"]).read_text().splitlines()]
    assert events[-1]["summary"]["culprit"] == named
    report = sbx.run("report", doc["run_id"], cli=True)
    assert re.search(rf"biggest\s+pid {grower} \(", report.stdout), report
    logs = sbx.run("logs", doc["run_id"], cli=True)
    assert f"biggest: pid {grower} (" in logs.stdout, logs


@pytest.mark.slow
def test_near_the_limit_names_them_too(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    res = sbx.run(
        "--json", "--mem", "256M", "--",
        *prog("trio", "--pids", pids, "--each", "1", "--chunk", "8", "--pause", "0.02", "--total", "236",
              "--hold", "1.5"),
        backend=backend, timeout=60,
    )  # fmt: skip
    doc: dict[str, Any] = res.json()
    assert doc["status"] == "ok", res
    assert doc["peak_mem_bytes"] >= 0.9 * 256 * MIB, doc
    assert doc["culprit"][0]["pid"] == _roles(pids)["grows"][0], doc


def test_a_healthy_run_names_none(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--json", "--mem", "256M", "--", *prog("hog", "--total", "16"), backend=backend)
    assert res.json()["culprit"] is None, res


def test_a_kill_with_no_process_seen_promises_no_list(sbx: SeqboxRunner, backend: str) -> None:
    """A tree that jumps past its limit between two looks (300 MiB at once into
    100 MiB) may be killed before seqbox saw any process of it near the limit:
    the kill line then says so, and promises the report's list only when it
    names the biggest process. The report says the same for a run without one."""
    res = sbx.run(
        "--json", "--mem", "100M", "--", "python3", "-c", "x = bytearray(300 * 2**20)", backend=backend
    )
    assert res.returncode == 137, res
    doc: dict[str, Any] = res.json()
    (kill,) = [line for line in res.seqbox_lines() if line.startswith("seqbox: killed")]
    if doc["culprit"]:
        assert "; biggest: pid " in kill, kill
        assert kill.endswith("('seqbox report' lists the biggest processes)"), kill
    else:
        assert kill.endswith(f"({culprit.UNSEEN})"), kill
    log = Path(doc["log"])
    events = [json.loads(line) for line in log.read_text().splitlines()]
    events[-1]["summary"]["culprit"] = None  # as when none was seen
    log.write_text("".join(json.dumps(event) + "\n" for event in events))
    report = sbx.run("report", doc["run_id"], cli=True)
    assert re.search(rf"biggest\s+not seen: {culprit.UNSEEN}", report.stdout), report
