"""examples/ run as the README shows them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import SeqboxRunner, slack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_agents(sbx: SeqboxRunner) -> None:
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / "agents.py"), "3"],
        cwd=sbx.project,
        env=sbx.env(),
        capture_output=True,
        text=True,
        timeout=slack(120),
        check=False,
    )
    assert res.returncode == 0, res
    lines = res.stdout.splitlines()
    assert len(lines) == 3, res.stdout
    for i in (0, 1):
        assert lines[i].startswith(f"agent-{i}: ok, exit 0, peak "), lines[i]
        assert lines[i].endswith(f"agent-{i} answered after using 64 MiB"), lines[i]
    assert lines[2].startswith("agent-2: killed at "), lines[2]
    assert "over its 256M limit: seqbox: killed: memory limit 256.0 MiB exceeded (peak " in lines[2]
    assert "seqbox:" not in res.stderr  # its messages are in the results, not printed


def test_agents_prints_why_seqbox_could_not_run_one(sbx: SeqboxRunner) -> None:
    """An `error` result's reason is on its stderr: the example prints it."""
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / "agents.py"), "2"],
        cwd=sbx.project,
        env=sbx.env({"SEQBOX_GRACE": "soon"}),  # every run: seqbox cannot do its job (125)
        capture_output=True,
        text=True,
        timeout=slack(120),
        check=False,
    )
    assert res.returncode == 1, res
    lines = res.stdout.splitlines()
    assert len(lines) == 2, res.stdout
    for i, line in enumerate(lines):
        assert line.startswith(f"agent-{i}: error, exit 125, peak 0 MiB: seqbox: "), line
        assert "SEQBOX_GRACE" in line, line
