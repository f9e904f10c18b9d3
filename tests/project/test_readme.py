"""Every snippet in README.md and docs/ runs as written, here or elsewhere named below.

* console lines (``$ ...``): run here, in an isolated project, with the exit status
  given in RUN; or listed in ELSEWHERE with the test or CI step that runs them. A
  README command in neither table fails this test, and so does a stale entry.
* python blocks run; the JSON block has the summary's fields; the TOML block is a
  valid config; each YAML block is one of the configs `seqbox init` prints, which
  tests/project/test_ecosystem.py runs (pre-commit for real, the CI steps' commands).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from seqbox.config import load_file_config, resolve
from seqbox.init import GITHUB_ACTIONS, GITLAB_CI, PRE_COMMIT
from seqbox.summary import FIELDS
from tests.helpers import SeqboxRunner, slack

ROOT = Path(__file__).resolve().parents[2]
#: the README and the docs with snippets (docs/reference.md is generated: tests/project/test_docs.py)
DOCUMENTS = (
    "README.md",
    "docs/guide.md",
    "docs/containers-and-laptops.md",
    "docs/design.md",
    "docs/comparison.md",
    "docs/development.md",
)
README = "\n".join((ROOT / name).read_text() for name in DOCUMENTS)

#: command -> the exit statuses it may have here (run in this order)
RUN: dict[str, set[int]] = {
    "seqbox run --mem 2G -- pytest -x": {0},
    "seqbox init": {0},
    "seqbox run -- python -m pytest -q": {0},
    "seqbox run --mem 2G --timeout 30m -- pytest -x": {0},
    "seqbox logs -n 5": {0},
    "seqbox run --json --mem 256M -- ./build.sh": {0},
    "seqbox run --lock gpu --slots 2 -- python train.py": {0},
    "seqbox run --lock agents --budget auto --mem 1G -- python train.py": {0},
    "seqbox status": {0},
    "seqbox kill --all": {1},  # nothing running
    "seqbox clean": {0},
    "seqbox logs": {0},  # the runs above
    "seqbox logs 1": {0},
    "seqbox report": {0},
    "seqbox report 2 --svg mem.svg": {0},
    "seqbox doctor": {0, 1},  # 1: only polling here
    "seqbox init --recipe": {0},
    "python examples/agents.py 4": {0},
}
#: command -> where it runs instead
ELSEWHERE: dict[str, str] = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install . && seqbox run --mem 256M -- python3 -c "
    "\"print('hello from inside the sandbox')\"": ".ci/run (the quick start)",
    "pip install '.[test]' && python -m pytest": ".ci/run (the quick start)",
    "pip install seqbox-cli": "tests/project/test_ecosystem.py::test_pip_install (the built wheel and sdist)",
    "uv tool install seqbox-cli": "tests/project/test_ecosystem.py::test_uv_tool_install (the built wheel)",
    "pipx install seqbox-cli": "not run (pipx installs the same wheel into its own venv, as uv tool does)",
    "pip install -e '.[test]'": "the development set-up; .ci/run installs '.[test]'",
    "python -m pytest": ".ci/run",
    'python -m pytest -m "slow and not ecosystem"': ".ci/run (the slow lane)",
    "python -m pytest -m ecosystem": ".ci/run (the ecosystem lane)",
    "python -m pytest tests/queue": "a part of .ci/run's suite",
    "scripts/vm-test -- -k cgroup2 tests": ".ci/run (the cgroup v2 lane)",
    "scripts/vm-test --container -- -k cgroup2 tests": ".ci/run (the cgroup v2 lane with its container part)",
    "scripts/vm-laptop": ".ci/run (the laptop lane)",
    "python bench/launch_overhead.py": "a benchmark (prints numbers; bench/)",
    "seqbox logs --follow": "tests/cli/test_runlog.py::test_logs_follow_prints_the_running_commands_events",
    "seqbox monitor": "tests/cli/test_runlog.py::test_monitor_under_tmux (full screen until q)",
}
FILES = {
    "test_ok.py": "def test_ok() -> None:\n    assert True\n",
    "build.sh": "#!/bin/sh\necho built\n",
    "train.py": "print('trained')\n",
}


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README, re.M | re.S)


def console_commands() -> list[tuple[str, list[str]]]:
    """(command without its comment, the output lines shown after it)."""
    found: list[tuple[str, list[str]]] = []
    for block in blocks("console"):
        for line in block.splitlines():
            if line.startswith("$ "):
                command = re.sub(r"\s+#.*$", "", line[2:]).strip()
                found.append((command, []))
            else:
                found[-1][1].append(line)
    return found


def test_only_known_languages() -> None:
    languages = set(re.findall(r"^```(\w*)$", README, re.M)) - {""}
    assert languages == {"console", "json", "toml", "yaml", "python"}


def test_every_console_command_is_run_here_or_elsewhere() -> None:
    commands = [command for command, _ in console_commands()]
    unknown = [c for c in commands if c not in RUN and c not in ELSEWHERE]
    assert unknown == [], "README commands that no test runs: add them to RUN or ELSEWHERE"
    stale = [c for c in [*RUN, *ELSEWHERE] if c not in commands]
    assert stale == [], "commands no longer in the README"


def _shape(line: str) -> str:
    line = re.sub(r"; biggest: pid \d+ \((.*), [\d.]+ MiB\)", r"; biggest: pid N (\1, N MiB)", line)
    return re.sub(r"peak \d+ MiB", "peak N MiB", re.sub(r"\(peak [\d.]+ MiB\)", "(peak N MiB)", line))


@pytest.mark.slow  # about 10 s: pytest, the agents example and doctor under seqbox
def test_console_commands_run_as_written(sbx: SeqboxRunner) -> None:
    for name, text in FILES.items():
        (sbx.project / name).write_text(text)
    (sbx.project / "build.sh").chmod(0o755)
    env = sbx.env({"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    shown = dict(console_commands())
    for command, statuses in RUN.items():
        cwd = ROOT if command.startswith("python examples/") else sbx.project
        res = subprocess.run(
            ["sh", "-c", command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=slack(120),
            check=False,
        )
        assert res.returncode in statuses, f"$ {command}\n{res.stdout}\n{res.stderr}"
        if shown[command]:  # the README shows its output: the same, but for measured numbers
            assert [_shape(line) for line in res.stdout.splitlines()] == [
                _shape(line) for line in shown[command]
            ]


def test_python_blocks_run(sbx: SeqboxRunner) -> None:
    found = blocks("python")
    assert found
    for code in found:
        res = sbx.python(code)
        assert res.returncode == 0, f"{code}\n{res.stdout}\n{res.stderr}"


def test_json_block_is_the_summary() -> None:
    # the other JSON block is the MCP host configuration (tests/api/test_mcp.py runs it)
    (summary,) = [block for block in blocks("json") if '"mcpServers"' not in block]
    assert tuple(json.loads(summary)) == FIELDS


def test_toml_block_is_a_valid_config(tmp_path: Path) -> None:
    (config,) = blocks("toml")
    (tmp_path / "pyproject.toml").write_text(config)
    assert load_file_config(str(tmp_path)).top
    assert resolve({}, str(tmp_path), {"CI": "true"}).mem == 4 * 2**30


def test_yaml_blocks_are_the_tested_configs() -> None:
    found = blocks("yaml")
    assert set(found) == {PRE_COMMIT, GITHUB_ACTIONS, GITLAB_CI}
    readme = (ROOT / "README.md").read_text()
    assert PRE_COMMIT in readme
    assert GITHUB_ACTIONS in readme
