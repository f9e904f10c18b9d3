"""Every worktree of a git repository is that repository's project: runs started
in two worktrees wait in one queue (agents working in worktrees share a machine)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from seqbox.project import project_root
from tests.helpers import SeqboxRunner


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SEQBOX_PROJECT")  # the project comes from git here
    path = tmp_path / "repo"
    path.mkdir()
    _git("init", "-q", cwd=path)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one", cwd=path)
    _git("worktree", "add", "-q", str(tmp_path / "second"), cwd=path)
    (path / "sub").mkdir()
    return path


def test_worktrees_are_one_project(repo: Path, tmp_path: Path) -> None:
    root = str(repo.resolve())
    assert project_root(str(tmp_path / "second")) == root
    assert project_root(str(repo / "sub")) == root
    assert project_root(str(repo)) == root


def test_a_submodule_like_gitfile_without_commondir_is_its_own_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEQBOX_PROJECT")
    inner = tmp_path / "inner"
    (tmp_path / "modules" / "inner").mkdir(parents=True)
    inner.mkdir()
    (inner / ".git").write_text("gitdir: ../modules/inner\n")
    assert project_root(str(inner)) == str(inner.resolve())


def test_runs_in_two_worktrees_queue(repo: Path, tmp_path: Path, sbx: SeqboxRunner) -> None:
    log = tmp_path / "log"
    step = f'echo "start $0" >> {log}; sleep 1; echo "end $0" >> {log}'
    first = sbx.start("--", "sh", "-c", step, "first", cwd=repo)
    for _ in range(500):
        if log.exists():
            break
        time.sleep(0.01)
    second = sbx.start("--", "sh", "-c", step, "second", cwd=tmp_path / "second")
    assert first.wait(30) == 0
    assert second.wait(30) == 0
    assert log.read_text().split("\n") == ["start first", "end first", "start second", "end second", ""]
