"""Run logs (one JSON Lines file per run), ``seqbox logs`` and ``seqbox report``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import MIB, SeqboxRunner, prog, slack


def events(path: str | Path) -> list[dict[str, object]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def kinds(evs: list[dict[str, object]]) -> list[str]:
    return [str(e["event"]) for e in evs]


def log_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "state" / "logs").glob("*/*.jsonl"))


def test_a_run_writes_its_log(sbx: SeqboxRunner, tmp_path: Path) -> None:
    res = sbx.run("--json", "--mem", "256M", "--", "sh", "-c", "sleep 1.3; exit 3")
    assert res.returncode == 3, res
    summary = res.json()
    path = summary["log"]
    assert isinstance(path, str)
    assert [Path(path)] == log_files(tmp_path)
    evs = events(path)
    assert kinds(evs)[:2] == ["start", "lock"]
    assert kinds(evs)[-1] == "exit"
    assert kinds(evs).count("sample") >= 2  # one at once, one a second
    start = evs[0]
    assert start["command"] == ["sh", "-c", "sleep 1.3; exit 3"]
    assert start["backend"] == summary["backend"]
    assert start["limits"]["mem"] == 256 * MIB  # type: ignore[index]
    assert evs[1]["got"] is True
    assert evs[1]["lock"] == "default"
    sample = next(e for e in evs if e["event"] == "sample")
    assert {"mem", "procs", "cpu_s"} <= set(sample)
    times = [float(e["t"]) for e in evs]  # type: ignore[arg-type]
    assert times == sorted(times)
    # the exit event carries the summary, the same fields as --json
    del summary["stdout"], summary["stderr"]
    assert evs[-1]["summary"] == summary


def test_memory_kill_and_warning_are_logged(sbx: SeqboxRunner, backend: str) -> None:
    # 4 MiB at a time, resting with 100 MiB allocated (the interpreter's own few
    # MiB on top: between the warning, 80 % of 128 MiB, and the limit) long enough
    # for the sampler (every 0.1 s) to see it there, also in a slow VM (a pause per
    # step was not always enough there: the warning was missed); then past the limit,
    # and held there until the poll backend's sampler sees it too
    rest = f"100:{slack(0.5)}"
    res = sbx.run(
        "--json", "--mem", "128M", "--",
        *prog("hog", "--total", "300", "--chunk", "4", "--pause-at", rest, "--hold", "30"),
        backend=backend,
    )  # fmt: skip
    assert res.returncode == 137, res
    evs = events(str(res.json()["log"]))
    warn = [e for e in evs if e["event"] == "warn"]
    kill = [e for e in evs if e["event"] == "kill"]
    assert len(warn) == 1
    assert "memory at" in str(warn[0]["message"])
    assert [k["reason"] for k in kill] == ["memory"]
    # what reached the limit, not what was left once the kernel had freed some
    assert str(kill[0]["message"]).startswith("memory limit 128.0 MiB exceeded (at "), kill
    assert int(kill[0]["mem"]) >= 127 * MIB, kill  # type: ignore[call-overload]
    assert evs[-1]["summary"]["status"] == "memory"  # type: ignore[index]


def test_keep_logs_keeps_exactly_that_many(sbx: SeqboxRunner, project: Path, tmp_path: Path) -> None:
    (project / "seqbox.toml").write_text('keep_logs = 2\nlog_dir = "logs"\n')
    ids = []
    for _ in range(4):
        res = sbx.run("--json", "--", "true")
        assert res.returncode == 0, res
        ids.append(res.json()["run_id"])
    kept = sorted(p.name for p in (project / "logs").iterdir())
    assert kept == sorted(f"{run_id}.jsonl" for run_id in ids[-2:])
    assert not log_files(tmp_path)  # log_dir replaces the state directory's


def test_keep_logs_zero_writes_none(sbx: SeqboxRunner, project: Path, tmp_path: Path) -> None:
    (project / "seqbox.toml").write_text("keep_logs = 0\n")
    res = sbx.run("--json", "--", "true")
    assert res.json()["log"] is None
    assert not log_files(tmp_path)


def test_unwritable_log_warns_once_and_the_command_runs(sbx: SeqboxRunner, project: Path) -> None:
    (project / "not-a-dir").write_text("")
    (project / "seqbox.toml").write_text('log_dir = "not-a-dir/logs"\n')
    res = sbx.run("--mem", "256M", "--", "sh", "-c", "echo out; sleep 1.2; exit 4")
    assert res.returncode == 4, res
    assert res.stdout == "out\n"
    lines = res.seqbox_lines()
    assert len(lines) == 1, res
    assert "cannot write the run log" in lines[0]
    assert "log_dir" in lines[0]  # what to do next
    res = sbx.run("--json", "--", "true")
    assert res.json()["log"] is None


@pytest.mark.needs("root")
def test_full_disk_warns_once(sbx: SeqboxRunner, tmp_path: Path, project: Path) -> None:
    """ENOSPC while the run writes: one warning, the exit code is the command's."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mnt)], check=True)
    try:
        try:
            (mnt / "filler").write_bytes(b"x" * 16384)  # as much as fits: the disk is full
        except OSError:
            pass
        (project / "seqbox.toml").write_text(f'log_dir = "{mnt}"\n')
        res = sbx.run("--mem", "256M", "--", "sh", "-c", "echo out; sleep 1.2; exit 5")
        assert res.returncode == 5, res
        assert res.stdout == "out\n"
        lines = res.seqbox_lines()
        assert len(lines) == 1, res
        assert "cannot write the run log" in lines[0]
        assert "No space left on device" in lines[0]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_log_option_is_the_output_transcript(sbx: SeqboxRunner, project: Path) -> None:
    """--log FILE keeps the command's output; the summary's log is the run log,
    whose start event names the transcript."""
    res = sbx.run("--json", "--log", "out.txt", "--", "sh", "-c", "echo hi\necho 'there'")
    doc = res.json()
    text = (project / "out.txt").read_text()
    assert "hi\nthere\n" in text
    # the header names the command on one line, a multi-line script included
    assert "=== seqbox try 1/1: sh -c \"echo hi echo 'there'\"\n" in text, text
    assert str(doc["log"]).endswith(".jsonl")
    assert events(str(doc["log"]))[0]["output_log"] == str(project / "out.txt")


def test_no_lock_has_no_wait(sbx: SeqboxRunner) -> None:
    """Issue 9 item 14: with --no-lock, lock_wait_s is 0 (it measured set-up time)."""
    for _ in range(3):
        doc = sbx.run("--json", "--no-lock", "--", "true").json()
        assert doc["lock_wait_s"] == 0
        assert doc["lock"] is None


def test_no_lock_counts_no_wait_while_seqbox_waits_for_git(sbx: SeqboxRunner, project: Path) -> None:
    """Issue 9 item 14, whatever the machine's speed: with --no-lock, what seqbox
    waits for before the command (here the git guard: .git/index.lock for 0.5 s)
    is no lock's wait. lock_wait_s once was the time from joining to starting,
    0.001 s of set-up on a slow machine and 0.5 s here."""
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, capture_output=True)
    index_lock = project / ".git" / "index.lock"
    index_lock.touch()
    proc = sbx.start("--json", "--no-lock", "--", "git", "status", "--short")
    time.sleep(0.5)
    assert proc.poll() is None, "git ran while index.lock existed"
    index_lock.unlink()
    out, err = proc.communicate(timeout=slack(20))
    assert proc.returncode == 0, err
    doc = json.loads(out.decode().splitlines()[-1])
    assert doc["lock_wait_s"] == 0.0, doc
    (lock,) = [e for e in events(str(doc["log"])) if e["event"] == "lock"]
    assert (lock["lock"], lock["waited_s"]) == (None, 0.0), lock


# -- seqbox logs / report ---------------------------------------------------------------


def test_logs_lists_recent_runs(sbx: SeqboxRunner) -> None:
    assert sbx.run("--", "sh", "-c", "exit 7").returncode == 7
    assert sbx.run("--mem", "100M", "--", "echo", "hello-logs").returncode == 0
    res = sbx.cli("logs")
    assert res.returncode == 0, res
    lines = res.stdout.splitlines()
    assert lines[0].split() == [
        "#", "started", "waited", "where", "command", "status", "peak", "limit", "duration"
    ]  # fmt: skip
    assert "echo hello-logs" in lines[1]
    assert "ok (0)" in lines[1]
    assert "100.0 MiB" in lines[1]
    assert "sh -c 'exit 7'" in lines[2]
    assert "failed (7)" in lines[2]
    shown = sbx.cli("logs", "2")
    assert shown.returncode == 0, shown
    assert [line.split()[1] for line in shown.stdout.splitlines()[1:]][:2] == ["start", "lock"]
    assert "exit" in shown.stdout.splitlines()[-1]
    rows = [json.loads(line) for line in sbx.cli("logs", "--json").stdout.splitlines()]
    assert [r["status"] for r in rows] == ["ok", "failed"]


def test_a_log_with_values_of_the_wrong_type_is_still_shown(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """A log edited by hand or by another version: each value of the wrong type
    is left out where the log is read, and logs/report show the rest."""
    assert sbx.run("--mem", "100M", "--", "echo", "hello").returncode == 0
    [path] = log_files(tmp_path)
    hostile = [
        {"event": "start", "t": "noon", "command": ["echo", 7], "pid": True, "limits": [1], "backend": 3},
        {"event": "lock", "t": 1.5e9, "waited_s": "long", "got": "yes", "lock": ["default"]},
        {"event": "sample", "t": 1.5e9 + 1, "mem": "big", "procs": 2.5, "cpu_s": {}},
        {"event": "kill", "t": 1.5e9 + 2, "reason": None, "message": ["no"], "mem": 1e300},
        {"event": "exit", "t": 1.5e9 + 3, "summary": {"status": 1, "exit_code": "0", "wall_s": "x"}},
        {"t": 1.5e9 + 4},
        ["not", "an", "event"],
    ]
    path.write_text("".join(json.dumps(e) + "\n" for e in hostile) + "{torn\n")
    for args in (("logs",), ("logs", "1"), ("report",), ("logs", "--json")):
        res = sbx.cli(*args)
        assert res.returncode == 0, res
        assert "Traceback" not in res.stderr, res
    shown = sbx.cli("logs", "1").stdout.splitlines()
    assert [line.split()[1] for line in shown[1:]] == ["start", "lock", "sample", "kill", "exit"], shown


def test_logs_with_nothing_logged_and_a_bad_ref(sbx: SeqboxRunner) -> None:
    res = sbx.cli("logs")
    assert res.returncode == 0
    assert "no runs logged" in res.stdout
    res = sbx.cli("report")
    assert res.returncode == 125
    assert "seqbox run" in res.one_line()
    sbx.run("--", "true")
    res = sbx.cli("logs", "no-such-run")
    assert res.returncode == 125
    assert "seqbox logs" in res.one_line()


@pytest.mark.slow
def test_logs_follow_prints_the_running_commands_events(sbx: SeqboxRunner) -> None:
    runner = sbx.start("--mem", "256M", "--", "sh", "-c", "sleep 2.2; exit 0")
    follower = sbx.start("logs", "--follow", cli=True)
    out, err = follower.communicate(timeout=slack(20))
    assert runner.wait(timeout=slack(10)) == 0
    assert follower.returncode == 0, err
    kinds_seen = [line.split()[1] for line in out.decode().splitlines()[1:]]
    assert kinds_seen[0] in ("start", "lock", "sample")
    assert kinds_seen.count("sample") >= 2
    assert kinds_seen[-1] == "exit"


def test_report_marks_limit_and_kill_and_writes_svg(sbx: SeqboxRunner, tmp_path: Path) -> None:
    res = sbx.run("--mem", "64M", "--", *prog("hog", "--total", "200", "--chunk", "4", "--pause", "0.05"))
    assert res.returncode == 137, res
    svg = tmp_path / "report.svg"
    rep = sbx.cli("report", "--svg", str(svg))
    assert rep.returncode == 0, rep
    text = rep.stdout
    assert "memory (137)" in text
    assert "limit 64.0 MiB" in text
    assert "limit\n" in text  # the limit line over the sparkline
    assert "✗ killed: memory" in text
    assert any(block in text for block in "▁▂▃▄▅▆▇█")
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    drawn = "".join(root.itertext()).replace("\xa0", " ")
    assert "prog.py hog" in drawn
    assert "64.0 MiB" in drawn
    assert "killed: memory" in drawn


def test_every_view_command_has_help_with_examples(sbx: SeqboxRunner) -> None:
    for command in ("logs", "report", "monitor"):
        res = sbx.cli(command, "--help")
        assert res.returncode == 0, res
        assert "examples:" in res.stdout
        assert f"seqbox {command}" in res.stdout


def test_monitor_once_when_nothing_runs(sbx: SeqboxRunner, project: Path) -> None:
    res = sbx.cli("monitor", "--once")
    assert res.returncode == 0, res
    assert "nothing running or waiting" in res.stdout


def _wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + slack(timeout)
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.skipif(not os.path.exists("/usr/bin/tmux"), reason="needs tmux")
def test_monitor_under_tmux(sbx: SeqboxRunner, project: Path, tmp_path: Path) -> None:
    """What a person sees: one run holds the lock, another waits; the screen
    shows the command, its memory bar against the limit and the waiter; q quits."""
    holder = sbx.start("--mem", "256M", "--", *prog("hog", "--total", "40", "--chunk", "40", "--hold", "30"))
    _wait_for(lambda: "running" in sbx.cli("status").stdout, 10)
    waiter = sbx.start("--mem", "128M", "--", "sh", "-c", "echo waiter-ran")
    _wait_for(lambda: "waiting" in sbx.cli("status").stdout, 10)
    socket = str(tmp_path / "tmux.sock")
    env = sbx.env()
    tmux = ["tmux", "-S", socket]
    launch = f"cd {project} && exec {sys.executable} -m seqbox monitor"
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "120", "-y", "30", "-s", "mon", "sh", "-c", launch],
        env=env,
        check=True,
    )
    try:
        screen = ""

        def captured() -> bool:
            nonlocal screen
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "mon"],
                check=False,
                capture_output=True,
                text=True,
                env=env,
            ).stdout
            return "waiting" in screen and "MiB of 256.0 MiB" in screen

        _wait_for(captured, 15)
        print(screen)
        assert "seqbox monitor" in screen
        assert "prog.py hog" in screen
        for label in ("running", "memory", "history", "processes", "waiting"):
            assert any(line.startswith(label) for line in screen.splitlines()), label
        assert "[█" in screen  # the memory bar
        assert "░" in screen
        assert "sh -c 'echo waiter-ran'" in screen
        assert "1. pid" in screen
        subprocess.run([*tmux, "send-keys", "-t", "mon", "q"], env=env, check=True)
        _wait_for(
            lambda: (
                subprocess.run(
                    [*tmux, "has-session", "-t", "mon"], check=False, capture_output=True, env=env
                ).returncode
                != 0
            ),
            10,
        )
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, capture_output=True, env=env)
        for proc in (waiter, holder):  # SIGTERM: seqbox ends its tree, then exits
            proc.terminate()
            proc.wait(timeout=slack(10))


# -- what a pipe gets, where runs ran, when they started (issue 17 items 5-7, 9) ----------

#: an argument long enough that an 80-column layout cut the marker after it
LONG = "x" * 90


def _running(sbx: SeqboxRunner, count: int = 1) -> bool:
    doc = json.loads(sbx.cli("status", "--json").stdout)
    return sum(len(lock["running"]) for lock in doc["locks"]) >= count


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:  # SIGTERM: seqbox ends its tree, then exits
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=slack(30))


@pytest.mark.slow
def test_nothing_is_cut_to_80_columns_on_a_pipe(sbx: SeqboxRunner) -> None:
    """`seqbox logs -n 50 | grep -c memhog` found nothing: piped, logs, status,
    monitor --once and report show every command and path whole."""
    assert sbx.run("--", "sh", "-c", "true", LONG, "memhog").returncode == 0
    holder = sbx.start("--", "sh", "-c", "sleep 30", LONG, "memhog-running")
    try:
        _wait_for(lambda: _running(sbx), 10)
        logs = sbx.cli("logs", "-n", "50")
        assert [line for line in logs.stdout.splitlines() if "memhog" in line and LONG in line], logs
        assert not any(line != line.rstrip() for line in logs.stdout.splitlines()), logs  # no padding
        status = sbx.cli("status")
        assert f"{LONG} memhog-running" in status.stdout, status
        monitor = sbx.cli("monitor", "--once")
        assert f"{LONG} memhog-running" in monitor.stdout, monitor
        assert "q quits" not in monitor.stdout, monitor  # one frame: nothing to quit
    finally:
        _stop(holder)
    report = sbx.cli("report", "2")
    (path,) = [
        row["log"] for row in map(json.loads, sbx.cli("logs", "--json", "-n", "2").stdout.splitlines())
    ][1:]
    assert f"\n{path}\n" in re.sub(r"\nlog +", "\n", report.stdout), report  # the path to copy, whole
    assert f"{LONG} memhog" in report.stdout, report


@pytest.mark.slow
def test_the_working_directory_tells_two_runs_apart(sbx: SeqboxRunner, project: Path) -> None:
    """The same command from two directories of one project: status, status --json,
    monitor and logs say where each runs."""
    for name in ("wt-a", "wt-b"):
        (project / name).mkdir()
    holder = sbx.start("--cwd", str(project / "wt-a"), "--", "sleep", "30")
    try:
        _wait_for(lambda: _running(sbx), 10)
        waiter = sbx.start("--cwd", str(project / "wt-b"), "--", "sleep", "30")
        try:
            _wait_for(lambda: "waiting" in sbx.cli("status").stdout, 10)
            status = sbx.cli("status").stdout
            assert '"sleep 30" in wt-a for' in status, status
            assert '"sleep 30" in wt-b for' in status, status
            (lock,) = json.loads(sbx.cli("status", "--json").stdout)["locks"]
            assert [run["cwd"] for run in lock["running"]] == ["wt-a"], lock
            assert [waiting["cwd"] for waiting in lock["waiting"]] == ["wt-b"], lock
            monitor = sbx.cli("monitor", "--once").stdout
            assert '"sleep 30" in wt-a' in monitor, monitor
            assert '"sleep 30" in wt-b' in monitor, monitor
        finally:
            _stop(waiter)
    finally:
        _stop(holder)
    rows = [json.loads(line) for line in sbx.cli("logs", "--json").stdout.splitlines()]
    assert sorted(row["cwd"] for row in rows) == ["wt-a", "wt-b"], rows
    table = sbx.cli("logs").stdout.splitlines()
    assert [line.split()[3] for line in table[1:]] == ["wt-b", "wt-a"], table


def test_logs_shows_when_the_command_started_and_how_long_it_waited(
    sbx: SeqboxRunner, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    holder = sbx.start("--", "sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done', str(gate))
    _wait_for(lambda: _running(sbx), 10)
    queued_run = sbx.start("--", "echo", "queued")
    _wait_for(lambda: "waiting" in sbx.cli("status").stdout, 10)
    time.sleep(1)
    gate.touch()
    assert queued_run.wait(timeout=slack(30)) == 0
    _stop(holder, queued_run)
    rows = [json.loads(line) for line in sbx.cli("logs", "--json").stdout.splitlines()]
    queued = next(row for row in rows if row["command"] == ["echo", "queued"])
    assert "duration_s" not in queued  # the summary's name for it
    assert queued["wall_s"] < 1, queued
    assert queued["lock_wait_s"] >= 1, queued
    assert queued["started"] - queued["invoked"] == pytest.approx(queued["lock_wait_s"], abs=0.3), queued
    line = next(line for line in sbx.cli("logs").stdout.splitlines() if "echo queued" in line)
    waited = line.split()[2]
    assert waited.endswith("s"), line  # the wait, not "-"
    assert "seqbox started" in sbx.cli("report", "1").stdout


def test_monitor_shows_the_budget_and_what_the_head_waits_for(sbx: SeqboxRunner) -> None:
    args = ("--lock", "agents", "--budget", "300M", "--mem", "200M", "--", "sleep", "30")
    holder = sbx.start(*args)
    try:
        _wait_for(lambda: _running(sbx), 10)
        waiter = sbx.start(*args)
        try:
            _wait_for(lambda: "waiting for memory" in sbx.cli("status").stdout, 10)
            monitor = sbx.cli("monitor", "--once").stdout
            assert "budget 300.0 MiB, 200.0 MiB reserved" in monitor, monitor
            assert "reserves 200.0 MiB" in monitor, monitor
            assert "(waiting for memory" in monitor, monitor
        finally:
            _stop(waiter)
    finally:
        _stop(holder)


def test_brackets_in_a_command_are_shown_as_typed(sbx: SeqboxRunner) -> None:
    """A command's text is never read as terminal markup: ``[sys.argv]`` stays
    in ``logs`` and ``report`` (rich took ``[sys.argv]`` for a style tag and dropped it)."""
    res = sbx.run("--mem", "64M", "--", "python3", "-c", "import sys; print([sys.argv][0])")
    assert res.returncode == 0, res
    for view in (["logs", "-n", "1"], ["report"]):
        shown = sbx.cli(*view)
        assert shown.returncode == 0, shown
        assert "import sys; print([sys.argv][0])" in shown.stdout, shown.stdout
