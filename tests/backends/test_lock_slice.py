"""The lock's systemd slice on the laptop path (seqbox/ceiling.py): its name
(escaped as systemd-escape does, read back by everything that looks for a
lock's parent), the check of its limits, the way into it with systemd-run, and
a run in a delegated scope outside it failing closed. Pure functions on canned
inputs; systemd itself is in tests/backends/test_laptop_scenarios.py."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from seqbox import ceiling
from seqbox.admission import auto_budget_here, gate_for
from seqbox.backends.base import (
    is_lock_slice,
    lock_dir_parts,
    lock_slice_name,
    systemd_escape,
    systemd_unescape,
)
from seqbox.backends.cgroup.enclosing import LOCK_BUDGET, LimitHit
from seqbox.backends.choice import candidates
from seqbox.backends.memory import V2_FILES, enclosing_limits
from seqbox.backends.systemd import rerun
from seqbox.backends.systemd.scope import DBUS, Scope
from seqbox.learn import GIVEN, MEM
from seqbox.limits import Limits
from seqbox.lockbudget import plan
from seqbox.runner import Run

MIB = 1 << 20
KEY = "proj-0123456789abcdef"
#: what ``systemd-escape`` prints for these (systemd 252; its '/' -> '-' aside)
ESCAPED = {
    "default@proj-0123456789abcdef": "default\\x40proj\\x2d0123456789abcdef",
    "my-lock.x_1:2": "my\\x2dlock.x_1:2",
    ".hidden.x": "\\x2ehidden.x",
    "a b\\ü": "a\\x20b\\x5c\\xc3\\xbc",
}


@pytest.mark.parametrize(("text", "escaped"), ESCAPED.items())
def test_escaped_as_systemd_escape_does_and_back(text: str, escaped: str) -> None:
    assert systemd_escape(text) == escaped
    assert systemd_unescape(escaped) == text


@pytest.mark.parametrize("text", ["a-b", "a\\x2", "a\\xZZ", "a\\y41", "a b", "\\xff"])
def test_what_systemd_escape_never_makes_is_not_read_back(text: str) -> None:
    assert systemd_unescape(text) is None


def test_the_slice_name_of_a_lock() -> None:
    """One unescaped '-': the slice sits in seqboxlock.slice, its directory's
    name starts with seqboxlock- as a lock parent's does."""
    name = lock_slice_name("my-lock", KEY)
    assert name == "seqboxlock-my\\x2dlock\\x40proj\\x2d0123456789abcdef.slice"
    assert name.count("-") == 1
    assert lock_dir_parts(name) == ("my-lock", KEY)
    assert ceiling.lock_of(name) == "my-lock"
    assert is_lock_slice(f"/sys/fs/cgroup/u/seqboxlock.slice/{name}")


def test_a_slice_name_too_long_for_systemd_is_none() -> None:
    assert lock_slice_name("a" + "-" * 63, KEY) is None  # 64 characters, each '-' four when escaped
    name = lock_slice_name("a" * 64, "x" * 32 + "-0123456789abcdef")
    assert name is not None
    assert len(name) <= 255


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        (f"seqboxlock-default@{KEY}", ("default", KEY)),
        (f"seqboxlock-my-lock@{KEY}", ("my-lock", KEY)),
        (f"seqboxlock-default\\x40{systemd_escape(KEY)}.slice", ("default", KEY)),
        ("seqboxlock.slice", None),  # the slice that holds the locks' slices
        ("seqboxlock-default.slice", None),
        ("seqboxlock-a\\x2.slice", None),
        (f"seqbox-{KEY}-20261206T075213-18204", None),
        ("seqboxlock-@x", None),
    ],
)
def test_lock_parent_names_read_back(name: str, parts: tuple[str, str] | None) -> None:
    assert lock_dir_parts(name) == parts


def test_parents_in_finds_both_kinds_of_one_project(tmp_path: Path) -> None:
    plain = tmp_path / f"seqboxlock-default@{KEY}"
    in_slice = tmp_path / lock_slice_name("agents", KEY)  # type: ignore[operator]
    other = tmp_path / lock_slice_name("agents", "other-0123456789abcdef")  # type: ignore[operator]
    for path in (plain, in_slice, other, tmp_path / "seqboxlock.slice"):
        path.mkdir()
    assert ceiling.parents_in([str(tmp_path)], KEY) == sorted([str(plain), str(in_slice)])
    assert len(ceiling.parents_in([str(tmp_path)])) == 3


def test_a_lock_slice_is_never_removed_by_seqbox(tmp_path: Path) -> None:
    """Its directory is systemd's: removing it would leave the slice unit
    without its cgroup (and its limit) while systemd thinks it has both."""
    empty_slice = tmp_path / lock_slice_name("default", KEY)  # type: ignore[operator]
    empty_slice.mkdir()
    assert ceiling.leave(str(empty_slice)) is False
    assert empty_slice.is_dir()
    plain = tmp_path / f"seqboxlock-default@{KEY}"
    plain.mkdir()
    assert ceiling.leave(str(plain)) is True


@pytest.mark.parametrize(
    ("limit", "swap", "fault"),
    [
        ("314572800\n", "0\n", None),
        ("314572800\n", None, None),  # no swap accounting: nothing to close
        ("314568704\n", "0\n", None),  # rounded down to pages
        ("max\n", "0\n", "its memory.max max is not the budget 314572800"),
        ("314576896\n", "0\n", "its memory.max 314576896 is not the budget 314572800"),
        (None, None, "its no memory.max is not the budget 314572800"),
        ("314572800\n", "max\n", "its memory.swap.max max is not 0"),
    ],
)
def test_a_slice_holds_the_lock_to_its_budget(limit: str | None, swap: str | None, fault: str | None) -> None:
    assert ceiling.slice_limit_fault(limit, swap, 300 * MIB) == fault


def test_the_slice_is_the_scope_dirs_parent_when_it_is_the_lock_slice() -> None:
    name = lock_slice_name("default", KEY)
    assert name is not None
    scope = f"/sys/fs/cgroup/user.slice/u/user@1000.service/seqboxlock.slice/{name}/run-seqbox-1-ab.scope"
    assert ceiling.slice_dir(scope, name) == os.path.dirname(scope)
    assert (
        ceiling.slice_dir("/sys/fs/cgroup/u/user@1000.service/app.slice/run-seqbox-1-ab.scope", name) is None
    )


def test_systemd_run_asks_for_the_lock_slice() -> None:
    command = [
        "/usr/bin/systemd-run",
        "--user",
        "--scope",
        "-p",
        "Delegate=yes",
        "--",
        "python3",
        "-m",
        "seqbox",
    ]
    assert rerun.with_slice(command, "s.slice") == [*command[:5], "--slice=s.slice", *command[5:]]
    assert rerun.slice_limit_command("/bin/systemctl", "s.slice", 300 * MIB) == [
        "/bin/systemctl", "--user", "set-property", "--runtime", "s.slice",
        "MemoryMax=314572800", "MemorySwapMax=0",
    ]  # fmt: skip


def test_the_lock_slice_is_not_an_enclosing_limit() -> None:
    """Inside the lock's slice, its limit is the budget itself: not a
    container's limit that ``--budget auto`` would take the budget from again."""
    name = lock_slice_name("default", KEY)
    files = {
        f"/cg/u/seqboxlock.slice/{name}/memory.max": "314572800\n",
        f"/cg/u/seqboxlock.slice/{name}/memory.current": "1000\n",
        "/cg/u/memory.max": "1073741824\n",
        "/cg/u/memory.current": "2000\n",
    }
    dirs = [
        (f"/cg/u/seqboxlock.slice/{name}", V2_FILES),
        ("/cg/u/seqboxlock.slice", V2_FILES),
        ("/cg/u", V2_FILES),
    ]
    found = enclosing_limits(files.get, dirs)
    assert [(e.path, e.limit) for e in found] == [("/cg/u", 1 << 30)]


def test_a_kill_at_the_slice_names_the_lock() -> None:
    path = f"/cg/u/seqboxlock.slice/{lock_slice_name('my-lock', KEY)}"
    assert LimitHit(LOCK_BUDGET, 300 * MIB, path).what() == 'the budget 300.0 MiB of lock "my-lock"'


def test_the_choice_hands_the_lock_slice_to_cgroup2() -> None:
    scope = Scope(DBUS, "run-seqbox-1-ab.scope")
    scope.lock_slice = "/sys/fs/cgroup/u/seqboxlock.slice/x"
    (cgroup2,) = [backend for backend in candidates(scope) if backend.name == "cgroup2"]
    assert getattr(cgroup2, "lock_slice") == scope.lock_slice  # noqa: B009 - Backend does not declare it


def _plan(tmp_path: Path, scope: Scope | None) -> tuple[int, str, Limits]:
    options = SimpleNamespace(lock="default", reserve=50 * MIB, key=None, cwd=str(tmp_path))
    notes: list[str] = []
    run = SimpleNamespace(
        options=options, environ={}, argv=["true"], root=str(tmp_path), key=KEY, log=None, scope=scope,
        out=SimpleNamespace(note=notes.append),
    )  # fmt: skip
    limits = Limits(mem=100 * MIB)
    gate = gate_for("default", limits.mem, 300 * MIB)
    budget_run = plan(gate, cast("Run", run), limits)
    assert gate.need == budget_run.reserved
    if scope is not None and scope.no_ceiling:
        assert notes == [f'warning: no memory ceiling for lock "default" ({scope.no_ceiling}): '
                         "this run reserves its --mem, nothing learned"]  # fmt: skip
    else:
        assert notes == []
    return budget_run.reserved, budget_run.how, limits


def test_a_run_in_a_scope_outside_the_lock_slice_fails_closed(tmp_path: Path) -> None:
    """No shared ceiling: a reservation below --mem could let the lock's runs
    together past the budget, so the run reserves its --mem and makes no
    lock parent of its own (it would be its alone)."""
    scope = Scope(DBUS, "run-seqbox-1-ab.scope")
    scope.no_ceiling = "the user manager refused the lock's slice"
    reserved, how, limits = _plan(tmp_path, scope)
    assert (reserved, how, limits.ceiling) == (100 * MIB, MEM, None)

    scope.no_ceiling = None
    scope.lock_slice = "/sys/fs/cgroup/u/seqboxlock.slice/x"
    reserved, how, limits = _plan(tmp_path, scope)
    assert (reserved, how) == (50 * MIB, GIVEN)
    assert limits.ceiling is not None
    reserved, how, limits = _plan(tmp_path, None)  # no scope step (root, the library)
    assert (reserved, how) == (50 * MIB, GIVEN)


def test_an_auto_budget_given_to_the_lock_slice_is_the_gates() -> None:
    """On the laptop path ``--budget auto`` is read once, for the lock's slice;
    the gate counts the budget the slice was given, not a second reading."""
    assert gate_for("default", 100 * MIB, "auto", 300 * MIB).budget == 300 * MIB
    assert gate_for("default", 100 * MIB, "auto").budget == auto_budget_here()
    assert gate_for("default", 100 * MIB, 200 * MIB, 300 * MIB).budget == 200 * MIB  # a size is a size
