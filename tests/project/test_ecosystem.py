"""seqbox as its users get it: built with ``python -m build``, installed with pip
and with ``uv tool install`` into fresh environments, and used from real
pre-commit (installed from the package index) with the README's configuration
exactly as printed.

seqbox-cli is not on the package index yet: where the README's snippets install
``seqbox-cli==VERSION`` the tests make that requirement resolvable from this
checkout's freshly built wheel (``PIP_FIND_LINKS``, which pre-commit's pip honours),
so the snippet's text stays what users get.

Slow (a few minutes: it installs pre-commit, build, uv, mypy and seqbox itself
into temporary environments). Nothing is written to the real home: pip, uv and
pre-commit caches go to temporary directories.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seqbox import __version__
from seqbox.init import GITHUB_ACTIONS, GITLAB_CI, PRE_COMMIT
from tests.helpers import slack

ROOT = Path(__file__).resolve().parents[2]
TAG = f"v{__version__}"
PUBLIC_URL = "https://github.com/seqbox/seqbox"
GIT_ID = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}

pytestmark = [pytest.mark.slow, pytest.mark.ecosystem, pytest.mark.timeout(900)]


def sh(
    *argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; fail the test with its output if it fails."""
    res = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=slack(timeout),
        check=False,
    )
    if res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


def venv(path: Path, *packages: str | Path) -> Path:
    """A fresh virtual environment with ``packages``; returns its bin directory."""
    sh(sys.executable, "-m", "venv", path)
    if packages:
        sh(path / "bin" / "python", "-m", "pip", "install", "-q", *packages)
    return path / "bin"


class Toolbox:
    """A scratch area shared by the module's tests: the tools, the release, caches."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.caches = {
            "PIP_CACHE_DIR": str(base / "pip-cache"),
            "UV_CACHE_DIR": str(base / "uv-cache"),
            "PRE_COMMIT_HOME": str(base / "pre-commit-home"),
        }
        self.bin = base / "tools" / "bin"
        self.source = base / "seqbox-src"
        self.dist = base / "dist"

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.caches, **GIT_ID, **extra}


def _release_copy(dest: Path) -> None:
    """This checkout's files (tracked and new, not ignored) as a git repository
    whose HEAD is tagged like a release."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    sh("git", "init", "-q", cwd=dest)
    sh("git", "add", "-A", cwd=dest)
    sh("git", "commit", "-q", "-m", "release", cwd=dest, env=GIT_ID)
    sh("git", "tag", "-a", TAG, "-m", f"seqbox {__version__}", cwd=dest, env=GIT_ID)


@pytest.fixture(scope="module")
def toolbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toolbox]:
    box = Toolbox(tmp_path_factory.mktemp("ecosystem"))
    os.environ.update(box.caches)  # for the fixture's own installs
    try:
        venv(box.base / "tools", "pre-commit", "build", "uv")
        box.source.mkdir()
        _release_copy(box.source)
        sh(box.bin / "python", "-m", "build", "--outdir", box.dist, box.source)
        yield box
    finally:
        for name in box.caches:
            os.environ.pop(name, None)


def _find_links(toolbox: Toolbox) -> str:
    """PIP_FIND_LINKS with this checkout's wheel first (pip takes a space-separated list)."""
    return " ".join(filter(None, [str(toolbox.dist), os.environ.get("PIP_FIND_LINKS", "")]))


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def _check_installed(bin_dir: Path, project: Path) -> None:
    version = sh(bin_dir / "seqbox", "--version", cwd=project)
    assert version.stdout == f"seqbox {__version__}\n"
    res = sh(bin_dir / "seqbox", "run", "--mem", "128M", "--", "sh", "-c", "echo hello", cwd=project)
    assert res.stdout == "hello\n"
    recipe = sh(bin_dir / "seqbox", "init", "--recipe", cwd=project)  # scripts from the installed package
    assert "wrote" in recipe.stdout
    assert (project / "scripts" / "wait_all.sh").read_bytes() == (
        ROOT / "seqbox" / "recipe" / "wait_all.sh"
    ).read_bytes()
    shutil.rmtree(project / "scripts")


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_pip_install(toolbox: Toolbox, kind: str, tmp_path: Path, project: Path) -> None:
    artifact = _one(toolbox.dist, "*.whl" if kind == "wheel" else "*.tar.gz")
    bin_dir = venv(tmp_path / "env", artifact)
    _check_installed(bin_dir, project)
    module = sh(bin_dir / "python", "-m", "seqbox", "--version", cwd=project)
    assert module.stdout == f"seqbox {__version__}\n"
    api = sh(
        bin_dir / "python",
        "-c",
        "import seqbox; print(seqbox.run(['true'], capture=True).status)",
        cwd=project,
    )
    assert api.stdout == "ok\n"
    metadata = sh(
        bin_dir / "python",
        "-c",
        "from importlib.metadata import metadata; m = metadata('seqbox-cli'); "
        "print('\\n'.join(m.get_all('Project-URL') + m.get_all('Classifier')))",
    ).stdout.splitlines()
    assert f"Source, {PUBLIC_URL}" in metadata
    assert {f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 15)} <= set(metadata)
    # typer finds the shell among seqbox's ancestors, as when a person types it
    completion = sh("bash", "-c", f"{bin_dir / 'seqbox'} --show-completion; true", cwd=project)
    assert "_seqbox_completion" in completion.stdout


def test_uv_tool_install(toolbox: Toolbox, tmp_path: Path, project: Path) -> None:
    wheel = _one(toolbox.dist, "*.whl")
    # uv does not read pip's configuration: hand it seqbox's dependencies as pip finds them
    wheelhouse = tmp_path / "wheelhouse"
    sh(toolbox.bin / "python", "-m", "pip", "download", "-q", "--dest", wheelhouse, wheel)
    tool_bin = tmp_path / "uv-bin"
    env = toolbox.env(UV_TOOL_DIR=str(tmp_path / "uv-tools"), UV_TOOL_BIN_DIR=str(tool_bin))
    sh(toolbox.bin / "uv", "tool", "install", "--no-index", "--find-links", wheelhouse, wheel, env=env)
    _check_installed(tool_bin, project)


# -- pre-commit --------------------------------------------------------------------------


@pytest.fixture
def user_repo(toolbox: Toolbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's git repository with pre-commit installed as its hook; the project
    is the repository (not the test's SEQBOX_PROJECT)."""
    monkeypatch.delenv("SEQBOX_PROJECT")
    # the README's `repo: local` hook calls seqbox and pytest from the user's environment
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for name, value in toolbox.env().items():
        monkeypatch.setenv(name, value)
    repo = tmp_path / "user"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    return repo


def _commit(repo: Path, message: str, toolbox: Toolbox) -> subprocess.CompletedProcess[str]:
    """``git commit``; its hooks' output (which git sends to stderr) is in stdout."""
    sh("git", "add", "-A", cwd=repo)
    return subprocess.run(
        ["git", "commit", "-m", message],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=slack(600),
        check=False,
    )


def test_the_readme_pre_commit_config_works_as_written(
    toolbox: Toolbox, user_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (ROOT / "README.md").read_text()
    assert PRE_COMMIT in readme
    assert f"additional_dependencies: [seqbox-cli=={__version__}, mypy]" in PRE_COMMIT
    # seqbox-cli==VERSION as the index will have it: this checkout's wheel
    monkeypatch.setenv("PIP_FIND_LINKS", _find_links(toolbox))
    (user_repo / ".pre-commit-config.yaml").write_text(PRE_COMMIT)
    (user_repo / "typed.py").write_text("def double(x: int) -> int:\n    return 2 * x\n")
    (user_repo / "test_typed.py").write_text(
        "from typed import double\n\n\ndef test_double() -> None:\n    assert double(2) == 4\n"
    )
    sh(toolbox.bin / "pre-commit", "validate-config", ".pre-commit-config.yaml", cwd=user_repo)
    sh(toolbox.bin / "pre-commit", "install", cwd=user_repo)
    ok = _commit(user_repo, "typed", toolbox)
    assert ok.returncode == 0, ok.stdout
    assert re.search(r"^mypy \(under seqbox\)\.+Passed$", ok.stdout, re.M), ok.stdout
    assert re.search(r"^pytest \(under seqbox\)\.+Passed$", ok.stdout, re.M), ok.stdout
    # the filenames reach mypy: a type error in a staged file fails the commit
    (user_repo / "untyped.py").write_text("def half(x):\n    return x / 2\n")
    bad = _commit(user_repo, "untyped", toolbox)
    assert bad.returncode != 0, bad.stdout
    assert "untyped.py:1: error: Function is missing a type annotation" in bad.stdout, bad.stdout


def test_a_hook_over_its_memory_limit_fails_the_commit(toolbox: Toolbox, user_repo: Path) -> None:
    config = f"""\
repos:
  - repo: {toolbox.source}
    rev: {TAG}
    hooks:
      - id: seqbox
        name: hungry
        args: [--mem=64M, --, python, -c, "held = b'x' * (512 * 2**20)"]
"""
    (user_repo / ".pre-commit-config.yaml").write_text(config)
    sh(toolbox.bin / "pre-commit", "install", cwd=user_repo)
    res = _commit(user_repo, "hungry", toolbox)
    assert res.returncode != 0, res.stdout
    assert re.search(r"^hungry\.+Failed$", res.stdout, re.M), res.stdout
    assert "- exit code: 137" in res.stdout, res.stdout
    assert "seqbox: killed: memory limit 64.0 MiB exceeded (peak " in res.stdout, res.stdout


def test_commits_in_two_worktrees_queue(toolbox: Toolbox, user_repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "hooks.log"
    stamp = f'$(basename "$PWD") $(date +%s.%N)" >> {log}'
    step = f'echo "start {stamp}; sleep 1; echo "end {stamp}'
    config = f"""\
repos:
  - repo: local
    hooks:
      - id: slow
        name: slow (under seqbox)
        entry: seqbox run -- sh -c '{step}'
        language: system
        pass_filenames: false
"""
    (user_repo / ".pre-commit-config.yaml").write_text(config)
    sh("git", "add", "-A", cwd=user_repo)
    sh("git", "commit", "-q", "--no-verify", "-m", "config", cwd=user_repo)
    sh(toolbox.bin / "pre-commit", "install", cwd=user_repo)
    other = tmp_path / "other"
    sh("git", "worktree", "add", "-q", other, cwd=user_repo)
    for tree in (user_repo, other):
        (tree / f"{tree.name}.txt").write_text(tree.name)
        sh("git", "add", "-A", cwd=tree)
    commits = [
        subprocess.Popen(
            ["git", "commit", "-m", f"from {tree.name}"],
            cwd=tree,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for tree in (user_repo, other)
    ]
    outputs = []
    try:
        for proc in commits:
            outputs.append(proc.communicate(timeout=slack(120))[0])
    finally:
        for proc in commits:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in commits] == [0, 0], outputs
    events = [line.split() for line in log.read_text().splitlines()]
    assert sorted(name for kind, name, _ in events if kind == "start") == ["other", "user"], events
    events.sort(key=lambda event: float(event[2]))
    # one hook at a time: each start is followed by its own end
    assert [kind for kind, _, _ in events] == ["start", "end", "start", "end"], events
    assert events[0][1] == events[1][1], events
    assert events[2][1] == events[3][1], events


# -- CI snippets --------------------------------------------------------------------------


def _yaml(toolbox: Toolbox, text: str) -> dict[str, Any]:
    """``text`` parsed by PyYAML (pre-commit's own YAML library, in the toolbox)."""
    res = subprocess.run(
        [
            str(toolbox.bin / "python"),
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data = json.loads(res.stdout)
    assert isinstance(data, dict)
    return data


def test_the_ci_snippets_run_as_written(toolbox: Toolbox, tmp_path: Path, project: Path) -> None:
    github = _yaml(toolbox, GITHUB_ACTIONS)
    gitlab = _yaml(toolbox, GITLAB_CI)
    steps = github["jobs"]["test"]["steps"]
    github_lines = [step["run"] for step in steps if "run" in step]
    gitlab_lines = gitlab["test"]["script"]
    assert github_lines == gitlab_lines  # the same two commands
    install, run = github_lines
    assert install == "pip install seqbox-cli pytest"
    # both lines as written; seqbox-cli resolves to this checkout's wheel (see above)
    bin_dir = venv(tmp_path / "ci")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CI": "true", "PIP_FIND_LINKS": _find_links(toolbox)}
    sh("sh", "-c", install, cwd=project, env=env)
    (project / "test_it.py").write_text("def test_it() -> None:\n    assert True\n")
    res = sh("sh", "-c", run, cwd=project, env=env)
    assert "1 passed" in res.stdout
    report = (project / "seqbox.json").read_text()
    assert '"status": "ok"' in report
    assert github["jobs"]["test"]["steps"][-1]["with"]["path"] == "seqbox.json"
    assert gitlab["test"]["artifacts"]["paths"] == ["seqbox.json"]
