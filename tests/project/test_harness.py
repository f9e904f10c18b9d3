"""The test harness itself: capability probes agree with the machine, and
SEQBOX_EXPECT turns a skip of a test this machine must run into a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import psutil
import pytest

from seqbox.backends.cgroup.v1 import Cgroup1Layout
from seqbox.backends.cgroup.v2 import Cgroup2Layout
from seqbox.backends.systemd.scope import plan_here
from tests import capabilities as caps
from tests import nobody
from tests.capabilities import needs
from tests.helpers import slack

HERE = Path(__file__).resolve().parents[1]


@needs("cgroup1")
def test_cgroup1_capability_is_real() -> None:

    memory = Cgroup1Layout.current().dirs["memory"]
    assert os.access(memory, os.W_OK)
    assert os.path.exists(os.path.join(memory, "memory.limit_in_bytes"))


@needs("cgroup2")
def test_cgroup2_capability_is_real() -> None:

    layout = Cgroup2Layout.current()
    assert layout.self_dir is not None
    assert "memory" in layout.controllers(layout.self_dir)
    if caps.usable("user_manager"):  # the laptop lane: each run gets cgroup2 in a delegated scope
        assert plan_here(["--", "true"], "auto").command is not None
        return
    assert layout.placement().base is not None


@needs("poll")
def test_poll_capability_is_real() -> None:
    me = psutil.Process()
    assert me.memory_info().rss > 0
    assert os.getpid() in psutil.pids()


@needs("root")
def test_root_capability_is_real() -> None:
    assert os.geteuid() == 0


def test_auto_choice_is_first_usable_backend() -> None:
    choice = caps.auto_choice()
    order = list(caps.BACKENDS)
    assert caps.really_usable(choice)
    assert all(not caps.really_usable(name) for name in order[: order.index(choice)])


# -- the strict-skip machinery, on a throwaway copy of this conftest ---------------

INNER_TESTS = """
import pytest
from tests.capabilities import needs
from tests.helpers import slack

@needs("poll")
def test_needs_poll():
    pass

@needs("cgroup1", "poll")
def test_needs_cgroup1_and_poll():
    pass

def test_backend(backend):
    pass

def test_plain_skip():
    pytest.skip("not today")

@pytest.mark.xfail(reason="known", strict=True)
def test_xfail():
    assert False
"""

LEAKY_TESTS = """
import os
import subprocess

from seqbox.project import project_key


def test_leaves_a_process(token):
    subprocess.Popen(["sleep", "30"], env={**os.environ, "SBXTEST_TOKEN": token})


def test_leaves_a_cgroup(project):
    backend = os.environ["INNER_CGROUP_BACKEND"]
    if backend == "cgroup1":
        from seqbox.backends.cgroup.v1 import Cgroup1Layout

        base = Cgroup1Layout.current().dirs["memory"]
    else:
        from seqbox.backends.cgroup.v2 import Cgroup2Layout

        base = Cgroup2Layout.current().placement().base
        if base is None:  # an unprivileged user (the laptop lane): its user manager's tree is its own
            uid = os.getuid()
            base = f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/app.slice"
    key = project_key(os.path.realpath(project))
    os.mkdir(os.path.join(base, f"seqbox-{key}-20260101T000000-1"))


def test_clean(sbx):
    assert sbx.run("--", "true").returncode == 0
"""


def _inner_run(tmp_path: Path, env: dict[str, str], tests: str = INNER_TESTS) -> dict[str, str]:
    """Run the inner suite in a subprocess pytest; return {test name: outcome}
    (passed, failed, error, skipped, xfailed)."""
    inner = tmp_path / "inner"
    pkg = inner / "tests"
    if not pkg.exists():
        pkg.mkdir(parents=True)
        for name in ("__init__.py", "conftest.py", "capabilities.py", "helpers.py", "nobody.py", "prog.py"):
            shutil.copy(HERE / name, pkg / name)
        (pkg / "test_inner.py").write_text(tests)
        (inner / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEQBOX_")}
    full_env.update(env)
    junit = tmp_path / f"junit-{len(list(tmp_path.glob('junit-*')))}.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", f"--junitxml={junit}", "tests"],
        cwd=inner,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=slack(60),
        check=False,
    )
    assert junit.exists(), proc.stdout + proc.stderr
    outcomes = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case]
        if "error" in kinds:
            outcome = "error"
        elif "failure" in kinds:
            outcome = "failed"
        elif "skipped" in kinds:
            skipped = case.find("skipped")
            kind = skipped.get("type", "") if skipped is not None else ""
            outcome = "xfailed" if kind == "pytest.xfail" else "skipped"
        else:
            outcome = "passed"
        outcomes[case.get("name", "")] = outcome
    assert outcomes, proc.stdout + proc.stderr
    return outcomes


def test_missing_capability_skips_with_reason(tmp_path: Path) -> None:
    outcomes = _inner_run(tmp_path, {"SEQBOX_TEST_DISABLE": "poll", "SEQBOX_TEST_BACKENDS": "poll"})
    assert outcomes["test_needs_poll"] == "skipped"
    assert outcomes["test_backend[poll]"] == "skipped"
    assert outcomes["test_plain_skip"] == "skipped"
    assert outcomes["test_xfail"] == "xfailed"


FAILED = ("failed", "error")


def test_expect_turns_skips_into_failures(tmp_path: Path) -> None:
    outcomes = _inner_run(
        tmp_path,
        {"SEQBOX_TEST_DISABLE": "poll", "SEQBOX_TEST_BACKENDS": "poll", "SEQBOX_EXPECT": "poll"},
    )
    assert outcomes["test_needs_poll"] in FAILED
    assert outcomes["test_backend[poll]"] in FAILED
    assert outcomes["test_plain_skip"] in FAILED  # needs nothing, so it must run
    assert outcomes["test_xfail"] == "xfailed"  # an expected failure is not a skip
    # also needs cgroup1, which SEQBOX_EXPECT does not promise: stays a skip
    assert outcomes["test_needs_cgroup1_and_poll"] == "skipped"


def test_leak_guard_catches_leftovers(tmp_path: Path, cgroup_backend: str) -> None:
    """A test that leaves a process or a seqbox-* cgroup behind errors at teardown
    (and what it left is removed)."""
    outcomes = _inner_run(tmp_path, {"INNER_CGROUP_BACKEND": cgroup_backend}, LEAKY_TESTS)
    assert outcomes == {
        "test_leaves_a_process": "error",
        "test_leaves_a_cgroup": "error",
        "test_clean": "passed",
    }


@needs("root")
def test_nobody_gets_a_python_when_the_tests_own_is_out_of_reach() -> None:
    # CI's checkout sits where uid 65534 cannot start the venv's interpreter; the
    # harness then copies seqbox and its dependencies into a venv made from a
    # system interpreter of the same version. The copy found the dependencies
    # under the distribution's old name ("seqbox") and failed once it was
    # renamed seqbox-cli, turning every "unprivileged" test into a skip.
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    base = next((b for b in nobody.SYSTEM_PYTHONS if nobody.version_of(b) == version), None)
    if base is None:
        pytest.skip(f"no system python {version} to make a venv from")
    assert nobody.own_distribution() == "seqbox-cli"
    made = nobody.make_venv(base, version)
    assert nobody.runs_as_nobody(made.executable) is None
