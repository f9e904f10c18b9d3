"""The config file is read by every run: an edit counts at once (the same
size, maybe the same mtime), and nothing of it is kept in the state directory."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import MIB, SeqboxRunner


def _limit(sbx: SeqboxRunner) -> object:
    res = sbx.run("--json", "--", "true")
    assert res.returncode == 0, res
    return res.json()["mem_limit_bytes"]


def test_an_edit_of_the_config_counts_at_once(sbx: SeqboxRunner, tmp_path: Path) -> None:
    config = sbx.project / "seqbox.toml"
    config.write_text('mem = "100M"\n')
    assert _limit(sbx) == 100 * MIB
    config.write_text('mem = "200M"\n')
    assert _limit(sbx) == 200 * MIB
    assert not (tmp_path / "state" / "config").exists()
