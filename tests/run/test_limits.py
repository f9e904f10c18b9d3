"""Memory, process and time limits on the whole tree, on every backend."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

from tests.capabilities import CGROUP_BACKENDS, needs
from tests.helpers import (
    FORCED_CHARGES,
    MEMORY_KILL_RE,
    MIB,
    PROG,
    SeqboxRunner,
    alive,
    prog,
    read_pids,
    slack,
    token_pids,
)

pytestmark = pytest.mark.poll_reader  # memory, tasks and kills: both ways of reading the tree


def _warnings(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("seqbox: warning: memory")]


# -- memory ----------------------------------------------------------------------------


def test_memory_hog_is_killed(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--json", "--mem", "256M", "--", *prog("hog", "--chunk", "32"), backend=backend)
    assert res.returncode == 137, res
    doc = res.json()
    assert doc["status"] == "memory"
    assert doc["exit_code"] == 137
    assert doc["mem_limit_bytes"] == 256 * MIB
    kills = [line for line in res.seqbox_lines() if line.startswith("seqbox: killed")]
    assert len(kills) == 1, res
    assert re.fullmatch(MEMORY_KILL_RE.format(limit=r"256\.0 MiB"), kills[0]), kills[0]
    assert res.duration < slack(10), res
    peak = doc["peak_mem_bytes"]
    assert isinstance(peak, int)
    assert peak >= 200 * MIB  # it got near the limit before it was stopped
    if backend in CGROUP_BACKENDS:  # the kernel's own counter stays at its limit
        assert peak <= 256 * MIB + FORCED_CHARGES


def test_memory_kill_message_without_json(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--mem", "128M", "--", *prog("hog", "--chunk", "64"), backend=backend)
    assert res.returncode == 137, res
    lines = res.stderr.splitlines()
    assert re.fullmatch(MEMORY_KILL_RE.format(limit=r"128\.0 MiB"), lines[-1]), res


def test_tree_of_small_processes_is_killed_as_a_whole(
    sbx: SeqboxRunner, backend: str, tmp_path: Path
) -> None:
    """6 children of 60 MiB: each one is far below 256M, together they are not."""
    pidfile = tmp_path / "children"
    res = sbx.run(
        "--json",
        "--mem",
        "256M",
        "--",
        *prog("tree", "--children", "6", "--each", "60", "--pids", pidfile, "--hold", "30"),
        backend=backend,
    )
    assert res.returncode == 137, res
    assert res.json()["status"] == "memory"
    children = list(read_pids(pidfile, timeout=1, count=1).values())
    assert alive(children) == [], "children survived the memory kill"
    assert token_pids(sbx.token) == []
    assert res.duration < slack(10), res


def test_kernel_oom_inside_the_tree_is_a_memory_kill(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    """A child is killed for memory and its parent carries on and exits 0: still
    137 and status "memory" (the kernel's counter says so, not the exit status)."""
    res = sbx.run(
        "--json",
        "--mem",
        "192M",
        "--",
        *prog("parent", "--pids", tmp_path / "pid", "--exit", "0", "--hold", "0.3", "--"),
        *prog("hog", "--chunk", "32"),
        backend=backend,
    )
    assert res.returncode == 137, res
    assert res.json()["status"] == "memory"


def test_escaped_daemon_is_killed_for_memory(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    """A double-forked setsid daemon that grows is still part of the tree."""
    pidfile = tmp_path / "pid"
    res = sbx.run(
        "--json",
        "--mem",
        "192M",
        "--",
        *prog("parent", "--pids", pidfile, "--daemon", "1", "--hold", "30", "--"),
        *prog("hog", "--chunk", "32"),
        backend=backend,
    )
    assert res.returncode == 137, res
    assert res.json()["status"] == "memory"
    assert alive(read_pids(pidfile, timeout=1).values()) == []
    assert res.duration < slack(10), res


def test_copy_on_write_pages_count_once(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    """A parent touches 64 MiB, then forks 5 children that only sleep: the tree
    uses ~70 MiB, and a 200M limit must not kill it."""
    res = sbx.run(
        "--json", "--mem", "200M", "--",
        *prog("tree", "--own", "64", "--children", "5", "--each", "0",
              "--pids", tmp_path / "pids", "--hold", "1.2"),
        backend=backend,
    )  # fmt: skip
    assert res.returncode == 0, res
    peak = res.json()["peak_mem_bytes"]
    assert isinstance(peak, int)
    assert 64 * MIB <= peak < 200 * MIB


def test_shared_memory_counts(sbx: SeqboxRunner, backend: str) -> None:
    """Shared anonymous memory (MAP_SHARED, as shm and multiprocessing use) is
    memory too: a tree growing it past --mem is killed."""
    res = sbx.run(
        "--json", "--mem", "256M", "--",
        *prog("hog", "--shared", "1", "--chunk", "32", "--total", "600", "--hold", "0.5"),
        backend=backend,
    )  # fmt: skip
    assert res.returncode == 137, res
    assert res.json()["status"] == "memory"


def test_peak_is_reported(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run(
        "--json",
        "--mem",
        "512M",
        "--",
        *prog("hog", "--chunk", "50", "--total", "100", "--hold", "0.4"),
        backend=backend,
    )
    assert res.returncode == 0, res
    doc = res.json()
    assert doc["status"] == "ok"
    peak = doc["peak_mem_bytes"]
    assert isinstance(peak, int)
    assert 100 * MIB <= peak < 512 * MIB


@pytest.mark.slow
def test_warn_at_prints_one_warning(sbx: SeqboxRunner, backend: str) -> None:
    """160 MiB held 2.5 s under 256M with --warn-at 0.5: many samples are over
    the share, exactly one warning line."""
    res = sbx.run(
        "--mem", "256M", "--warn-at", "0.5", "--",
        *prog("hog", "--chunk", "40", "--total", "160", "--pause", "0.05", "--hold", "2.5"),
        backend=backend,
    )  # fmt: skip
    assert res.returncode == 0, res
    assert len(_warnings(res.seqbox_lines())) == 1, res


def test_warn_at_brief_excursion(sbx: SeqboxRunner, backend: str) -> None:
    """Over the share for only 0.4 s: cgroup1 (a kernel threshold) and poll (0.1 s
    samples) warn once; cgroup2, sampled every second, may miss it, but never
    warns twice."""
    res = sbx.run(
        "--mem", "256M", "--warn-at", "0.5", "--",
        *prog("hog", "--chunk", "40", "--total", "160", "--hold", "0.4"),
        backend=backend,
    )  # fmt: skip
    assert res.returncode == 0, res
    warnings = _warnings(res.seqbox_lines())
    if backend == "cgroup2":
        assert len(warnings) <= 1, res
    else:
        assert len(warnings) == 1, res


def test_no_warning_below_the_share(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run(
        "--mem",
        "256M",
        "--warn-at",
        "0.5",
        "--",
        *prog("hog", "--chunk", "16", "--total", "32", "--hold", "0.3"),
        backend=backend,
    )
    assert res.returncode == 0, res
    assert _warnings(res.seqbox_lines()) == [], res


def test_quiet_hides_the_warning_and_the_kill(sbx: SeqboxRunner, backend: str) -> None:
    """-q prints only seqbox's own failures: why the command stopped is in the
    exit status (and --json / --report)."""
    res = sbx.run(
        "-q",
        "--mem",
        "128M",
        "--warn-at",
        "0.25",
        "--",
        *prog("hog", "--chunk", "16", "--pause", "0.02"),
        backend=backend,
    )
    assert res.returncode == 137, res
    lines = res.seqbox_lines()
    assert lines == [], res


def test_no_memory_limit(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--json", "--mem", "none", "--", "true", backend=backend)
    assert res.returncode == 0, res
    assert res.json()["mem_limit_bytes"] is None


# -- processes ---------------------------------------------------------------------------


def test_pids_limit_contains_many_processes(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    """100 sleepers under --pids 20: on a cgroup backend forks fail; on poll the
    tree is killed. Either way seqbox returns and nothing survives."""
    pidfile, outfile = tmp_path / "pids", tmp_path / "out"
    res = sbx.run(
        "--json",
        "--pids",
        "20",
        "--timeout",
        "20",
        "--",
        *prog(
            "spawner", "--n", "100", "--pids", pidfile, "--out", outfile, "--hold", "30", "--linger", "0.5"
        ),  # long enough for poll to sample the tree
        backend=backend,
        timeout=30,
    )
    assert res.duration < slack(15), res
    started = [int(line) for line in pidfile.read_text().split()] if pidfile.exists() else []
    assert alive(started) == []
    assert token_pids(sbx.token) == []
    if backend in CGROUP_BACKENDS:
        match = re.fullmatch(r"started (\d+) failed (\d+)\n", outfile.read_text())
        assert match, outfile.read_text()
        assert int(match.group(1)) < 20
        assert int(match.group(2)) > 80
    else:
        assert res.returncode == 137, res
        assert res.json()["status"] == "signal"


def test_fork_bomb_is_contained(sbx: SeqboxRunner, cgroup_backend: str) -> None:
    """A real fork bomb: the kernel caps it at --pids, the timeout ends it."""
    res = sbx.run(
        "--json",
        "--pids",
        "64",
        "--timeout",
        "1",
        "--grace",
        "0.2",
        "--",
        *prog("bomb", "--for", "20"),
        backend=cgroup_backend,
        timeout=30,
    )
    assert res.returncode == 124, res
    procs_peak = res.json()["procs_peak"]
    assert isinstance(procs_peak, int)
    assert procs_peak <= 64
    assert res.duration < slack(8), res
    assert token_pids(sbx.token) == []


@pytest.mark.vm_slow  # the poll backend is what it checks: covered on the host
def test_fork_bomb_under_poll_is_contained(sbx: SeqboxRunner, cgroup_backend: str) -> None:
    """The poll backend against a real fork bomb, inside a cgroup run as a safety net
    (200 tasks, which then retry forking 5 times a second, so an emulated VM still
    gives seqbox some CPU): it stops the bomb by itself, quickly, and leaves nothing."""
    inner = [sys.executable, "-m", "seqbox", "run", "--backend", "poll", "--pids", "64"]
    res = sbx.run(
        "--pids", "200", "--timeout", "30", "--",
        *inner, "--timeout", "20", "--", *prog("bomb", "--for", "15", "--retry", "0.2"),
        backend=cgroup_backend, timeout=60,
    )  # fmt: skip
    assert res.returncode == 137, res
    # killed for --pids, or for memory: poll adds up the RSS of 64+ forked
    # interpreters that share most of their pages (see the test below)
    assert any(line.startswith("seqbox: killed: ") for line in res.seqbox_lines()), res
    assert res.duration < slack(10), res
    assert token_pids(sbx.token) == []


# -- time ----------------------------------------------------------------------------------


def test_timeout(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--json", "--timeout", "0.5", "--", "sleep", "30", backend=backend)
    assert res.returncode == 124, res
    doc = res.json()
    assert doc["status"] == "timeout"
    assert doc["exit_code"] == 124
    assert 0.4 <= res.duration < slack(5), res
    assert 0.4 <= doc["wall_s"] < slack(5)  # type: ignore[operator]
    assert res.seqbox_lines() == ["seqbox: timeout: stopped after 0.5s"], res  # TERM was enough


@pytest.mark.slow
def test_grace_then_sigkill(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    """A command that ignores SIGTERM is SIGKILLed --grace after the timeout."""
    timeout = slack(0.5)  # time enough for the command to start ignoring SIGTERM
    res = sbx.run(
        "--json", "--timeout", f"{timeout:.2f}", "--grace", "1", "--",
        *prog("ignore-term", "--hold", "30"),
        backend=backend,
    )  # fmt: skip
    assert res.returncode == 124, res
    doc = res.json()
    assert doc["status"] == "timeout"
    assert doc["signal"] == signal.SIGKILL
    assert timeout + 0.9 <= res.duration < timeout + slack(5), res
    (line,) = res.seqbox_lines()
    assert line.endswith("; the tree ignored SIGTERM and was SIGKILLed after the 1.0s grace"), res


def test_grace_does_not_delay_a_command_that_stops(sbx: SeqboxRunner, backend: str) -> None:
    res = sbx.run("--json", "--timeout", "0.3", "--grace", "20", "--", "sleep", "30", backend=backend)
    assert res.returncode == 124, res
    assert res.json()["signal"] == signal.SIGTERM
    assert res.duration < slack(3), res


def test_timeout_signal_int(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    res = sbx.run(
        "--json",
        "--timeout",
        f"{slack(0.5):.2f}",  # time enough for the command to set its trap
        "--signal",
        "INT",
        "--",
        *prog("trap", "--signal", "INT", "--marker", marker, "--exit", "0"),
        backend=backend,
    )
    assert res.returncode == 124, res
    assert res.json()["status"] == "timeout"
    assert marker.read_text() == "SIGINT\n"


# -- cpu -------------------------------------------------------------------------------------


def test_cpus_quota(sbx: SeqboxRunner, cgroup_backend: str) -> None:
    """--cpus 0.2: a busy loop gets about a fifth of the wall time as CPU time."""
    busy = "import time\nend = time.monotonic() + 1.0\nwhile time.monotonic() < end: pass\n"
    res = sbx.run("--json", "--cpus", "0.2", "--", sys.executable, "-c", busy, backend=cgroup_backend)
    assert res.returncode == 0, res
    cpu, wall = res.json()["cpu_s"], res.json()["wall_s"]
    assert isinstance(cpu, float)
    assert isinstance(wall, float)
    assert wall >= 1.0
    assert cpu / wall < 0.35, res


def test_cpus_ignored_by_poll_with_a_note(sbx: SeqboxRunner) -> None:
    res = sbx.run("--cpus", "1.5", "--", "true", backend="poll")
    assert res.returncode == 0, res
    assert "--cpus" in res.one_line()


def _over_high(backend: str) -> str:
    """MiB to grow to over a 64M --mem-high: cgroup2 throttles an allocator above
    memory.high (there is no swap to reclaim into), the more the further above,
    so stay just over it there."""
    return "72" if backend == "cgroup2" else "128"


@pytest.mark.slow
def test_mem_high(sbx: SeqboxRunner, backend: str) -> None:
    """Above --mem-high for 2.5 s: cgroup2 throttles (memory.high, see
    test_cgroups), the others print one warning. Either way nothing is killed."""
    res = sbx.run(
        "--mem", "512M", "--mem-high", "64M", "--warn-at", "0", "--",
        *prog("hog", "--chunk", "8", "--total", _over_high(backend), "--hold", "2.5"),
        backend=backend,
    )  # fmt: skip
    assert res.returncode == 0, res
    warnings = [line for line in res.seqbox_lines() if "--mem-high" in line]
    assert len(warnings) == (0 if backend == "cgroup2" else 1), res


@pytest.mark.vm_slow  # on cgroup2 it checks what test_mem_high does
def test_mem_high_brief_excursion(sbx: SeqboxRunner, backend: str) -> None:
    """Above --mem-high for only 0.4 s: still one warning (none on cgroup2)."""
    res = sbx.run(
        "--mem",
        "512M",
        "--mem-high",
        "64M",
        "--warn-at",
        "0",
        "--",
        *prog("hog", "--chunk", "8", "--total", _over_high(backend), "--hold", "0.4"),
        backend=backend,
    )
    assert res.returncode == 0, res
    warnings = [line for line in res.seqbox_lines() if "--mem-high" in line]
    assert len(warnings) == (0 if backend == "cgroup2" else 1), res


@needs("cgroup1")
def test_a_nested_run_stopped_by_the_outer_limit_says_whose(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """The outer run holds 120 MiB, the nested one grows to 150 MiB under the
    same 200 MiB: the limit the kernel enforced is the outer run's. No line may
    claim this run's own limit was exceeded at a peak well under it."""
    seqbox = f"{sys.executable} -m seqbox run --backend cgroup1 --mem 200M --"
    hog = f"{sys.executable} {PROG}"
    script = (
        f"{hog} hog --total 120 --chunk 10 --hold 30 & sleep 1; "
        f"{seqbox} {hog} hog --total 150 --chunk 10 --hold 5; kill $! 2>/dev/null; wait"
    )
    res = sbx.run("--backend", "cgroup1", "--mem", "200M", "--", "sh", "-c", script, timeout=60)
    assert res.returncode == 137, res
    killed = [line for line in res.seqbox_lines() if "killed:" in line]
    assert killed, res
    for line in killed:
        match = re.search(r"memory limit 200\.0 MiB exceeded \(peak ([\d.]+) MiB\)", line)
        if match is not None:
            assert float(match.group(1)) >= 198.0, line
        else:
            assert "the enclosing seqbox run's memory limit 200.0 MiB" in line, line
