"""Admission that learns, as pure decisions on canned inputs (seqbox/learn.py):
the reservation from a history, the default key, the freeze choice and the
thaw order; and the run log reader that feeds the history."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from seqbox import learn
from seqbox.errors import UsageError
from seqbox.learn import FLOOR, Holding, Past, freezing, reservation, to_freeze, to_thaw

MIB = 1 << 20
GIB = 1 << 30
MEM = 2 * GIB
BUDGET = 6 * GIB


def runs(*peaks: int, key: str = "k", status: str = "ok", limit: int = MEM) -> list[Past]:
    return [Past(key, peak, limit, status) for peak in peaks]


def test_fewer_than_three_runs_reserve_mem() -> None:
    assert reservation(MEM, BUDGET, None, "k", runs(100 * MIB, 120 * MIB)) == (MEM, "mem")
    assert reservation(MEM, BUDGET, None, "k", []) == (MEM, "mem")


def test_three_runs_teach_the_largest_peak_plus_a_fifth() -> None:
    size, how = reservation(MEM, BUDGET, None, "k", runs(300 * MIB, 400 * MIB, 350 * MIB))
    assert (size, how) == (int(400 * MIB * 1.2), "learned")


def test_only_runs_of_the_same_key_count() -> None:
    history = [*runs(400 * MIB, 400 * MIB), *runs(900 * MIB, 900 * MIB, key="other")]
    assert reservation(MEM, BUDGET, None, "k", history) == (MEM, "mem")
    history.append(Past("k", 500 * MIB, MEM, "failed"))  # a failure still used what it used
    assert reservation(MEM, BUDGET, None, "k", history) == (int(500 * MIB * 1.2), "learned")


def test_only_the_newest_twenty_runs_count() -> None:
    history = [*runs(*[10 * MIB] * 18, key="other"), *runs(100 * MIB, 100 * MIB, 100 * MIB)]
    assert reservation(MEM, BUDGET, None, "k", history) == (MEM, "mem")  # 2 of the key in the window
    assert reservation(MEM, BUDGET, None, "k", history[1:]) == (int(100 * MIB * 1.2), "learned")


def test_a_memory_killed_run_counts_as_needing_its_limit() -> None:
    history = [*runs(200 * MIB, 200 * MIB), Past("k", 150 * MIB, MEM, "memory")]
    assert reservation(MEM, BUDGET, None, "k", history) == (MEM, "learned")  # capped at --mem


def test_caps_floor_mem_and_budget() -> None:
    assert reservation(MEM, BUDGET, None, "k", runs(1 * MIB, 2 * MIB, 3 * MIB)) == (FLOOR, "learned")
    assert reservation(MEM, BUDGET, None, "k", runs(1900 * MIB, 10, 10)) == (MEM, "learned")
    # no --mem: at most the budget
    assert reservation(None, BUDGET, None, "k", runs(5900 * MIB, 10, 10)) == (BUDGET, "learned")
    assert reservation(None, BUDGET, None, "k", []) == (BUDGET, "mem")


def test_runs_without_a_peak_teach_nothing() -> None:
    assert reservation(MEM, BUDGET, None, "k", runs(None, None, 100 * MIB)) == (MEM, "mem")  # type: ignore[arg-type]


def test_reserve_wins_and_may_not_exceed_mem() -> None:
    assert reservation(MEM, BUDGET, 300 * MIB, "k", runs(1 * GIB, 1 * GIB, 1 * GIB)) == (300 * MIB, "given")
    learn.check_reserve(MEM, MEM)
    learn.check_reserve(5 * GIB, None)
    with pytest.raises(UsageError, match=r"--reserve 3.0 GiB is above --mem 2.0 GiB"):
        learn.check_reserve(3 * GIB, MEM)


def test_default_key_is_the_command_and_its_directory_in_the_project(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    assert learn.default_key(["pytest", "-x"], str(tmp_path), str(tmp_path)) == "pytest -x @ ."
    assert learn.default_key(["pytest", "-x"], str(tmp_path / "sub"), str(tmp_path)) == "pytest -x @ sub"
    outside = learn.default_key(["make"], "/", str(tmp_path))
    assert outside == "make @ /"


# -- freeze and thaw ----------------------------------------------------------


def h(
    name: str,
    usage_mib: int,
    reserved_mib: int,
    frozen: float | None = None,
    since: float = 0.0,
    grew_mib: int = 0,
) -> Holding:
    return Holding(
        name, usage_mib * MIB, reserved_mib * MIB, frozen_since=frozen, since=since, grew=grew_mib * MIB
    )


def total(holdings: list[Holding]) -> int:
    return sum(x.usage for x in holdings)


def test_no_freeze_below_ninety_percent() -> None:
    board = [h("a", 2000, 500), h("b", 3000, 500)]  # 5000 MiB of 6144: 81 %
    assert to_freeze(board, total(board), BUDGET) is None


def test_the_run_furthest_over_its_reservation_freezes() -> None:
    board = [h("a", 1900, 480), h("b", 2000, 1900), h("c", 1700, 480)]  # 5600 MiB: 91 %
    assert to_freeze(board, total(board), BUDGET) == "a"
    equal = [h("a", 2800, 500, since=1.0), h("b", 2800, 500, since=2.0)]
    assert to_freeze(equal, total(equal), BUDGET) == "b"  # the youngest among equals


def test_frozen_runs_are_not_chosen_again_and_the_last_runner_never_freezes() -> None:
    board = [h("a", 3000, 480, frozen=10.0), h("b", 2800, 480)]
    assert to_freeze(board, total(board), BUDGET) is None  # b is the last one running
    assert to_freeze([h("a", 5900, 100)], 5900 * MIB, BUDGET) is None


def test_runs_within_their_reservations_are_not_frozen_while_what_they_may_take_fits() -> None:
    board = [h("a", 1850, 1900, grew_mib=50), h("b", 1900, 1900), h("c", 1900, 1900)]  # 5650 MiB: 92 %
    assert to_freeze(board, total(board), BUDGET) is None  # none over, and a's 50 MiB more would still fit


def test_one_freeze_does_not_cascade_over_runs_within_their_reservations() -> None:
    """The bench's overshoot: a small run grew to 1.6 GiB and froze; the total
    stays above 90 %, and the others, holding what they reserved, go on
    (before, they froze one after another until one ran, 35 s frozen in all)."""
    board = [h("over", 1600, 485, frozen=10.0)] + [h(f"s{i}", 404, 485, since=float(i)) for i in range(4)]
    board.append(h("big", 1500, 1500))
    assert to_freeze(board, total(board) + 900 * MIB, BUDGET) is None  # 5616 MiB, and room for 324 more
    board.append(h("over2", 700, 485, since=20.0))  # another one outgrows its reservation: it freezes
    assert to_freeze(board, total(board) + 900 * MIB, BUDGET) == "over2"


def test_a_run_that_may_still_grow_freezes_when_frozen_runs_took_its_room() -> None:
    """The bench's overshoot in another order: two small runs grew to ~940 MiB
    (reserved 485) and froze at 90 % of a 5837 MiB budget; a big run within its
    reservation (1928) is still filling: let it grow and the lock's ceiling
    kills. It freezes, not the small runs that hold what they filled."""
    budget = 5837 * MIB
    board = [h("over1", 943, 485, frozen=1.0), h("over2", 943, 485, frozen=2.0)]
    board += [h(f"s{i}", 404, 485, since=float(i)) for i in range(6)]
    board.append(h("big", 943, 1928, since=0.5, grew_mib=150))
    assert to_freeze(board, 5260 * MIB, budget) == "big"
    board[-1] = h("big", 943, 1928, frozen=3.0)
    assert to_freeze(board, 5260 * MIB, budget) is None  # nobody else grows


def test_a_run_that_holds_what_it_filled_is_not_frozen() -> None:
    """The big run has filled its 1.6 GiB (reserved 1928) and sleeps: the
    room its reservation leaves would pass the budget, but it does not grow
    into it. Freezing it (bench/admission.py, overshoot) kept it from ending
    and giving its memory back, and held admission for 6 s."""
    budget = 5837 * MIB
    board = [h("over1", 1604, 485, frozen=1.0), h("over2", 943, 485, frozen=2.0), h("big", 1604, 1928)]
    board += [h(f"s{i}", 404, 485, since=float(i)) for i in range(3)]
    assert to_freeze(board, 5400 * MIB, budget) is None
    board.append(h("filling", 300, 485, grew_mib=100))  # one that grows: what it may take still fits
    assert to_freeze(board, 5450 * MIB, budget) is None
    board[-1] = h("filling", 100, 485, grew_mib=100)  # now it would not
    assert to_freeze(board, 5500 * MIB, budget) == "filling"


def test_growth_is_the_rise_over_the_last_half_second() -> None:
    samples = [(0.0, 100), (0.2, 400), (0.4, 300), (0.6, 700), (0.8, 700)]
    assert learn.growth(samples, 0.8) == 400  # 700 now, 300 the lowest since 0.3
    assert learn.growth(samples, 2.0) == 0  # nothing recent
    assert learn.growth([(0.0, 5)], 0.0) == 0
    assert learn.growth([(0.0, 500), (0.1, 300)], 0.1) == 0  # shrinking is not growing


def test_every_run_that_must_freeze_freezes_at_once() -> None:
    """The bench's overshoot as its runs cross the line together: two small
    runs over their reservations and the big one filling within its own all
    freeze at their next look (one per round of samples let the big one reach
    the ceiling); the small ones that hold what they filled go on."""
    budget = 5837 * MIB
    board = [h("over1", 900, 485, since=1.0), h("over2", 950, 485, since=2.0)]
    board.append(h("big", 900, 1928, since=0.5, grew_mib=200))
    board += [h(f"s{i}", 404, 485, since=float(3 + i)) for i in range(6)]
    assert freezing(board, 5260 * MIB, budget) == ["over2", "over1", "big"]
    assert freezing(board, 5000 * MIB, budget) == []  # under 90 %
    two = [h("a", 3000, 480), h("b", 2800, 480)]
    assert freezing(two, total(two), BUDGET) == ["a"]  # never the last one running


def test_the_total_is_the_kernels_not_the_sum() -> None:
    board = [h("a", 100, 50), h("b", 100, 50)]
    assert to_freeze(board, 5700 * MIB, BUDGET) == "a"  # the parent cgroup's usage decides


def test_over_the_budget_with_every_run_within_its_reservation_freezes_nobody() -> None:
    # the lock's total counts what no run took beyond its reservation (page cache, the
    # supervisors in a lock's slice): above the budget, nobody over and nobody growing
    # (this raised ValueError: max() of no growing run)
    runs = [Holding("a", 400 * MIB, 500 * MIB, since=1), Holding("b", 450 * MIB, 500 * MIB, since=2)]
    assert to_freeze(runs, 1010 * MIB, 1000 * MIB) is None
    assert freezing(runs, 1010 * MIB, 1000 * MIB) == []


def test_thaw_below_seventy_five_percent_first_frozen_first() -> None:
    board = [h("a", 1000, 480, frozen=20.0), h("b", 1000, 480, frozen=10.0), h("c", 2700, 2000)]
    assert to_thaw(board, total(board), BUDGET) is None  # 4700 MiB: 76 %
    board[2] = h("c", 2000, 2000)
    assert to_thaw(board, total(board), BUDGET) == "b"


def test_thaw_when_nobody_runs_any_more() -> None:
    board = [h("a", 5000, 480, frozen=20.0), h("b", 900, 480, frozen=10.0)]
    assert to_thaw(board, total(board), BUDGET) == "b"  # above 75 %, but nothing else frees memory
    assert to_thaw([h("a", 100, 100)], 100 * MIB, BUDGET) is None


# -- reading the history -------------------------------------------------------


def write_log(directory: Path, name: str, key: str | None, summary: dict[str, object] | None) -> None:
    lines = [{"event": "start", "t": 1.0, "command": ["x"], **({"key": key} if key else {})}]
    lines += [{"event": "sample", "t": 2.0, "mem": n} for n in range(500)]  # a long log
    if summary is not None:
        lines.append({"event": "exit", "t": 3.0, "summary": summary})
    (directory / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_history_reads_key_and_outcome_newest_first(tmp_path: Path) -> None:
    ok = {"peak_mem_bytes": 300 * MIB, "mem_limit_bytes": MEM, "status": "ok"}
    write_log(tmp_path, "20261206T010101-1", "k", ok)
    write_log(tmp_path, "20261206T010102-2", "k", {**ok, "status": "memory", "peak_mem_bytes": MEM})
    write_log(tmp_path, "20261206T010103-3", None, ok)  # a run without a budget: no key
    write_log(tmp_path, "20261206T010104-4", "k", None)  # running or crashed: nothing to learn
    (tmp_path / "20261206T010105-5.jsonl").write_text("{torn")
    history = learn.read_history(str(tmp_path))
    assert [(p.key, p.peak, p.status) for p in history] == [
        (None, 300 * MIB, "ok"),
        ("k", MEM, "memory"),
        ("k", 300 * MIB, "ok"),
    ]
    assert learn.read_history(os.path.join(tmp_path, "missing")) == []
