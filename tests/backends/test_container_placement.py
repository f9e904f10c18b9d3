"""Inside a container, on canned inputs: where cgroup2 runs go when the cgroup
seqbox sees as the top is the container's own (a private cgroup namespace), and
whose memory limit a kill is put down to (the ``oom`` counters of the cgroups
from the run's up to the top)."""

from __future__ import annotations

import pytest

from seqbox.backends.cgroup import fs as cgroupfs
from seqbox.backends.cgroup.enclosing import (
    CGROUP,
    CONTAINER,
    ENCLOSING_RUN,
    MACHINE,
    RUN,
    LimitHit,
    chain,
    classify,
    first_risen,
    oom_count,
)
from seqbox.backends.cgroup.v2 import TAKEOVER_ENV, Placement, plan_placement

TOP = "/sys/fs/cgroup"
ME = 4242
INIT = 1


def in_container(
    procs: list[int], *, takeover: bool = False, writable: bool = True, me: int = ME
) -> Placement:
    return plan_placement(TOP, TOP, procs, me, {TOP: writable}, top_is_root=False, takeover=takeover)


def test_container_shared_with_its_init_has_no_placement() -> None:
    """The container's cgroup is not the machine's root: the no-internal-processes
    rule holds there, so with the container's init beside seqbox there is no base
    (before, this said "root" and the run failed on EBUSY, while doctor said cgroup2)."""
    placement = in_container([INIT, 7, ME])
    assert (placement.kind, placement.base) == ("none", None)
    assert "the container's cgroup holds other processes (pids 1, 7)" in placement.reason
    assert placement.hint is not None
    assert TAKEOVER_ENV in placement.hint
    assert "entrypoint" in placement.hint


def test_container_entrypoint_alone_moves_into_a_leaf() -> None:
    placement = in_container([ME])
    assert (placement.kind, placement.base) == ("leaf", TOP)


def test_container_takeover_when_asked() -> None:
    placement = in_container([INIT, 7, ME], takeover=True)
    assert (placement.kind, placement.base) == ("takeover", TOP)
    assert f"{TAKEOVER_ENV}=1" in placement.reason
    assert f"{TOP}/init" in placement.reason


def test_container_takeover_when_seqbox_is_pid_1() -> None:
    """PID 1 is the container's init: it may organise the container's cgroup, as systemd does."""
    placement = in_container([1, 30], me=1)
    assert (placement.kind, placement.base) == ("takeover", TOP)
    assert "PID 1" in placement.reason


def test_container_after_a_takeover_runs_go_beside_init() -> None:
    init = f"{TOP}/init"
    placement = plan_placement(
        TOP, init, [INIT, 7, ME], ME, {init: True, TOP: True}, top_is_root=False, parent_procs=()
    )
    assert (placement.kind, placement.base) == ("sibling", TOP)


def test_container_read_only_top() -> None:
    placement = in_container([INIT, ME], writable=False, takeover=True)
    assert placement.base is None
    assert placement.hint is not None
    assert "writable" in placement.hint


def test_sibling_needs_a_parent_without_processes() -> None:
    """A parent that holds processes cannot hold run nodes either (unless it is
    the machine's root)."""
    scope = f"{TOP}/ci/step.scope"
    writable = {scope: True, f"{TOP}/ci": True}
    busy = plan_placement(TOP, scope, [ME, 100], ME, writable, parent_procs=[55])
    assert busy.base is None
    assert "holds processes too" in busy.reason
    root_child = f"{TOP}/step.scope"
    beside_root = plan_placement(
        TOP, root_child, [ME, 100], ME, {root_child: True, TOP: True}, parent_procs=[1]
    )
    assert (beside_root.kind, beside_root.base) == ("sibling", TOP)


def test_machine_root_unchanged() -> None:
    placement = plan_placement(TOP, TOP, [1, 2, ME], ME, {TOP: True}, top_is_root=True)
    assert (placement.kind, placement.base) == ("root", TOP)


# -- whose limit -------------------------------------------------------------------

EVENTS_LOCAL = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\noom_group_kill 0\n"
NODE = f"{TOP}/seqbox-k-20260101T000000-9"


def test_chain_runs_from_the_node_to_the_top() -> None:
    assert chain(f"{TOP}/a/b", TOP) == [f"{TOP}/a/b", f"{TOP}/a", TOP]
    assert chain(TOP, TOP + "/") == [TOP]
    assert chain("/elsewhere/x", TOP) == []


def test_oom_count() -> None:
    assert oom_count(EVENTS_LOCAL) == 1
    assert oom_count("max 3\n") == 0
    assert oom_count(None) is None


@pytest.mark.parametrize(
    ("path", "top_is_root", "kind"),
    [
        (NODE, False, RUN),
        (f"{TOP}/seqbox-k-20260101T000000-3", True, ENCLOSING_RUN),
        (TOP, False, CONTAINER),
        (f"{TOP}/kubepods.slice/pod1.slice", True, CGROUP),
        (f"{TOP}/seqbox-sup-12", True, CGROUP),
    ],
)
def test_classify(path: str, top_is_root: bool, kind: str) -> None:
    assert classify(path, NODE, TOP, top_is_root) == kind


def test_first_risen_is_the_nearest() -> None:
    order = [NODE, f"{TOP}/a", TOP]
    before: dict[str, int | None] = {NODE: 0, f"{TOP}/a": 2, TOP: 5}
    assert first_risen(before, {NODE: 0, f"{TOP}/a": 2, TOP: 6}, order) == TOP
    assert first_risen(before, {NODE: 1, f"{TOP}/a": 3, TOP: 6}, order) == NODE
    assert first_risen(before, dict(before), order) is None
    assert first_risen({TOP: None}, {TOP: None}, [TOP]) is None  # no counter (the machine's root)


def test_messages_say_whose_limit() -> None:
    gib = 1 << 30
    assert (
        LimitHit(CONTAINER, gib, TOP).message(900 << 20)
        == "killed: the container's memory limit 1.0 GiB was reached (this run's peak 900.0 MiB)"
    )
    assert (
        LimitHit(ENCLOSING_RUN, 200 << 20, NODE).what() == "the enclosing seqbox run's memory limit 200.0 MiB"
    )
    assert "cgroup /sys/fs/cgroup/a (above seqbox)" in LimitHit(CGROUP, gib, f"{TOP}/a").what()
    assert "the machine ran out of memory" in LimitHit(MACHINE, None, None).message(1 << 20)


def test_flat_keyed_of_events_local() -> None:
    assert cgroupfs.parse_flat_keyed(EVENTS_LOCAL)["max"] == 12
