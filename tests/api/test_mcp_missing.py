"""``seqbox mcp`` without the MCP SDK: one line saying how to get it, exit 125
(the server itself is tested with the SDK in tests/api/test_mcp.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import SeqboxRunner


def test_without_the_sdk_it_says_how_to_get_it(sbx: SeqboxRunner, tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "mcp.py").write_text("raise ImportError('not installed')\n")  # shadows an installed SDK
    res = subprocess.run(
        [sys.executable, "-m", "seqbox", "mcp"],
        env=sbx.env({"PYTHONPATH": str(hide)}),
        cwd=sbx.project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 125, res
    assert res.stderr == "seqbox: seqbox mcp needs the MCP SDK: pip install 'seqbox-cli[mcp]'\n", res
    assert res.stdout == ""


def test_bad_server_options_are_one_line(sbx: SeqboxRunner) -> None:
    res = sbx.run("mcp", "--mem", "lots", cli=True)
    assert res.returncode == 125, res
    assert res.stderr.startswith("seqbox: --mem: "), res
    assert len(res.stderr.splitlines()) == 1, res
