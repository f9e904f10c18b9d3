"""A turn in a lock's queue, in one process: the ticket (a place in the
line) and the slot are separate, and each policy decides when the head may
take a slot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seqbox.admission import Gate
from seqbox.errors import LockTimeout
from seqbox.policies import Budget, OneSlot, Policy, Slots
from seqbox.queue import LockDir, view
from seqbox.tickets import arrive
from seqbox.turn import Turn


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {"SEQBOX_STATE_DIR": str(tmp_path / "state")}


def _turn(environ: dict[str, str], policy: Policy, **info: object) -> Turn:
    return Turn(arrive("proj", "default", {"pid": os.getpid(), **info}, environ), policy)  # type: ignore[typeddict-item]


def test_the_line_then_the_slot(environ: dict[str, str]) -> None:
    with _turn(environ, OneSlot()) as first, _turn(environ, OneSlot()) as second:
        first.wait(timeout=1.0)
        assert first.slot is not None
        assert first.previous is None
        queue = view(LockDir("proj", "default", environ))  # holding, its command not started yet
        assert [h.get("number") for h in queue.holders] == [first.number]
        assert isinstance(queue.holders[0].get("since"), float)  # held since now
        assert [w.get("number") for w in queue.waiters] == [second.number]  # first is not also a waiter
        with pytest.raises(LockTimeout):  # behind first's ticket
            second.wait(timeout=0.05)
        first.started()  # out of the line: second is the head now
        assert [w.get("number") for w in view(LockDir("proj", "default", environ)).waiters] == [second.number]
        with pytest.raises(LockTimeout):  # at the head, the slot still held
            second.wait(timeout=0.05)
        first.hand_over()
        second.wait(timeout=1.0)
        assert second.previous_ended  # handed over in order: one look at the mark
        assert second.previous is not None
        assert second.previous.get("ended") is True
        assert second.previous.get("number") == first.number
    assert not (Path(environ["SEQBOX_STATE_DIR"]) / "projects").exists()  # the last one out tidied


def test_a_holder_that_died_leaves_no_ended_mark(environ: dict[str, str]) -> None:
    with _turn(environ, OneSlot()) as first, _turn(environ, OneSlot()) as second:
        first.wait(timeout=1.0)
        first.started()
        assert first.slot is not None
        assert first.slot.fd is not None
        os.close(first.slot.fd)  # as if its process died: the flock goes, no mark
        first.slot.fd = None
        second.wait(timeout=1.0)
        assert not second.previous_ended
        assert second.previous is not None
        assert "ended" not in second.previous


def test_slots_let_two_hold_at_once(environ: dict[str, str]) -> None:
    with _turn(environ, Slots(2)) as first, _turn(environ, Slots(2)) as second:
        first.wait(timeout=1.0)
        first.started()
        second.wait(timeout=1.0)
        assert first.slot is not None
        assert second.slot is not None
        assert {first.slot.k, second.slot.k} == {0, 1}


def test_a_budget_head_says_what_it_waits_for(environ: dict[str, str]) -> None:
    gate = Gate("default", 6, 10)
    with _turn(environ, Budget(10, gate), reservation=6) as first, _turn(environ, Budget(10, gate)) as second:
        first.wait(timeout=1.0)
        first.started()
        with pytest.raises(LockTimeout):
            second.wait(timeout=0.05)
        waiters = view(LockDir("proj", "default", environ)).waiters
        assert waiters[0].get("waiting_for", "").startswith('waiting for memory on lock "default": needs 6 B')
        first.hand_over()
        second.wait(timeout=1.0)
        assert second.slot is not None
