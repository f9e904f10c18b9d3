"""Forking the command into its cgroup, many times over: clone3 is called with
the interpreter's fork hooks, and plain fork is used while another thread (a
``--log`` copier) lives. Neither may ever hang or lose a run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import SeqboxRunner, slack

ROUNDS = 300


@pytest.mark.slow
@pytest.mark.vm_slow
@pytest.mark.timeout(900)  # ~25 s on a quiet 2-core machine; a hang shows as the 240 s bound below
def test_300_alternating_runs_never_hang(sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    errors = tmp_path / "errors"
    seqbox = f"{sys.executable} -m seqbox run --backend {cgroup_backend} --mem 64M"
    script = f"""
i=0; ok=0
while [ $i -lt {ROUNDS} ]; do
  case $((i % 3)) in
    0) {seqbox} --json -- sh -c 'echo j' 2>>{errors} | grep -q '"stdout": "j' && ok=$((ok + 1)) ;;
    1) {seqbox} --log {log} -- sh -c 'echo l' >/dev/null 2>>{errors} && ok=$((ok + 1)) ;;
    2) {seqbox} -- true 2>>{errors} && ok=$((ok + 1)) ;;
  esac || echo "run $i failed ($?)" >>{errors}
  i=$((i + 1))
done
echo "$ok"
"""
    proc = subprocess.run(
        ["sh", "-c", script], env=sbx.env(), cwd=sbx.project, capture_output=True, text=True,
        timeout=slack(240), check=False,
    )  # fmt: skip
    failures = errors.read_text() if errors.exists() else ""
    assert proc.stdout.strip() == str(ROUNDS), failures[-3000:] + proc.stderr[-2000:]
    assert log.read_text().count("=== seqbox exit: status=ok") == ROUNDS // 3


def test_retries_fork_beside_a_live_log_thread(
    sbx: SeqboxRunner, cgroup_backend: str, tmp_path: Path
) -> None:
    """Each try's --log copier threads may still run when the next try forks."""
    log = tmp_path / "retry.log"
    res = sbx.run(
        "--log", str(log), "--retry", "30", "--", "sh", "-c", "echo try; exit 1",
        backend=cgroup_backend, timeout=120,
    )  # fmt: skip
    assert res.returncode == 1, res
    assert res.stdout.count("try") == 31, res
    assert log.read_text().count("=== seqbox exit: status=failed") == 31
