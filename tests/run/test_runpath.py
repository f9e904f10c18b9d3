"""The run path's pieces on canned inputs: the deadline, the limits from
options, the summary from outcomes, the policy of a lock, the free turn."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from seqbox import policies
from seqbox.admission import Gate
from seqbox.admit import nested_limits
from seqbox.attempts import should_retry
from seqbox.config import resolve
from seqbox.deadline import Alarm, Deadline
from seqbox.finish import summarize
from seqbox.limits import Limits
from seqbox.summary import FIELDS
from seqbox.supervise import Outcome
from seqbox.turn import FreeTurn

MIB = 1 << 20


def test_a_deadline_does_not_count_paused_time() -> None:
    deadline = Deadline(10.0, start=100.0)
    assert deadline.at == 110.0
    assert not deadline.expired(109.9)
    assert deadline.expired(110.0)
    deadline.pause(now=105.0)
    assert deadline.at is None
    assert not deadline.expired(1000.0)
    deadline.pause(now=106.0)  # a second pause changes nothing
    deadline.resume(now=108.0)
    assert deadline.frozen_s == 3.0
    assert deadline.at == 113.0
    deadline.resume(now=200.0)  # not paused: nothing
    assert deadline.frozen_s == 3.0


def test_no_limit_never_expires() -> None:
    assert Deadline(None, start=0.0).at is None
    assert not Deadline(0, start=0.0).expired(1e9)  # 0: no limit, as --timeout 0


def test_an_alarm_is_due_once() -> None:
    alarm = Alarm()
    assert not alarm.due(5.0)
    alarm.set_in(2.0, now=1.0)
    assert not alarm.due(2.9)
    assert alarm.due(3.0)
    assert not alarm.due(4.0)


def test_limits_from_options_and_as_recorded(tmp_path: Any) -> None:
    options = resolve({"mem": "64M", "pids": "10", "timeout": "5s", "retry": "2"}, str(tmp_path), {})
    limits = Limits.from_options(options)
    assert (limits.mem, limits.pids, limits.timeout, limits.warn_at) == (64 * MIB, 10, 5.0, 0.8)
    record = limits.record(options.retry)
    assert record == {"mem": 64 * MIB, "mem_high": None, "warn_at": 0.8, "pids": 10, "cpus": None,
                      "timeout": 5.0, "grace": 10.0, "signal": 15, "retry": 2}  # fmt: skip


def test_a_nested_run_leaves_the_warning_to_the_enclosing_one() -> None:
    inner = nested_limits(Limits(mem=100 * MIB, warn_at=0.5), {"pid": 1, "mem": 64 * MIB, "warn_at": 0.5})
    assert (inner.mem, inner.warn_at, inner.mem_from_enclosing) == (64 * MIB, None, True)
    own = nested_limits(Limits(mem=32 * MIB, warn_at=0.5), {"pid": 1, "mem": 64 * MIB, "warn_at": 0.5})
    assert (own.mem, own.warn_at) == (32 * MIB, 0.5)


def test_the_summary_is_made_from_the_outcomes() -> None:
    run: Any = SimpleNamespace(argv=["x"], run_id="r1", log=None)
    admission: Any = SimpleNamespace(
        limits=Limits(mem=MIB), lock="default", waited=0.12345, reserved=(MIB, 8 * MIB)
    )
    outcomes = [
        Outcome("failed", 1, wall_s=1.0, cpu_s=0.5, peak_mem_bytes=300, procs_peak=3, frozen_s=0.25),
        Outcome("ok", 0, wall_s=2.0, cpu_s=None, peak_mem_bytes=200, procs_peak=1),
    ]
    document = summarize(run, admission, "poll", outcomes).as_json()
    assert tuple(document) == FIELDS
    assert document == {
        "command": ["x"], "status": "ok", "exit_code": 0, "signal": None, "wall_s": 3.0, "cpu_s": 0.5,
        "peak_mem_bytes": 300, "mem_limit_bytes": MIB, "procs_peak": 3, "backend": "poll",
        "lock": "default", "lock_wait_s": 0.123, "attempts": 2, "run_id": "r1", "log": None,
        "reserved_bytes": MIB, "frozen_s": 0.25, "culprit": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("status", "code", "attempt", "retry", "on_oom", "expected"),
    [("failed", 1, 1, 1, False, True), ("failed", 1, 2, 1, False, False), ("ok", 0, 1, 1, False, False),
     ("memory", 137, 1, 1, False, False), ("memory", 137, 1, 1, True, True),
     ("error", 127, 1, 3, False, False), ("timeout", 124, 1, 1, False, True)],
)  # fmt: skip
def test_should_retry(status: str, code: int, attempt: int, retry: int, on_oom: bool, expected: bool) -> None:
    options: Any = SimpleNamespace(retry=retry, retry_on_oom=on_oom)
    assert should_retry(Outcome(status, code), options, attempt) is expected


def test_an_interrupted_try_is_not_retried() -> None:
    options: Any = SimpleNamespace(retry=3, retry_on_oom=True)
    assert not should_retry(Outcome("signal", 130, interrupted=True), options, 1)


def test_the_policy_of_a_lock() -> None:
    assert type(policies.for_lock(1, None)) is policies.OneSlot
    slots = policies.for_lock(3, None)
    assert isinstance(slots, policies.Slots)
    assert slots.count == 3
    budget = policies.for_lock(1 << 20, Gate("agents", MIB, 8 * MIB))
    assert isinstance(budget, policies.Budget)
    assert budget.gate.need == MIB


def test_a_free_turn_waits_for_nothing() -> None:
    with FreeTurn() as turn:
        turn.wait(timeout=0.0)
        assert not turn.queued
        assert not turn.cancelled()
        assert turn.previous is None
        turn.started()
        turn.hand_over()
