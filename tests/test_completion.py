"""Shell completion comes from typer, which ``seqbox run`` never imports (it is on
the start-up path of every wrapped command)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import SeqboxRunner

#: what ``seqbox run`` must not import: each costs every wrapped command milliseconds
#: (typer 60, typing 9, ...; json is allowed: the queue and the run log use it)
SLOW_IMPORTS = ("typer", "rich", "click", "typing", "subprocess", "psutil", "dataclasses")


@pytest.mark.parametrize("args", [["--no-lock"], [], ["--backend", "poll"]], ids=["no-lock", "queue", "poll"])
def test_run_does_not_import_typer(sbx: SeqboxRunner, args: list[str]) -> None:
    code = (
        "import sys\n"
        "from seqbox.cli import main\n"
        f"code = main(['run', *{args!r}, '--', 'true'])\n"
        f"print(code, sorted(m for m in {SLOW_IMPORTS!r} if m in sys.modules))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=sbx.project,
        env=sbx.env(),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.stdout == "0 []\n", res


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
