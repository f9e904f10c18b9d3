"""The parsed-config cache: a configured project's runs import no TOML parser
after the first, yet an edit of the config counts at once, and a broken
cache entry only means parsing again."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import MIB, SeqboxRunner

#: a run through the CLI in-process, reporting its limit and whether tomllib was imported
CODE = (
    "import sys\n"
    "from seqbox.cli import main\n"
    "code = main(['run', '--json', '--', 'true'])\n"
    "print('tomllib' in sys.modules or 'tomli' in sys.modules, file=sys.stderr)\n"
)


def _run(sbx: SeqboxRunner) -> tuple[int, bool]:
    res = sbx.python(CODE)
    assert res.returncode == 0, res
    return json.loads(res.stdout)["mem_limit_bytes"], res.stderr.strip().endswith("True")


def test_a_config_is_parsed_once_and_an_edit_counts_at_once(sbx: SeqboxRunner) -> None:
    config = sbx.project / "seqbox.toml"
    config.write_text('mem = "100M"\n')
    assert _run(sbx) == (100 * MIB, True)  # parsed, and kept
    assert _run(sbx) == (100 * MIB, False)  # read back: no TOML parser imported
    config.write_text('mem = "200M"\n')  # the same size, maybe the same mtime
    assert _run(sbx) == (200 * MIB, True)
    assert _run(sbx) == (200 * MIB, False)


def test_a_broken_cache_entry_only_means_parsing_again(sbx: SeqboxRunner, tmp_path: Path) -> None:
    (sbx.project / "seqbox.toml").write_text('mem = "100M"\n')
    _run(sbx)
    [entry] = (tmp_path / "state" / "config").iterdir()
    for garbage in (b"", b"\x00garbage", b"\xe9" * 100):
        entry.write_bytes(garbage)
        assert _run(sbx) == (100 * MIB, True)


def test_a_config_holding_a_date_is_parsed_every_time(sbx: SeqboxRunner) -> None:
    """marshal cannot keep a datetime: no entry, and the run goes on."""
    (sbx.project / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.seqbox]\nmem = "100M"\n[tool.other]\nwhen = 2026-11-30\n'
    )
    assert _run(sbx) == (100 * MIB, True)
    assert _run(sbx) == (100 * MIB, True)
