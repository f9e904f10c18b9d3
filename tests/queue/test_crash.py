"""A supervisor SIGKILLed at a random moment (joining, making its sandbox,
parked, running, tearing down), with and without a run queued behind it: the
next command never starts while anything of the crashed tree lives, nothing of
that tree survives, and once idle no cgroup and no state file is left.

The crashed command marks itself once it runs (its environment after the
exec), so a command that execs late, after its supervisor is dead, is looked
for twice: when the next command has run, and after the killed supervisor is
reaped. The rounds run over both ways a command is parked before it may run:
in ``sh`` (the environment passes through sh unchanged) and in Python (an
environment whose ``PWD`` is not the command's directory)."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from seqbox.project import project_key
from seqbox.spawn import sh_keeps
from tests.helpers import SeqboxRunner, alive, environ_has, prog, seqbox_cgroups, slack

ROUNDS_FAST = 3
ROUNDS_SLOW = int(os.environ.get("SEQBOX_CRASH_ROUNDS", "10"))
PARKING = ("sh", "python")


def _marked(entry: bytes) -> list[int]:
    """Live processes whose environment holds ``entry``."""
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    return alive(pid for pid in pids if pid != os.getpid() and environ_has(pid, entry))


def _state_files(state: Path) -> list[str]:
    """What crashed runs left in the state directory (run logs are kept on purpose)."""
    files = (path.relative_to(state) for path in state.rglob("*") if not path.is_dir())
    return sorted(str(path) for path in files if path.parts[0] != "logs")


def _wait_for_place(lock_dir: Path) -> None:
    """Until the holder has a ticket or a slot in the queue."""
    deadline = time.monotonic() + slack(10)
    while time.monotonic() < deadline:
        try:
            if any(p.name.startswith(("t-", "slot-")) for p in lock_dir.iterdir()):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise AssertionError("the holder never joined the queue")


def _parking_env(sbx: SeqboxRunner, parking: str) -> dict[str, str]:
    """The environment that makes seqbox park the command in ``parking``."""
    project = os.path.realpath(sbx.project)
    extra = {"PWD": project if parking == "sh" else "/"}
    assert sh_keeps(sbx.env(extra), project) == (parking == "sh"), f"not parked in {parking}"
    return extra


def _crash_rounds(
    sbx: SeqboxRunner, backend: str, tmp_path: Path, rounds: int, waiter_first: bool, parking: str
) -> None:
    rng = random.Random(f"{backend}-{waiter_first}-{rounds}-{parking}")
    state = Path(os.environ["SEQBOX_STATE_DIR"])
    key = project_key(os.path.realpath(sbx.project))
    lock_dir = state / "projects" / key / "locks" / "default"
    key_cgroups = {path for path in seqbox_cgroups() if key in path}
    env = _parking_env(sbx, parking)
    for round_ in range(rounds):
        mark = f"SBX_CRASH={round_}-old"
        seen = tmp_path / f"seen-{round_}"
        pids = tmp_path / f"fam-{round_}"
        # the command marks its own tree (not seqbox, nor a parked command that never ran)
        family = prog("family", "--pids", pids, "--exit", "wait")
        holder = sbx.start(
            "--mem", "256M", "--", "sh", "-c", f'export {mark}; exec "$@"', "sh", *family,
            backend=backend, env=env,
        )  # fmt: skip
        checker = ["--", *prog("marked", "--entry", mark, "--out", seen)]
        waiter = None
        if waiter_first:  # queued behind the holder: start it once the holder has its place
            _wait_for_place(lock_dir)
            waiter = sbx.start(*checker, backend=backend, env=env)
        time.sleep(rng.uniform(0.0, 0.6))
        holder.send_signal(signal.SIGKILL)  # not reaped yet: a zombie until the round ends
        if waiter is None:
            waiter = sbx.start(*checker, backend=backend, env=env)
        out, err = waiter.communicate(timeout=slack(30))
        assert waiter.returncode == 0, (round_, out, err)
        beside = seen.read_text().split()
        assert beside == [], f"round {round_}: the next command started beside {beside}; {err!r}"
        survivors = _marked(mark.encode())
        assert survivors == [], f"round {round_}: {survivors} of the crashed tree survived"
        holder.wait(timeout=slack(10))
        # a command let go just before its supervisor died may exec only now
        late = _marked(mark.encode())
        assert late == [], f"round {round_}: {late} of the crashed tree ran after the next command"
        assert _started_before(pids, seen), f"round {round_}: the crashed command started after the next one"
        assert _state_files(state) == [], f"round {round_}: state left: {_state_files(state)}"
        left = {path for path in seqbox_cgroups() if key in path} - key_cgroups
        assert not left, f"round {round_}: cgroups left: {left}"


def _started_before(pids: Path, seen: Path) -> bool:
    """Whether the crashed command, if it ran at all, wrote its pids before
    the next command wrote what it saw (a late exec writes them after)."""
    try:
        ran = pids.stat().st_mtime_ns
    except FileNotFoundError:
        return True
    return ran <= seen.stat().st_mtime_ns


@pytest.mark.parametrize("parking", PARKING)
@pytest.mark.parametrize("waiter_first", [True, False], ids=["waiter-queued", "next-run-later"])
def test_crash_a_few_rounds(
    sbx: SeqboxRunner, backend: str, tmp_path: Path, waiter_first: bool, parking: str
) -> None:
    _crash_rounds(sbx, backend, tmp_path, ROUNDS_FAST, waiter_first, parking)


@pytest.mark.slow
@pytest.mark.vm_slow
@pytest.mark.parametrize("parking", PARKING)
@pytest.mark.parametrize("waiter_first", [True, False], ids=["waiter-queued", "next-run-later"])
def test_crash_many_rounds(
    sbx: SeqboxRunner, backend: str, tmp_path: Path, waiter_first: bool, parking: str
) -> None:
    _crash_rounds(sbx, backend, tmp_path, ROUNDS_SLOW, waiter_first, parking)
