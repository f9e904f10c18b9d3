"""Which project a directory belongs to: git top level, else the nearest
ancestor with pyproject.toml or seqbox.toml, else the directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqbox.project import fnv1a64, project_key, project_root
from tests.helpers import SeqboxRunner, slack, wait_for_file


def test_outside_git_the_nearest_marker_is_the_root(tmp_path: Path) -> None:
    top = tmp_path / "proj"
    (top / "tests" / "unit").mkdir(parents=True)
    (top / "pyproject.toml").write_text("")
    assert project_root(str(top / "tests" / "unit"), {}) == str(top)
    (top / "tests" / "seqbox.toml").write_text("")  # a nearer marker wins
    assert project_root(str(top / "tests" / "unit"), {}) == str(top / "tests")


def test_git_top_level_wins_over_markers(tmp_path: Path) -> None:
    top = tmp_path / "repo"
    (top / "sub").mkdir(parents=True)
    (top / ".git").mkdir()
    (top / "sub" / "pyproject.toml").write_text("")
    assert project_root(str(top / "sub"), {}) == str(top)


def test_no_marker_means_the_directory(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert project_root(str(tmp_path / "a" / "b"), {}) == str(tmp_path / "a" / "b")


def test_seqbox_project_overrides(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    assert project_root(str(tmp_path), {"SEQBOX_PROJECT": "/"}) == "/"


def test_a_run_in_a_subfolder_queues_behind_the_root(
    sbx: SeqboxRunner, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9 item 1: outside git, a run started in tests/ waits for the one
    running at the project's root."""
    monkeypatch.delenv("SEQBOX_PROJECT")
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    sub = project / "tests"
    sub.mkdir()
    marks = tmp_path / "marks"
    first = sbx.start("--", "sh", "-c", f"echo first-start >> {marks}; sleep 1.5; echo first-end >> {marks}")
    wait_for_file(marks)
    second = sbx.start("--", "sh", "-c", f"echo second >> {marks}", cwd=sub)
    assert first.wait(timeout=slack(20)) == 0
    assert second.wait(timeout=slack(20)) == 0
    assert marks.read_text().split() == ["first-start", "first-end", "second"]


@pytest.mark.parametrize(
    ("data", "value"),
    [(b"", 0xCBF29CE484222325), (b"a", 0xAF63DC4C8601EC8C), (b"foobar", 0x85944171F73967E8)],
)
def test_the_hash_is_fnv1a_64(data: bytes, value: int) -> None:
    """The published FNV-1a test vectors."""
    assert fnv1a64(data) == value


def test_a_projects_key_does_not_change() -> None:
    """It names the project's queue, logs and cgroups on disk: runs of two
    seqbox versions must meet in the same queue, and a new version must find
    what an old one's crash left."""
    assert project_key("/home/me/src/my project") == "my_project-ade96568425fc111"
