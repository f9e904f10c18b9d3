"""What seqbox says: one line each, no internal numbers, what to do next
(issue 9 items 6, 8, 9, 11, 12, 13)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from seqbox.describe import command_line, describe_command
from tests.backends.test_fallback import _run_as_nobody
from tests.capabilities import needs
from tests.helpers import SeqboxRunner, prog, slack, wait_for_file


def test_plain_seqbox_prints_the_help_and_nothing_else(sbx: SeqboxRunner) -> None:
    res = sbx.run(cli=True)
    assert res.returncode == 0, res
    assert "Usage: seqbox" in res.stdout
    assert "logs" in res.stdout
    assert res.stderr == ""


def test_help_shows_flags_without_a_type(sbx: SeqboxRunner) -> None:
    for command in ("status", "doctor", "logs", "kill"):
        res = sbx.cli(command, "--help")
        assert res.returncode == 0, res
        assert "<bool>" not in res.stdout, res
        assert "--help" in res.stdout


def test_status_counts_one_process_in_the_singular(sbx: SeqboxRunner, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = sbx.start("--", "sh", "-c", f"echo x > {ready}; exec sleep 30")
    wait_for_file(ready)
    res = sbx.cli("status")
    sbx.cli("kill")
    proc.wait(timeout=slack(10))
    assert "1 process," in res.stdout, res
    assert "1 processes" not in res.stdout


def test_verbose_names_no_ticket_and_ends_with_a_summary_line(sbx: SeqboxRunner) -> None:
    res = sbx.run("-v", "--mem", "64M", "--", "sh", "-c", "exit 2")
    assert res.returncode == 2, res
    assert not re.search(r"number \d{6,}", res.stderr), res
    last = res.seqbox_lines()[-1]
    assert last.startswith("seqbox: done: failed, exit 2"), res
    assert "of 64.0 MiB" in last
    assert "seqbox report" in last  # where to look next


def test_waiting_line_names_every_holder_with_slots(sbx: SeqboxRunner, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    holders = [
        sbx.start("--slots", "2", "--", "sh", "-c", f"echo h >> {marks}; sleep 2; echo holder-{i}")
        for i in (1, 2)
    ]
    wait_for_file(marks, lines=2)
    res = sbx.run("--slots", "2", "--", "true")
    for proc in holders:
        assert proc.wait(timeout=slack(10)) == 0
    assert res.returncode == 0, res
    waiting = next(line for line in res.seqbox_lines() if "waiting for lock" in line)
    for proc in holders:
        assert f"pid {proc.pid} " in waiting, waiting


#: an API program: runs "python3 -c SCRIPT NAME" through seqbox.run (sync) or
#: seqbox.run_async, as examples/agents.py does; the script waits for $RELEASE
API_PROGRAM = """
import asyncio, os, sys, seqbox
SCRIPT = "import os, time\\nwhile not os.path.exists(os.environ['RELEASE']):\\n    time.sleep(0.02)\\n"
command = [sys.executable, "-c", SCRIPT, sys.argv[2]]
env = {"RELEASE": sys.argv[3]}
if sys.argv[1] == "async":
    result = asyncio.run(seqbox.run_async(command, env=env))
else:
    result = seqbox.run(command, env=env)
sys.exit(0 if result.ok else 1)
"""


def _status_until(
    sbx: SeqboxRunner, running: int, waiting: int, procs: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    """The project's status once one lock has ``running`` holders and ``waiting``
    waiters; meanwhile none of ``procs`` may end."""
    deadline = time.monotonic() + slack(20)
    while True:
        for proc in procs:
            assert proc.poll() is None, (proc.args, proc.communicate())
        data: dict[str, Any] = json.loads(sbx.cli("status", "--json").stdout)
        locks = data["locks"]
        if locks and (len(locks[0]["running"]), len(locks[0]["waiting"])) == (running, waiting):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.05)


@pytest.mark.slow
def test_api_runs_are_named_by_their_command_not_the_interpreter(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """An API run of "python3 -c SCRIPT agent-0" is named so everywhere (its
    arguments too, on one line), not by the interpreter's path: a waiting line
    once read "/root/.venv/bin/python3 -c '" and broke off into a second line."""
    release = tmp_path / "release"
    api = []
    for mode, name in (("sync", "agent-0"), ("async", "agent-1")):
        proc = subprocess.Popen(
            [sys.executable, "-c", API_PROGRAM, mode, name, str(release)],
            cwd=sbx.project, env=sbx.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        sbx.started.append(proc)
        api.append(proc)
        _status_until(sbx, 1, len(api) - 1, api)
    waiter = sbx.start("--", "true")
    data = _status_until(sbx, 1, 2, [*api, waiter])
    lock = data["locks"][0]
    pids = [lock["running"][0]["pid"], *(w["pid"] for w in lock["waiting"])]
    status = sbx.cli("status").stdout
    monitor = sbx.cli("monitor", "--once").stdout
    release.write_text("go")
    err = waiter.communicate(timeout=slack(20))[1].decode()
    assert waiter.returncode == 0, err
    api_errs = [proc.communicate(timeout=slack(20))[1].decode() for proc in api]
    assert [proc.returncode for proc in api] == [0, 0], api_errs
    logs = sbx.cli("logs").stdout

    python = re.escape(os.path.basename(sys.executable))
    agent = [rf'"{python} -c \'import os[^"]*\' agent-{i}"' for i in (0, 1)]
    # the waiting lines: of the API waiter (its own stderr) and of a CLI run behind it
    assert api_errs[0] == "", api_errs[0]
    (api_line,) = api_errs[1].splitlines()
    assert re.fullmatch(
        rf'seqbox: waiting for lock "default": 1 ahead; held by pid {pids[0]} {agent[0]} for \S+', api_line
    ), api_line
    (cli_line,) = err.splitlines()
    assert re.fullmatch(
        rf'seqbox: waiting for lock "default": 2 ahead; held by pid {pids[0]} {agent[0]} for \S+', cli_line
    ), cli_line
    # status and monitor name the holder and the waiters, each on its line, whole on a pipe
    whole = [rf'"{python} -c "import os, time while .*" agent-{i}" in \.' for i in (0, 1)]
    lines = status.splitlines()
    assert len(lines) == 4, status
    assert re.match(rf"  running  pid {pids[0]} {whole[0]} for ", lines[1]), status
    assert re.match(rf"  waiting  1\. pid {pids[1]} {whole[1]} for ", lines[2]), status
    assert re.match(rf'  waiting  2\. pid {pids[2]} "true" in \. for ', lines[3]), status
    assert re.search(whole[0], monitor), monitor
    assert re.search(whole[1], monitor), monitor
    # the runs table: the program by its name
    rows = [line.split(maxsplit=4)[4] for line in logs.splitlines()[1:]]
    assert rows[0].startswith("true "), logs
    assert re.match(rf"{python} -c ", rows[1]), logs
    assert re.match(rf"{python} -c ", rows[2]), logs
    for text in (status, monitor, logs, cli_line, api_line):
        assert os.path.dirname(sys.executable) not in text, text


def test_a_cancelled_waiter_says_so(sbx: SeqboxRunner, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    holder = sbx.start("--", "sh", "-c", f"echo x > {ready}; exec sleep 30")
    wait_for_file(ready)
    waiter = sbx.start("--", "echo", "never")
    for _ in range(100):
        if "waiting" in sbx.cli("status").stdout:
            break
    killed = sbx.cli("kill", "--all")
    assert killed.returncode == 0, killed
    out, err = waiter.communicate(timeout=slack(10))
    holder.wait(timeout=slack(10))
    assert waiter.returncode == 143
    assert out == b""
    lines = [line for line in err.decode().splitlines() if line.startswith("seqbox:")]
    assert lines[-1].startswith("seqbox: cancelled by 'seqbox kill --all'"), err
    rows = [json.loads(line) for line in sbx.cli("logs", "--json").stdout.splitlines()]
    waiter_row = next(row for row in rows if row["command"] == ["echo", "never"])
    assert (waiter_row["status"], waiter_row["exit_code"]) == ("cancelled", 143)


@needs("root", "unprivileged")
def test_poll_fallback_note_is_short_and_said_once(nobody_home: Path, token: str, leak_guard: None) -> None:
    first = _run_as_nobody(nobody_home, token, "run", "--", "sh", "-c", "exit 3")
    second = _run_as_nobody(nobody_home, token, "run", "--", "sh", "-c", "exit 3")
    assert (first.returncode, second.returncode) == (3, 3)
    assert len(first.seqbox_lines()) == 1, first
    assert "poll" in first.seqbox_lines()[0]
    assert len(first.seqbox_lines()[0]) < 120, first
    assert "seqbox doctor" in first.seqbox_lines()[0]
    assert second.seqbox_lines() == [], second
    doctor = _run_as_nobody(nobody_home, token, "doctor", "--json")
    assert "psutil" not in json.loads(doctor.stdout)["why"]


def test_memory_kill_message_is_one_line(sbx: SeqboxRunner) -> None:
    res = sbx.run("--mem", "64M", "--warn-at", "0", "--", *prog("hog", "--chunk", "16"))
    assert res.returncode == 137, res
    assert len(res.seqbox_lines()) == 1, res
    assert res.stderr.count("\n") == 1, res


def test_refused_forks_are_named(sbx: SeqboxRunner, cgroup_backend: str) -> None:
    """Issue 9 item 7: the command's own 'Cannot fork' is explained by seqbox's --pids."""
    script = "i=0; while [ $i -lt 8 ]; do i=$((i+1)); sleep 0.3 & done; wait"
    res = sbx.run("--pids", "5", "--", "sh", "-c", script, backend=cgroup_backend)
    notes = [line for line in res.seqbox_lines() if "refused" in line]
    assert len(notes) == 1, res
    assert re.match(r"seqbox: --pids 5 refused \d+ forks? ", notes[0]), res
    assert "raise --pids" in notes[0]


def test_nested_runs_warn_once(sbx: SeqboxRunner) -> None:
    """Issue 9 item 10: the inner run's tree is the outer's, against the same
    limit: one warning, not one per level."""
    inner = sbx.argv(["run", "--", *prog("hog", "--total", "120", "--chunk", "40", "--hold", "1.2")])
    res = sbx.run("--mem", "200M", "--", *inner, timeout=60, env={"SEQBOX_WARN_AT": "0.5"})
    assert res.returncode == 0, res
    warnings = [line for line in res.seqbox_lines() if "memory at" in line]
    assert len(warnings) == 1, res


def _tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-S", socket, *args], check=False, capture_output=True, text=True).stdout


def test_messages_start_on_a_fresh_line_on_a_terminal(
    sbx: SeqboxRunner, project: Path, tmp_path: Path
) -> None:
    """Issue 9 item 10: the command left the cursor mid-line; seqbox's warning
    still starts at the beginning of a line (and the dots stay)."""
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux")
    done = tmp_path / "done"
    script = (
        f"printf .........; {shlex.join(prog('hog', '--total', '100', '--chunk', '100', '--hold', '1.5'))}"
    )
    command = shlex.join(sbx.argv(["run", "--mem", "128M", "--warn-at", "0.5", "--", "sh", "-c", script]))
    socket = str(tmp_path / "tmux.sock")
    subprocess.run(
        ["tmux", "-S", socket, "new-session", "-d", "-x", "120", "-y", "20", "-s", "t", "sh", "-c",
         f"cd {shlex.quote(str(project))} && {command}; echo exit=$? > {done}; sleep 30"],
        env=sbx.env(),
        check=True,
    )  # fmt: skip
    try:
        wait_for_file(done, timeout=30)
        time.sleep(0.2)
        screen = _tmux(socket, "capture-pane", "-p", "-t", "t")
    finally:
        _tmux(socket, "kill-server")
    assert done.read_text().strip() == "exit=0", screen
    lines = screen.splitlines()
    assert any(line.startswith(".........") for line in lines), screen
    assert any(line.startswith("seqbox: warning: memory at") for line in lines), screen


def test_commands_are_quoted_as_a_person_writes_them() -> None:
    """Double quotes where a word holds single quotes and nothing a shell
    expands inside double quotes; every form still reads back as the argv."""
    assert describe_command(["/usr/bin/python3", "-c", "print('ok')"]) == "python3 -c \"print('ok')\""
    for argv in (["echo", "it's"], ["echo", "a'$b"], ["echo", "a\"b'c"], ["echo", "a'`b`"], ["x", "", "a b"]):
        assert shlex.split(command_line(argv)) == argv, command_line(argv)


def _printf_then_hog(text: str, mib: int) -> list[str]:
    """A command that prints TEXT (perhaps leaving its line unfinished, as pytest's
    dots do), then holds MIB mebibytes for 1.5 s."""
    hog = shlex.join(prog("hog", "--total", mib, "--chunk", mib, "--hold", "1.5"))
    return ["sh", "-c", f"printf {shlex.quote(text)}; exec {hog}"]


def _memory_warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if "seqbox: warning: memory at" in line]


@pytest.mark.slow
def test_the_default_warning_is_at_80_percent(sbx: SeqboxRunner) -> None:
    """--warn-at 0.5 warned on every healthy run; the default is 0.8."""
    healthy = sbx.run("--mem", "256M", "--", *prog("hog", "--total", "150", "--chunk", "50", "--hold", "1.5"))
    assert healthy.returncode == 0, healthy
    assert _memory_warnings(healthy.stderr) == [], healthy  # about 62 % of the limit
    near = sbx.run("--mem", "256M", "--", *prog("hog", "--total", "215", "--chunk", "43", "--hold", "1.5"))
    assert near.returncode == 0, near
    assert len(_memory_warnings(near.stderr)) == 1, near  # about 88 %


def test_the_warning_starts_its_own_line_in_a_piped_log(sbx: SeqboxRunner) -> None:
    """stdout and stderr into one pipe (a CI log): the command's unfinished line is
    not glued to seqbox's warning."""
    proc = sbx.start(
        "--mem", "128M", "--warn-at", "0.5", "--", *_printf_then_hog("........", 80), stderr=subprocess.STDOUT
    )
    out, _ = proc.communicate(timeout=slack(60))
    text = out.decode()
    assert proc.returncode == 0, text
    assert "........\n" in text, text
    assert len(_memory_warnings(text)) == 1, text
    assert _memory_warnings(text)[0].startswith("seqbox: warning: memory at"), text


@pytest.mark.slow
@pytest.mark.parametrize("printed", ["........", "done\n"], ids=["mid-line", "whole-line"])
def test_the_warning_starts_its_own_line_in_a_log_file(
    sbx: SeqboxRunner, tmp_path: Path, printed: str
) -> None:
    """stdout and stderr into one file (> log 2>&1): seqbox reads the file's last
    byte, so the warning starts a line of its own, without an empty line before it."""
    log = tmp_path / "ci.log"
    with open(log, "wb") as f:  # write-only, as a shell's > opens it
        proc = sbx.start(
            "--mem",
            "128M",
            "--warn-at",
            "0.5",
            "--",
            *_printf_then_hog(printed, 80),
            stdout=f.fileno(),
            stderr=f.fileno(),
        )
        proc.communicate(timeout=slack(60))
    text = log.read_text()
    assert proc.returncode == 0, text
    assert text.startswith(printed.rstrip("\n") + "\nseqbox: warning: memory at"), text
    assert "\n\n" not in text, text


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--", "no\nsuch"], "command not found: no\\nsuch"),
        (["--log", "/nonexistent/a\nb", "--", "true"], "cannot write the log /nonexistent/a\\nb"),
        (["--cwd", "/no\ndir\r", "--", "true"], "not a directory: /no\\ndir\\r"),
        (["--", "bell\x07\x1b[31m"], "command not found: bell\\x07\\x1b[31m"),
    ],
)
def test_what_a_user_gave_stays_on_the_one_line(sbx: SeqboxRunner, args: list[str], shown: str) -> None:
    """A line break (or a terminal control) in a command's name or a path is
    shown escaped: seqbox's message stays one line, and cannot move the cursor."""
    res = sbx.run(*args)
    assert res.returncode in (0, 125, 127), res
    assert res.stderr.count("\n") == 1, res
    assert res.stderr.startswith("seqbox: "), res
    assert shown in res.stderr, res
