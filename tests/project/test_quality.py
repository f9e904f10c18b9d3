"""The code stays ruff clean and mypy --strict clean (configured in pyproject.toml):
the test suite is the one command CI runs, so these checks live here."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> list[str]:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install '.[test]'")
    return [found]


def _cache(name: str) -> str:
    """A cache directory outside the checkout (which may be read-only, as in the VM)."""
    return os.path.join(tempfile.gettempdir(), f"seqbox-tests-{os.getuid()}-{name}")


def test_ruff_is_clean() -> None:
    res = subprocess.run(
        [*_tool("ruff"), "check", "--cache-dir", _cache("ruff"), "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", _cache("mypy")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


#: what only seqbox/backends/ may know: the platform, the cgroup layout, backend names
PLATFORM_KNOWLEDGE = re.compile(
    r"/proc/self/cgroup|sys\.platform|/sys/fs/cgroup"
    r"|[=!]=\s*[\"'](?:cgroup2|cgroup1|poll)[\"']"
    r"|[\"'](?:cgroup2|cgroup1|poll)[\"']\s*[=!]="
    r"|\bin\s*[\(\[\{][^\)\]\}]*[\"'](?:cgroup2|cgroup1|poll)[\"']"
)


def platform_knowledge(text: str) -> list[tuple[int, str]]:
    """Lines of ``text`` that look at the platform or compare a backend name."""
    return [
        (n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if PLATFORM_KNOWLEDGE.search(line)
    ]


@pytest.mark.parametrize(
    "line",
    [
        'if sys.platform == "darwin":',
        'with open("/proc/self/cgroup") as f:',
        'path = "/sys/fs/cgroup/memory"',
        'if backend.name == "poll":',
        "if sandbox.backend != 'cgroup2':",
        'if options.backend in ("auto", "cgroup2"):',
        'if "cgroup1" == name:',
    ],
)
def test_the_platform_check_catches(line: str) -> None:
    assert platform_knowledge(line), line


def test_platform_knowledge_lives_in_backends() -> None:
    """Everything that knows the platform or the cgroup layout is in
    seqbox/backends/; the rest asks backends for capabilities."""
    found = []
    for path in sorted((ROOT / "seqbox").rglob("*.py")):
        if (ROOT / "seqbox" / "backends") in path.parents:
            continue
        for number, line in platform_knowledge(path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(ROOT)}:{number}: {line}")
    assert not found, "platform knowledge outside seqbox/backends/:\n" + "\n".join(found)


def test_one_module_says_which_platform_this_is() -> None:
    """Inside seqbox/backends/ too, only host.py looks at ``sys.platform`` (or
    whether there is a /proc); the rest asks it."""
    backends = ROOT / "seqbox" / "backends"
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(backends.rglob("*.py"))
        if path != backends / "host.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"sys\.platform|isdir\(\"/proc/self\"\)", line)
    ]
    assert not found, "platform checks outside seqbox/backends/host.py:\n" + "\n".join(found)


def test_backends_package_only_re_exports() -> None:
    """backends/__init__.py holds no code: the interface and the choice, re-exported."""
    tree = ast.parse((ROOT / "seqbox" / "backends" / "__init__.py").read_text(encoding="utf-8"))
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "ImportFrom", "Assign"}, kinds
