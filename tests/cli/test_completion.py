"""Shell completion comes from typer, which ``seqbox run`` never imports (it is on
the start-up path of every wrapped command: tests/project/test_hotpath.py holds it to that)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import SeqboxRunner


def test_bash_completion_of_commands_and_options(sbx: SeqboxRunner) -> None:
    def complete(words: str) -> list[str]:
        env = sbx.env(
            {
                "_SEQBOX_COMPLETE": "complete_bash",
                "COMP_WORDS": words,
                "COMP_CWORD": str(len(words.split()) - 1),
            }
        )
        res = subprocess.run(
            [sys.executable, "-m", "seqbox"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert res.returncode == 0, res
        return res.stdout.split()

    assert complete("seqbox in") == ["init"]
    assert set(complete("seqbox st")) == {"status"}
    assert {"--toml", "--recipe", "--force"} <= set(complete("seqbox init --"))
