"""What users get from the package index: the distribution is ``seqbox-cli`` (the
name ``seqbox`` there belongs to an unrelated project), and every install line,
snippet and hint says so; dev-only scripts refuse to run where they would touch
the host."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seqbox import __version__
from seqbox.init import GITHUB_ACTIONS, GITLAB_CI, PRE_COMMIT

ROOT = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: an install of the bare name `seqbox` (pip, pipx, uv, with options before it)
BARE_INSTALL = re.compile(
    r"\b(?:pip3?|pipx|uv(?: tool| pip)?)\s+install\s+(?:-\S+\s+)*['\"]?seqbox(?![\w.-])", re.I
)


def _shipped_text() -> dict[str, str]:
    """The README, docs, package sources and scripts: path -> text."""
    paths = [ROOT / "README.md", ROOT / "CHANGELOG.md", *ROOT.glob("docs/**/*"), *ROOT.glob("seqbox/**/*")]
    paths += ROOT.glob("scripts/*")
    paths += [ROOT / name for name in ("action.yml", ".pre-commit-hooks.yaml") if (ROOT / name).exists()]
    texts = {}
    for path in paths:
        if path.is_file() and path.suffix not in {".pyc", ".so"}:
            try:
                texts[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
    return texts


def test_bare_install_pattern() -> None:
    bare = "seqbox"  # the other project's name on the index, spelled once: no line here reads as advice
    for tool in ("pip install", "uv tool install", "pipx install", "pip install -U"):
        bad = f"{tool} {bare}"
        assert BARE_INSTALL.search(bad), bad
    for good in ("pip install seqbox-cli", "uv tool install seqbox-cli", "pip install 'seqbox-cli[mcp]'"):
        assert not BARE_INSTALL.search(good), good


def test_no_install_line_names_the_other_projects_seqbox() -> None:
    texts = _shipped_text()
    assert "README.md" in texts
    assert any(name.startswith("seqbox/recipe/") for name in texts)
    found = [
        f"{name}: {match.group(0)}" for name, text in texts.items() for match in BARE_INSTALL.finditer(text)
    ]
    assert found == [], "the distribution is seqbox-cli"


def test_the_distribution_is_seqbox_cli() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "seqbox-cli"
    assert project["scripts"] == {"seqbox": "seqbox.cli:main"}
    for snippet in (GITHUB_ACTIONS, GITLAB_CI):
        assert "pip install seqbox-cli pytest" in snippet
    # the pre-commit snippet works from the index as written: no tag to name, a pinned release
    assert "repo: local" in PRE_COMMIT
    assert "rev:" not in PRE_COMMIT
    assert f"additional_dependencies: [seqbox-cli=={__version__}, mypy]" in PRE_COMMIT
    readme = (ROOT / "README.md").read_text()
    for line in ("pip install seqbox-cli", "uv tool install seqbox-cli", "pipx install seqbox-cli"):
        assert f"$ {line}\n" in readme


def test_scripts_find_the_wheel_by_its_name() -> None:
    # a wheel is named after the distribution (seqbox_cli-0.1.0-py3-none-any.whl);
    # the laptop lane globbed seqbox-*.whl after the rename and found none
    wheel_prefix = "seqbox_cli-"
    globs = {
        (name, match)
        for name, text in _shipped_text().items()
        if name.startswith("scripts/")
        for match in re.findall(r"[\w*.-]*seqbox[\w*.-]*\.whl", text)
    }
    assert globs, "no script names a seqbox wheel"
    assert all(match.rsplit("/", 1)[-1].startswith(wheel_prefix) for _, match in globs), globs


def test_vm_container_part_refuses_on_the_host(tmp_path: Path) -> None:
    """Run on a host by mistake, it made /sys/fs/cgroup/lane-pod (on a hybrid
    layout's tmpfs, as plain files): it refuses in one line instead. Where this
    test may, it runs the script in a private mount namespace over a scratch
    /sys/fs/cgroup, so even a script that does not refuse touches nothing real."""
    script = ROOT / "scripts" / "vm-container-part"
    argv = ["sh", str(script), str(tmp_path), sys.executable, "-q"]
    scratch = os.geteuid() == 0 and shutil.which("unshare") is not None
    if scratch:
        wrapper = (
            'mount -t tmpfs none /sys/fs/cgroup || exit 99; "$@"; rc=$?; ls -A /sys/fs/cgroup >&2; exit $rc'
        )
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", wrapper, "sh", *argv]
    # SEQBOX_IN_VM=1 alone is not enough: it needs the pure v2 hierarchy (the scratch tmpfs is not)
    for in_vm in ("", "1") if scratch else ("",):
        env = {**os.environ, "SEQBOX_IN_VM": in_vm}
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
        if scratch and res.returncode == 99:
            pytest.skip("cannot mount a scratch tmpfs over /sys/fs/cgroup here")
        assert res.returncode == 2, res
        assert res.stderr.startswith("vm-container-part: refusing to run outside"), res.stderr
        assert res.stderr.count("\n") == 1, res.stderr  # one line, and nothing made
    assert not Path("/sys/fs/cgroup/lane-pod").exists()
