"""``seqbox init``: a commented config that works as written, never over an existing
one, the pre-commit and CI wiring printed, and the recipe's scripts written from the
installed package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqbox.config import load_file_config, resolve
from seqbox.init import GITHUB_ACTIONS, GITLAB_CI, PRE_COMMIT, RECIPE_SCRIPTS, recipe_sources
from seqbox.options import CONFIG_KEYS
from tests.helpers import SeqboxRunner

PYPROJECT = '[project]\nname = "demo"\nversion = "1"\n'


def _init(sbx: SeqboxRunner, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seqbox", "init", *args],
        cwd=cwd or sbx.project,
        env=sbx.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _uncomment_every_key(text: str) -> str:
    lines = [
        line[2:] if line.startswith("# ") and " = " in line.split("#")[1] else line
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def test_into_pyproject(sbx: SeqboxRunner) -> None:
    pyproject = sbx.project / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    res = _init(sbx)
    assert res.returncode == 0, res
    assert res.stderr == ""
    assert res.stdout.startswith(f"wrote [tool.seqbox] in {pyproject}: mem = 2G and timeout = 30m;")
    text = pyproject.read_text()
    assert text.startswith(PYPROJECT + "\n[tool.seqbox]\n")
    assert not (sbx.project / "seqbox.toml").exists()
    config = load_file_config(str(sbx.project))
    assert config.path == str(pyproject)
    assert config.top == {"mem": "2G", "timeout": "30m"}
    assert config.profiles == {"ci": {}}
    # and seqbox runs with it
    summary = sbx.run("--json", "--", "true").json()
    assert summary["mem_limit_bytes"] == 2 * 2**30


def test_every_commented_key_is_valid_when_uncommented(sbx: SeqboxRunner) -> None:
    res = _init(sbx)
    assert res.returncode == 0, res
    path = sbx.project / "seqbox.toml"
    path.write_text(_uncomment_every_key(path.read_text()))
    config = load_file_config(str(sbx.project))

    assert set(config.top) == set(CONFIG_KEYS)  # every key is shown
    assert config.profiles["ci"] == {"mem": "4G", "timeout": "1h"}
    options = resolve({}, str(sbx.project), {"CI": "true"})  # bad values would raise here
    assert options.mem == 4 * 2**30


def test_seqbox_toml_when_there_is_no_pyproject(sbx: SeqboxRunner) -> None:
    res = _init(sbx)
    assert res.returncode == 0, res
    assert res.stdout.startswith(f"wrote {sbx.project / 'seqbox.toml'}: ")
    text = (sbx.project / "seqbox.toml").read_text()
    assert "[tool.seqbox]" not in text
    assert "\n[profiles.ci]\n" in text
    assert load_file_config(str(sbx.project)).top == {"mem": "2G", "timeout": "30m"}


def test_toml_flag_leaves_pyproject_alone(sbx: SeqboxRunner) -> None:
    (sbx.project / "pyproject.toml").write_text(PYPROJECT)
    res = _init(sbx, "--toml")
    assert res.returncode == 0, res
    assert (sbx.project / "pyproject.toml").read_text() == PYPROJECT
    assert (sbx.project / "seqbox.toml").is_file()


def test_from_a_subfolder_it_writes_at_the_project_root(sbx: SeqboxRunner) -> None:
    sub = sbx.project / "src" / "pkg"
    sub.mkdir(parents=True)
    res = _init(sbx, cwd=sub)
    assert res.returncode == 0, res
    assert (sbx.project / "seqbox.toml").is_file()
    assert not (sub / "seqbox.toml").exists()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("seqbox.toml", 'mem = "1G"\n'),
        ("pyproject.toml", PYPROJECT + '\n[tool.seqbox]\nmem = "1G"\n'),
        ("pyproject.toml", PYPROJECT + '\n[tool.seqbox.profiles.ci]\nmem = "1G"\n'),
    ],
    ids=["seqbox.toml", "tool.seqbox", "only-a-profile"],
)
def test_never_over_an_existing_config(sbx: SeqboxRunner, name: str, content: str) -> None:
    """Run again on a configured project, init says what is there (and the wiring) and exits 0."""
    path = sbx.project / name
    path.write_text(content)
    there = str(path) if name == "seqbox.toml" else f"[tool.seqbox] in {path}"
    for args in ([], ["--toml"]):
        res = _init(sbx, *args)
        assert res.returncode == 0, res
        first = res.stdout.splitlines()[0]
        assert first.startswith(f"{there} is there already, left as it is"), res.stdout
        assert ("mem = '1G'" in first) == (name == "seqbox.toml" or "profiles" not in content), first
        assert ("profiles: ci" in first) == ("profiles" in content), first
        assert "pre-commit" in res.stdout
        assert res.stderr == ""
        assert path.read_text() == content
    assert {p.name for p in sbx.project.iterdir()} == {name}


def test_prints_the_wiring(sbx: SeqboxRunner) -> None:
    res = _init(sbx)
    assert res.returncode == 0, res
    for snippet in (PRE_COMMIT, GITHUB_ACTIONS, GITLAB_CI):
        indented = "".join(f"    {line}\n" for line in snippet.splitlines())
        assert indented in res.stdout


def test_recipe_writes_the_installed_scripts(sbx: SeqboxRunner) -> None:
    res = _init(sbx, "--recipe")
    assert res.returncode == 0, res
    folder = sbx.project / "scripts"
    assert sorted(p.name for p in folder.iterdir()) == sorted(RECIPE_SCRIPTS)
    for name, content in recipe_sources().items():
        assert (folder / name).read_bytes() == content
        assert os.access(folder / name, os.X_OK)
        assert f"wrote {folder / name}\n" in res.stdout
    assert not (sbx.project / "seqbox.toml").exists()  # --recipe writes only the scripts
    again = _init(sbx, "--recipe")
    assert again.returncode == 0, again
    assert "wrote" not in again.stdout
    assert "there already" in again.stdout
    assert "--force" in again.stdout


def test_recipe_into_a_folder_and_force(sbx: SeqboxRunner) -> None:
    folder = sbx.project / "tools"
    folder.mkdir()
    (folder / "wait_all.sh").write_text("#!/bin/bash\n# the old one\n")
    (folder / "other.sh").write_text("mine\n")
    res = _init(sbx, "--recipe", "tools")
    assert res.returncode == 125, res
    assert (
        res.stderr == f"seqbox: {folder} has its own wait_all.sh; left as they are (--force replaces them)\n"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["other.sh", "wait_all.sh"]
    res = _init(sbx, "--recipe", "tools", "--force")
    assert res.returncode == 0, res
    assert (folder / "wait_all.sh").read_bytes() == recipe_sources()["wait_all.sh"]
    assert (folder / "other.sh").read_text() == "mine\n"


@pytest.mark.parametrize("args", [["tools"], ["--force"]])
def test_recipe_only_arguments_need_recipe(sbx: SeqboxRunner, args: list[str]) -> None:
    res = _init(sbx, *args)
    assert res.returncode == 125, res
    assert res.stderr.startswith("seqbox: ")
    assert "--recipe" in res.stderr
    assert list(sbx.project.iterdir()) == []
