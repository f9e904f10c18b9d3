"""What a crashed run leaves running: ``status`` shows it, ``clean`` ends it
and says what it killed, and removes every one of its cgroups or names what
it could not (issue 9 items 2 and 3)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from seqbox.project import project_key
from tests.capabilities import needs
from tests.helpers import TOKEN_ENV, SeqboxRunner, slack, wait_dead
from tests.helpers import crash_a_holder as _crash_a_holder

V1 = "/sys/fs/cgroup"


def test_status_shows_an_orphaned_tree_and_clean_says_what_it_killed(
    sbx: SeqboxRunner, backend: str, tmp_path: Path
) -> None:
    pid = _crash_a_holder(sbx, backend, tmp_path)
    status = sbx.cli("status")
    assert status.returncode == 0, status
    assert "nothing running" not in status.stdout, status
    line = next(line for line in status.stdout.splitlines() if line.startswith("orphaned"))
    assert "1 process " in line
    assert '"sleep 300"' in line
    assert "seqbox clean" in line  # what to do next
    doc = json.loads(sbx.cli("status", "--json").stdout)
    assert [(o["processes"], o["commands"]) for o in doc["orphaned"]] == [(1, ["sleep 300"])]
    cleaned = sbx.cli("clean")
    assert cleaned.returncode == 0, cleaned
    assert 'killed 1 process a crashed run left running: "sleep 300"' in cleaned.stdout, cleaned
    removed = "the processes recorded in" if backend == "poll" else "removed cgroup seqbox-"
    assert removed in cleaned.stdout
    assert wait_dead([pid]) == []
    assert not [line for line in sbx.cli("status").stdout.splitlines() if line.startswith("orphaned")]


def _dead_pid() -> int:
    for pid in range(32000, 1000, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free pid")


@needs("cgroup1", "root")
def test_clean_removes_every_hierarchys_cgroup_of_a_leftover(
    sbx: SeqboxRunner, project: Path, token: str
) -> None:
    """A crashed run's memory cgroup may sit under another login session's path
    than its pids cgroup: clean removes both, not one and then "nothing to clean"."""
    name = f"seqbox-{project_key(os.path.realpath(project))}-20200101T000000-{_dead_pid()}"
    other_session = Path(V1, "memory", f"h4-other-session-{token[:8]}")
    memory_dir = other_session / name
    pids_dir = Path(V1, "pids", name)
    sleeper = subprocess.Popen(["sleep", "300"], env={TOKEN_ENV: token, "PATH": os.environ["PATH"]})
    try:
        memory_dir.mkdir(parents=True)
        pids_dir.mkdir()
        for where in (memory_dir, pids_dir):
            (where / "cgroup.procs").write_text(str(sleeper.pid))
        first = sbx.cli("clean")
        assert first.returncode == 0, first
        assert f"removed cgroup {name}" in first.stdout, first
        assert not pids_dir.exists()
        assert not memory_dir.exists(), first
        assert sleeper.wait(timeout=10) == -9
        assert name not in sbx.cli("clean").stdout
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        for where in (memory_dir, pids_dir, other_session):
            for _ in range(50):
                try:
                    where.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def test_clean_shows_commands_as_a_person_writes_them(sbx: SeqboxRunner, backend: str) -> None:
    """A leftover's command line read from /proc was split at spaces:
    `"sh -c sleep 300 '&' sleep 300"`; it reads as it was typed."""
    proc = sbx.start("--", "sh", "-c", "sleep 300 & sleep 300", backend=backend)
    deadline = time.monotonic() + slack(15)
    while time.monotonic() < deadline:  # the shell and both sleeps
        doc = json.loads(sbx.cli("status", "--json").stdout)
        if any((run["procs"] or 0) >= 3 for lock in doc["locks"] for run in lock["running"]):
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=10)
    cleaned = sbx.cli("clean")
    assert cleaned.returncode == 0, cleaned
    assert "\"sh -c 'sleep 300 & sleep 300'\"" in cleaned.stdout, cleaned
    assert '"sleep 300"' in cleaned.stdout, cleaned
