"""Where no cgroup can be created (an unprivileged user without delegation),
``auto`` falls back to polling and says so once; limits still hold; ``doctor``
exits 1. Run as uid 65534, switched to from root."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests import capabilities as caps
from tests.capabilities import needs
from tests.helpers import FALLBACK_NOTES, TOKEN_ENV, Completed
from tests.nobody import NOBODY, NobodyPython, nobody_python

pytestmark = needs("root", "unprivileged")


def nobody() -> NobodyPython:
    """The interpreter uid 65534 runs (the "unprivileged" capability has one)."""
    python = nobody_python()
    assert not isinstance(python, str), python
    return python


def _run_as_nobody(home: Path, token: str, *args: str) -> Completed:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SEQBOX_", "XDG_"))}
    env.update({"HOME": str(home), "SEQBOX_PROJECT": str(home), TOKEN_ENV: token})
    argv = nobody().seqbox(*args)
    proc = subprocess.run(
        argv,
        cwd=home,
        env=env,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return Completed(argv, proc.returncode, proc.stdout, proc.stderr, 0.0)


def test_auto_falls_back_to_poll_and_says_so_once(nobody_home: Path, token: str, leak_guard: None) -> None:
    res = _run_as_nobody(nobody_home, token, "run", "--json", "--", "sh", "-c", "exit 3")
    if json.loads(res.stdout)["backend"] != "poll":
        pytest.fail(f"uid {NOBODY} got a cgroup backend; this test needs a machine without delegation: {res}")
    assert res.returncode == 3, res
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res
    assert re.match(r"seqbox: .*poll", lines[0]), res
    # what the suite looks for where --backend auto must not fall back (tests/helpers.py)
    assert FALLBACK_NOTES[0] in lines[0], res
    verbose = _run_as_nobody(nobody_home, token, "run", "-v", "--", "true")
    assert FALLBACK_NOTES[1] in verbose.stderr, verbose


def test_memory_limit_holds_after_fallback(nobody_home: Path, token: str, leak_guard: None) -> None:
    res = _run_as_nobody(
        nobody_home, token, "run", "--json", "--mem", "128M", "--", *nobody().prog("hog", "--chunk", "32")
    )
    assert res.returncode == 137, res
    doc = json.loads(res.stdout)
    assert (doc["status"], doc["backend"]) == ("memory", "poll")


def _in_root_cgroup2() -> bool:
    """This process sits in the root of a cgroup2 hierarchy (a VM, a bare host)."""
    with open("/proc/self/cgroup") as f:
        return any(line.strip() == "0::/" for line in f) and caps.really_usable("cgroup2")


def test_doctor_exits_1_when_only_poll_is_usable(nobody_home: Path, token: str, leak_guard: None) -> None:
    res = _run_as_nobody(nobody_home, token, "doctor", "--json")
    facts = json.loads(res.stdout)
    assert facts["backend"] == "poll"
    assert res.returncode == 1, res


def test_explicit_cgroup_backend_is_125(nobody_home: Path, token: str, leak_guard: None) -> None:
    for backend in caps.CGROUP_BACKENDS:
        res = _run_as_nobody(nobody_home, token, "run", "--backend", backend, "--", "true")
        assert res.returncode == 125, res
        res.one_line()
