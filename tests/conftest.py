"""Fixtures and hooks of the seqbox test suite.

* Capabilities decide skips (tests/capabilities.py); with ``SEQBOX_EXPECT`` a
  skip of a test this machine must be able to run is a failure.
* ``backend`` runs a contract test once per backend this machine can run
  (``SEQBOX_TEST_BACKENDS`` restricts it), and, if marked ``poll_reader``, once
  per variant of one (``poll-psutil``: the poll backend on its macOS code
  path); ``cgroup_backend`` once per cgroup one.
* Every test is isolated: its own HOME, XDG_RUNTIME_DIR, SEQBOX_STATE_DIR and
  project, no SEQBOX_* / CI / recipe variables from outside.
* After every test: nothing it started is still alive, and no ``seqbox-*``
  cgroup it caused is left under /sys/fs/cgroup. Either fails the test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import psutil
import pytest

from seqbox.project import project_key
from tests import capabilities as caps
from tests import helpers
from tests.helpers import (
    SEQBOX_PIDS,
    TOKEN_ENV,
    SeqboxRunner,
    is_ours,
    kill_token_processes,
    remove_cgroup,
    seqbox_cgroups,
    token_pids,
)
from tests.nobody import NOBODY

NEEDED = pytest.StashKey[frozenset[str]]()
BACKEND_FIXTURES = ("backend", "cgroup_backend")
NONE_SELECTED = "none-selected"

#: variables from a developer's shell or a CI runner that change what seqbox does
LEAKY_VARIABLES = (
    "CI",
    "MEMORY_LIMIT_MB",
    "TIMEOUT",
    "KILL_TIMEOUT",
    "CHECK_INTERVAL",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
    "GITHUB_STEP_SUMMARY",  # each run would append to a real CI job's summary
)


# -- capabilities, marks and strict skips ------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs(*capabilities): the test needs these capabilities "
        f"({', '.join(caps.CAPABILITIES)}); skipped with the probe's reason otherwise",
    )
    config.addinivalue_line(
        "markers", "none_selected: internal: a backend fixture had no backend to run with"
    )
    config.addinivalue_line(
        "markers",
        "poll_reader: the test checks how the tree is found, measured or killed: its backend "
        "fixture also runs the poll backend's psutil code path (poll-psutil)",
    )
    caps.selected_backends()  # validate the environment's lists before collecting
    helpers.SLOWDOWN = helpers.measure_slowdown()
    helpers.VIA_AUTO = os.environ.get("SEQBOX_TEST_VIA_AUTO") == "1"
    if helpers.VIA_AUTO:
        helpers.AUTO_PICKS = caps.auto_choice()
    config.stash[EXPECT] = caps.expected()


EXPECT = pytest.StashKey[frozenset[str] | None]()


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    for name in caps.CAPABILITIES:
        cap = caps.capability(name)
        lines.append(f"seqbox capability {name}: {'yes' if cap.usable else 'no'} ({cap.reason})")
    lines.append(f"seqbox backends under test: {', '.join(caps.selected_backends()) or 'none'}")
    if helpers.VIA_AUTO:
        lines.append(f"SEQBOX_TEST_VIA_AUTO: the contract suite runs {helpers.AUTO_PICKS} as --backend auto")
    lines.append(f"time bounds stretched x{helpers.SLOWDOWN:.1f} (SEQBOX_TEST_SLOWDOWN)")
    expect = config.stash[EXPECT]
    if expect is not None:
        lines.append(f"SEQBOX_EXPECT: {', '.join(sorted(expect))} (skips of these fail)")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    selected = caps.selected_backends()
    if metafunc.definition.get_closest_marker("poll_reader") is None:
        # a variant reads the tree another way: only tests about the tree run with it
        selected = [name for name in selected if name not in caps.VARIANTS]
    choices = {
        "backend": selected,
        "cgroup_backend": [name for name in selected if name in caps.CGROUP_BACKENDS],
        # what seqbox itself cannot use here (SEQBOX_TEST_DISABLE does not fool seqbox)
        "unusable_backend": [name for name in caps.BACKENDS if not caps.really_usable(name)],
    }
    for fixture, names in choices.items():
        if fixture not in metafunc.fixturenames:
            continue
        if names:
            metafunc.parametrize(fixture, [_backend_param(name) for name in names])
        else:
            metafunc.parametrize(fixture, [pytest.param(NONE_SELECTED, marks=pytest.mark.none_selected)])


def _backend_param(name: str) -> object:
    if name in caps.VARIANTS:  # the same backend read another way: with the slow tests, in CI
        return pytest.param(caps.Variant(name), id=name, marks=pytest.mark.slow)
    return name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    in_vm = bool(os.environ.get("SEQBOX_IN_VM"))
    in_container = bool(os.environ.get("SEQBOX_IN_CONTAINER"))  # the VM lane's container part
    for item in items:
        if item.get_closest_marker("none_selected") is not None:
            dropped.append(item)  # e.g. cgroup_backend when only poll is under test
            continue
        if in_vm and item.get_closest_marker("vm_slow") is not None:
            dropped.append(item)
            continue
        if in_container and item.get_closest_marker("vm_top") is not None:
            dropped.append(item)
            continue
        needed: set[str] = set()
        for mark in item.iter_markers("needs"):
            needed.update(mark.args)
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            for fixture in BACKEND_FIXTURES:
                value = callspec.params.get(fixture)
                if isinstance(value, caps.Variant):
                    needed.add(value.name)
                elif value in caps.BACKENDS:
                    needed.add(value)
        item.stash[NEEDED] = frozenset(needed)
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_runtest_setup(item: pytest.Item) -> None:
    reason = caps.missing_reason(item.stash.get(NEEDED, frozenset()))
    if reason is not None:
        pytest.skip(reason)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    expect = item.config.stash[EXPECT]
    if expect is None or not report.skipped or hasattr(report, "wasxfail"):
        return report
    needed = item.stash.get(NEEDED, frozenset())
    if needed <= expect:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"skipped, but SEQBOX_EXPECT={','.join(sorted(expect))} covers everything this test "
            f"needs ({', '.join(sorted(needed)) or 'nothing'}): {reason}"
        )
    return report


# -- isolation -----------------------------------------------------------------------


@pytest.fixture
def token() -> str:
    """Unique per test; carried by every process the test starts (see helpers.token_pids)."""
    return uuid.uuid4().hex


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def isolated(
    request: pytest.FixtureRequest, tmp_path: Path, project: Path, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of the developer's or CI's environment leaks in; nothing writes to
    the real home. A backend variant under test puts its environment in (seqbox,
    in-process or not, inherits it)."""
    for name in list(os.environ):
        if name.startswith("SEQBOX_") or name in LEAKY_VARIABLES:
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    runtime = tmp_path / "runtime"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    if caps.usable("user_manager"):  # the laptop lane: seqbox must reach the user manager
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(caps.REAL_RUNTIME_DIR))
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("SEQBOX_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SEQBOX_PROJECT", str(project))
    monkeypatch.setenv(TOKEN_ENV, token)  # the API's seqbox inherits it too
    monkeypatch.chdir(project)
    callspec = getattr(request.node, "callspec", None)
    for fixture in BACKEND_FIXTURES:
        variant = callspec.params.get(fixture) if callspec is not None else None
        if isinstance(variant, caps.Variant):
            for key, value in variant.env.items():
                monkeypatch.setenv(key, value)


def _project_key(project: Path) -> str:
    return project_key(os.path.realpath(project))


@pytest.fixture(autouse=True)
def leak_guard(request: pytest.FixtureRequest, token: str, project: Path) -> Iterator[None]:
    """Fail the test if anything it started is still alive afterwards, or if a
    ``seqbox-*`` cgroup it caused is left under /sys/fs/cgroup."""
    before = seqbox_cgroups() if os.path.isdir("/sys/fs/cgroup") else set()
    yield
    problems = []
    survivors = []
    for _ in range(100):  # a SIGKILLed process takes a moment to become a zombie
        survivors = token_pids(token)
        if not survivors:
            break

        time.sleep(0.01)
    if survivors:
        described = []
        for pid in survivors:
            try:
                described.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:100]}")
            except psutil.Error:
                described.append(str(pid))
        kill_token_processes(token)
        problems.append("processes survived the test (killed now): " + "; ".join(described))
    if os.path.isdir("/sys/fs/cgroup"):
        key = _project_key(project)
        left = sorted(path for path in seqbox_cgroups() - before if is_ours(path, token, key))
        for path in left:
            remove_cgroup(path, token)
        if left:
            problems.append("seqbox left cgroups behind (removed now): " + ", ".join(left))
    SEQBOX_PIDS.pop(token, None)
    xfail = request.node.get_closest_marker("xfail") is not None
    if problems and not xfail:
        pytest.fail("\n".join(problems), pytrace=False)


# -- running seqbox ---------------------------------------------------------------------


@pytest.fixture
def sbx(project: Path, token: str, leak_guard: None) -> Iterator[SeqboxRunner]:
    """Runs ``python -m seqbox`` (this venv) in the isolated environment; every
    process is reaped, with a time limit."""
    runner = SeqboxRunner(project, token)
    yield runner
    runner.close()


class Tracker:
    """Processes a test wants gone at teardown, killed by pid (create time checked)."""

    def __init__(self) -> None:
        self.procs: list[psutil.Process] = []

    def track(self, *pids: int) -> None:
        for pid in pids:
            try:
                self.procs.append(psutil.Process(pid))
            except psutil.Error:
                pass

    def kill_all(self) -> None:
        for proc in self.procs:
            try:
                if proc.is_running():  # same pid and create time: not a reused pid
                    proc.kill()
            except psutil.Error:
                pass
        self.procs.clear()


@pytest.fixture
def procs(leak_guard: None) -> Iterator[Tracker]:
    tracker = Tracker()
    yield tracker
    tracker.kill_all()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend under test (see capabilities.selected_backends)."""
    name: str = request.param
    return name


@pytest.fixture
def cgroup_backend(request: pytest.FixtureRequest) -> str:
    """Each cgroup backend under test."""
    name: str = request.param
    return name


@pytest.fixture
def unusable_backend(request: pytest.FixtureRequest) -> str:
    """Each backend seqbox cannot use on this machine."""
    name: str = request.param
    return name


@pytest.fixture
def nobody_home(token: str) -> Iterator[Path]:
    """A directory uid 65534 may use (tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="seqbox-test-nobody-"))
    os.chmod(path, 0o755)
    os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path, ignore_errors=True)
