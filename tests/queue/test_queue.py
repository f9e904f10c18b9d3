"""The project queue: first come first served, slots,
named locks, --no-lock, --wait-timeout, no stale state after SIGKILL, nested
runs, the git guard, status / kill / clean, crash leftovers, the state dir.

Waiters are staggered by what the queue shows (their ticket is in it), never by
sleeping, so a loaded machine cannot reorder arrivals."""

from __future__ import annotations

import json
import os
import random
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from seqbox.errors import StateError
from seqbox.housekeeping import all_projects, project_locks
from seqbox.project import project_key
from seqbox.queue import LockDir, view
from tests.capabilities import needs
from tests.helpers import SeqboxRunner, ours_left, slack, wait_dead, wait_for_file
from tests.helpers import crash_a_holder as _crash_a_holder

GATE_WAIT = 'while [ ! -e "$1" ]; do sleep 0.01; done'


def _queue(project: Path, lock: str = "default") -> tuple[int, int]:
    """(holders, waiters) of a lock now, as seqbox itself sees them."""
    try:
        lockdir = LockDir(project_key(os.path.realpath(project)), lock, create=False)
    except StateError:
        return 0, 0
    try:
        state = view(lockdir)
        return len(state.holders), len(state.waiters)
    finally:
        lockdir.close()


def _wait_queue(
    project: Path, holders: int, waiters: int, lock: str = "default", timeout: float = 20
) -> None:
    deadline = time.monotonic() + slack(timeout)
    seen = _queue(project, lock)
    while seen != (holders, waiters):
        if time.monotonic() > deadline:
            raise AssertionError(f"queue of {lock!r} is {seen}, expected {(holders, waiters)}")
        time.sleep(0.01)
        seen = _queue(project, lock)


def _holder(sbx: SeqboxRunner, gate: Path, *extra: str, lock: str = "default") -> subprocess.Popen[bytes]:
    """A run that holds the lock until ``gate`` exists."""
    proc = sbx.start("--lock", lock, *extra, "--", "sh", "-c", GATE_WAIT, "sh", str(gate))
    _wait_queue(sbx.project, 1, 0, lock)
    return proc


def _finish(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    proc.wait(timeout=slack(timeout))
    return proc.returncode


def test_first_come_first_served(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """8 waiters, each in the queue before the next arrives, run in that order,
    one at a time."""
    gate, record = tmp_path / "gate", tmp_path / "record"
    holder = _holder(sbx, gate)
    job = 'echo "start $1" >> "$2"; sleep 0.05; echo "end $1" >> "$2"'
    waiters = []
    for i in range(8):
        waiters.append(sbx.start("--", "sh", "-c", job, "sh", str(i), str(record)))
        _wait_queue(sbx.project, 1, i + 1)
    gate.touch()
    assert _finish(holder) == 0
    assert [_finish(w) for w in waiters] == [0] * 8
    events = record.read_text().split("\n")[:-1]
    assert events == [f"{kind} {i}" for i in range(8) for kind in ("start", "end")], events


def test_slots_let_n_run_at_once(sbx: SeqboxRunner, tmp_path: Path) -> None:
    record = tmp_path / "record"
    job = 'echo "start $(date +%s%N)" >> "$1"; sleep 0.4; echo "end $(date +%s%N)" >> "$1"'
    procs = [sbx.start("--slots", "2", "--", "sh", "-c", job, "sh", str(record)) for _ in range(4)]
    assert [_finish(p) for p in procs] == [0] * 4
    running = peak = 0
    for line in sorted(record.read_text().splitlines(), key=lambda line: int(line.split()[1])):
        running += 1 if line.startswith("start") else -1
        peak = max(peak, running)
    assert peak == 2


def test_a_slot_freed_by_sigkill_is_taken_at_once(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """With --slots 2 the head waits for either holder to leave: one killed by
    SIGKILL (it rings no bell) frees its slot at once (its pidfd wakes the head)."""
    gate = tmp_path / "gate"
    holders = [sbx.start("--slots", "2", "--", "sh", "-c", GATE_WAIT, "sh", str(gate)) for _ in range(2)]
    _wait_queue(sbx.project, 2, 0)
    waiter = sbx.start("--slots", "2", "--", "true")
    _wait_queue(sbx.project, 2, 1)
    killed = time.monotonic()
    os.kill(holders[1].pid, signal.SIGKILL)
    assert _finish(waiter) == 0
    assert time.monotonic() - killed < slack(2)
    gate.touch()
    assert _finish(holders[0]) == 0
    holders[1].wait()


def test_lock_names_are_independent_queues(sbx: SeqboxRunner, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    holder = _holder(sbx, gate, lock="alpha")
    res = sbx.run("--lock", "beta", "--wait-timeout", "10", "--json", "--", "echo", "beta ran")
    assert res.returncode == 0, res
    assert res.json()["lock"] == "beta"
    gate.touch()
    assert _finish(holder) == 0


def test_no_lock_skips_the_queue(sbx: SeqboxRunner, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    holder = _holder(sbx, gate)
    res = sbx.run("--no-lock", "--json", "--", "echo", "ran")
    assert res.returncode == 0, res
    assert res.json()["lock"] is None
    assert res.json()["lock_wait_s"] == 0
    gate.touch()
    assert _finish(holder) == 0


def test_wait_timeout_gives_up_with_75(sbx: SeqboxRunner, tmp_path: Path) -> None:
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    holder = _holder(sbx, gate)
    res = sbx.run("--wait-timeout", "0.5", "--", "touch", str(ran))
    assert res.returncode == 75, res
    assert "lock" in res.seqbox_lines()[-1]
    assert not ran.exists()
    assert _queue(sbx.project) == (1, 0)  # the one that gave up left no ticket behind
    gate.touch()
    assert _finish(holder) == 0


def _read_until(proc: subprocess.Popen[bytes], text: str, timeout: float = 20) -> str:
    """Read the process's stderr until ``text`` shows up; return what was read."""
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + slack(timeout)
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stderr], [], [], left)[0]:
            raise AssertionError(f"{text!r} not on stderr within {timeout}s: {seen!r}")
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            raise AssertionError(f"stderr closed before {text!r}: {seen!r}")
        seen += chunk
    return seen.decode()


def test_waiting_line_names_the_holder(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """Off a terminal the line is printed at once (then every 30 s)."""
    gate = tmp_path / "gate"
    holder = _holder(sbx, gate)
    waiter = sbx.start("--", "true")
    line = _read_until(waiter, "\n", timeout=20)
    assert line.startswith('seqbox: waiting for lock "default": 1 ahead; held by pid '), line
    assert f"held by pid {holder.pid} " in line, line
    assert '"sh -c ' in line, line
    gate.touch()
    assert _finish(holder) == 0
    assert _finish(waiter) == 0


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_the_queue_stuck(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """20 rounds: a holder and two waiters; the holder's or a waiter's seqbox is
    SIGKILLed at a random moment. The others still run, and afterwards the queue
    is empty and a new run gets through at once."""
    rng = random.Random(1234)
    job = "sleep $1"
    for round_ in range(20):
        procs = [sbx.start("--", "sh", "-c", job, "sh", str(rng.choice((0.05, 0.1, 0.2)))) for _ in range(3)]
        time.sleep(rng.uniform(0.0, 0.4))
        victim = rng.choice(procs)
        victim.kill()
        for proc in procs:
            proc.wait(timeout=slack(30))
        survivors = [p for p in procs if p is not victim]
        assert all(p.returncode == 0 for p in survivors), (round_, [p.returncode for p in procs])
    _wait_queue(sbx.project, 0, 0, timeout=5)
    res = sbx.run("--wait-timeout", "5", "--", "true")
    assert res.returncode == 0, res


def test_the_command_does_not_inherit_the_lock(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """The lock's descriptors are close-on-exec: no process of the command (a
    daemon it leaves, say) can keep holding the lock."""
    state = os.environ["SEQBOX_STATE_DIR"]
    listing = tmp_path / "fds"
    script = 'for fd in /proc/$$/fd/*; do readlink "$fd" || true; done > "$1"'
    res = sbx.run("--", "sh", "-c", script, "sh", str(listing))
    assert res.returncode == 0, res
    targets = listing.read_text().splitlines()
    assert targets, "no descriptors listed"
    assert not [t for t in targets if t.startswith(state)], targets


def test_nested_run_does_not_deadlock(sbx: SeqboxRunner) -> None:
    res = sbx.run("--", *sbx.argv(["run", "--", "echo", "hi"]), timeout=30)
    assert res.returncode == 0, res
    assert res.stdout == "hi\n"


def test_nested_limits_never_exceed_the_parent(sbx: SeqboxRunner) -> None:
    inner = sbx.argv(["run", "--json", "--mem", "1G", "--", "true"])
    res = sbx.run("--mem", "300M", "--", *inner, timeout=30)
    assert res.returncode == 0, res
    assert json.loads(res.stdout)["mem_limit_bytes"] == 300 << 20


def test_an_outsider_with_a_copied_environment_still_queues(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """The bypass goes to real descendants only: a process that is not one,
    even with the holder's whole environment, waits its turn."""
    gate, env_file = tmp_path / "gate", tmp_path / "env"
    script = f'env -0 > "{env_file}"; {GATE_WAIT}'
    holder = sbx.start("--", "sh", "-c", script, "sh", str(gate))
    _wait_queue(sbx.project, 1, 0)
    wait_for_file(env_file, lines=0)
    time.sleep(0.1)
    copied = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
    res = sbx.run("--wait-timeout", "0.5", "--", "true", env=copied)
    assert res.returncode == 75, res
    gate.touch()
    assert _finish(holder) == 0


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, timeout=30)


def test_git_commit_whose_hook_runs_seqbox_completes(sbx: SeqboxRunner, project: Path) -> None:
    """``seqbox run -- git commit`` holds the lock while git runs its pre-commit
    hook, and the hook calls ``seqbox run`` again: a nested run, no deadlock."""
    _git(project, "init", "-q")
    (project / "file.txt").write_text("hello\n")
    _git(project, "add", "file.txt")
    hook = project / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\nexec {' '.join(sbx.argv(['run', '--', 'true']))}\n")
    hook.chmod(0o755)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    res = sbx.run("--", "git", "commit", "-q", "-m", "first", env=env, timeout=60)
    assert res.returncode == 0, res
    log = subprocess.run(["git", "log", "--oneline"], cwd=project, capture_output=True, text=True, check=True)
    assert "first" in log.stdout


def test_git_guard_waits_for_index_lock_to_go(sbx: SeqboxRunner, project: Path) -> None:
    _git(project, "init", "-q")
    lock = project / ".git" / "index.lock"
    lock.touch()
    proc = sbx.start("--json", "--", "git", "status", "--short")
    time.sleep(0.5)
    assert proc.poll() is None, "git ran while index.lock existed"
    lock.unlink()
    assert _finish(proc) == 0


@pytest.mark.slow
def test_git_guard_gives_up_naming_the_file_and_never_deletes_it(sbx: SeqboxRunner, project: Path) -> None:
    _git(project, "init", "-q")
    lock = project / ".git" / "index.lock"
    lock.touch()
    res = sbx.run("--", "git", "status", timeout=30)
    assert res.returncode == 125, res
    assert str(lock) in res.seqbox_lines()[-1], res  # after a note saying what it waits for
    assert "Traceback" not in res.stderr
    assert res.duration >= 9.5
    assert lock.exists()


def test_git_guard_does_not_apply_to_nested_runs(sbx: SeqboxRunner, project: Path) -> None:
    """Inside a run (a hook of the git commit that holds index.lock), git is not held up."""
    _git(project, "init", "-q")
    (project / ".git" / "index.lock").touch()
    inner = sbx.argv(["run", "--", "git", "rev-parse", "--git-dir"])
    res = sbx.run("--", *inner, timeout=30)  # the outer command is not git: no guard
    assert res.returncode == 0, res
    assert res.duration < slack(8), res


def test_status_kill_and_kill_all(sbx: SeqboxRunner, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    holder = _holder(sbx, gate)
    waiter = sbx.start("--", "true")
    _wait_queue(sbx.project, 1, 1)
    status = sbx.cli("status", "--json")
    assert status.returncode == 0, status
    locks = status.json()["locks"]
    assert isinstance(locks, list)
    (entry,) = locks
    assert entry["lock"] == "default"
    (running,) = entry["running"]
    assert running["pid"] == holder.pid
    assert running["command"][:2] == ["sh", "-c"]
    assert running["backend"] in ("cgroup2", "cgroup1", "poll")
    assert isinstance(running["mem_bytes"], int)
    assert running["procs"] >= 1
    (waiting,) = entry["waiting"]
    assert waiting["position"] == 1
    assert waiting["pid"] == waiter.pid
    text = sbx.cli("status")
    assert f"pid {holder.pid}" in text.stdout
    assert f"pid {waiter.pid}" in text.stdout

    killed = sbx.cli("kill", "--all")
    assert killed.returncode == 0, killed
    assert _finish(waiter) == 143  # cancelled: it never started
    assert _finish(holder) == 137
    assert sbx.cli("kill").returncode == 1  # nothing left to kill
    assert _queue(sbx.project) == (0, 0)


def test_kill_without_all_lets_the_next_one_start(sbx: SeqboxRunner, tmp_path: Path) -> None:
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    holder = _holder(sbx, gate)
    waiter = sbx.start("--", "touch", str(ran))
    _wait_queue(sbx.project, 1, 1)
    assert sbx.cli("kill").returncode == 0
    assert _finish(holder) == 137
    assert _finish(waiter) == 0
    assert ran.exists()


def test_clean_removes_a_crashed_runs_cgroups(sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path) -> None:
    pid = _crash_a_holder(sbx, cgroup_backend, tmp_path)
    res = sbx.cli("clean")
    assert res.returncode == 0, res
    assert "removed cgroup" in res.stdout, res
    assert wait_dead([pid]) == []
    assert ours_left(sbx) == []


def test_the_next_run_removes_a_crashed_runs_cgroups(
    sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path
) -> None:
    pid = _crash_a_holder(sbx, cgroup_backend, tmp_path)
    res = sbx.run("--", "true", backend=cgroup_backend)
    assert res.returncode == 0, res
    assert wait_dead([pid]) == []


def test_state_dir_is_private(sbx: SeqboxRunner, tmp_path: Path) -> None:
    res = sbx.run("--", "true")
    assert res.returncode == 0, res
    state = Path(os.environ["SEQBOX_STATE_DIR"])
    assert state.is_dir()
    assert oct(state.stat().st_mode & 0o777) == oct(0o700)


def test_a_planted_symlink_for_the_state_dir_is_refused(sbx: SeqboxRunner, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    Path(os.environ["SEQBOX_STATE_DIR"]).symlink_to(target)
    res = sbx.run("--", "true")
    assert res.returncode == 125, res
    assert "symlink" in res.one_line()
    assert list(target.iterdir()) == []


def test_no_state_is_left_after_runs(sbx: SeqboxRunner) -> None:
    for _ in range(3):
        assert sbx.run("--", "true").returncode == 0
    state = Path(os.environ["SEQBOX_STATE_DIR"])
    assert [p.name for p in state.iterdir() if p.name != "logs"] == []  # run logs are kept on purpose


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=needs("sigint")), signal.SIGTERM])
def test_a_waiter_interrupted_leaves_no_ticket(
    sbx: SeqboxRunner, tmp_path: Path, sig: signal.Signals
) -> None:
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    holder = _holder(sbx, gate)
    waiter = sbx.start("--", "touch", str(ran))
    _wait_queue(sbx.project, 1, 1)
    waiter.send_signal(sig)
    assert _finish(waiter) == 128 + sig
    _wait_queue(sbx.project, 1, 0)
    gate.touch()
    assert _finish(holder) == 0
    assert not ran.exists()


def test_looking_at_a_lock_that_does_not_exist_leaks_no_descriptor(tmp_path: Path) -> None:
    """A missing lock directory (``create=False``, as status and the tests look
    while a run starts) closes every directory it opened on the way: a loop
    that waits for a lock to appear must not run out of descriptors."""
    environ = {"XDG_RUNTIME_DIR": str(tmp_path)}
    (tmp_path / "seqbox" / "projects" / "k" / "locks").mkdir(parents=True, mode=0o700)
    (tmp_path / "seqbox").chmod(0o700)
    before = len(os.listdir("/proc/self/fd"))
    for key in ("missing", "k"):  # the first part missing; the last part missing
        for _ in range(50):
            with pytest.raises(StateError):
                LockDir(key, "default", environ, create=False)
    assert len(os.listdir("/proc/self/fd")) == before


def test_listing_and_opening_walk_the_state_dir_alike(tmp_path: Path) -> None:
    """Listing the state (``all_projects``, ``project_locks``: status, clean) and
    opening a lock walk it the same way (state.open_path): a missing part is
    nothing there, a planted symlink is refused in the same words, and no
    descriptor opened on the way stays open."""
    environ = {"XDG_RUNTIME_DIR": str(tmp_path)}
    (tmp_path / "seqbox" / "projects" / "k").mkdir(parents=True, mode=0o700)
    (tmp_path / "seqbox").chmod(0o700)
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "seqbox" / "projects" / "k" / "locks").symlink_to(victim)
    refusal = re.escape("refusing to use <state>/projects/k/locks: it is a symlink or not a directory")
    before = len(os.listdir("/proc/self/fd"))
    assert all_projects(environ) == ["k"]
    assert list(project_locks("missing", environ)) == []
    with pytest.raises(StateError, match=refusal):
        list(project_locks("k", environ))
    for create in (False, True):
        with pytest.raises(StateError, match=refusal):
            LockDir("k", "default", environ, create=create)
    assert len(os.listdir("/proc/self/fd")) == before
    assert list(victim.iterdir()) == []
