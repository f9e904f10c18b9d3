"""The documentation: a short README that links to docs/, a reference generated from
the code and current, links that lead somewhere, and --help that points to the docs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from seqbox.docs import DOCS_URL, FIELD_HELP, reference
from seqbox.options import OPTIONS
from seqbox.summary import FIELDS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_the_reference_is_current() -> None:
    assert (DOCS / "reference.md").read_text() == reference(), (
        "docs/reference.md is stale: python -m seqbox.docs > docs/reference.md"
    )


def test_the_reference_names_every_option_field_and_key() -> None:
    text = reference()
    for opt in OPTIONS:
        for flag in opt.flags:
            assert f"`{flag}" in text, flag
        if opt.config:
            assert f"| `{opt.key}` |" in text, opt.key
    for name in FIELDS:
        assert f"| `{name}` | {FIELD_HELP[name]}"[:30] in text, name
    assert (
        "| `--warn-at FRACTION` | print one warning when the tree passes this share of --mem | `0.8` |"
        in text
    )


def test_the_readme_is_short_and_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    docs = sorted(path.name for path in DOCS.glob("*.md"))
    assert docs == [
        "admission.md",
        "comparison.md",
        "containers-and-laptops.md",
        "design.md",
        "development.md",
        "github-action.md",
        "guide.md",
        "mcp.md",
        "reference.md",
    ]
    for name in docs:
        assert f"(docs/{name}" in readme, name


def test_relative_links_lead_somewhere() -> None:
    for path in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name}: {target}"


def test_help_points_to_the_docs() -> None:
    for args in (["--help"], ["run", "--help"]):
        res = subprocess.run(
            [sys.executable, "-m", "seqbox", *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert res.returncode == 0, res
        assert DOCS_URL in res.stdout, args


def test_top_level_help_does_not_cut_command_descriptions() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "seqbox", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    commands = res.stdout.split("Commands:", 1)[1]
    assert "..." not in commands, commands
    flat = " ".join(commands.split())
    assert "then run CMD under limits (see 'seqbox run --help')." in flat
    assert "Refreshed every second; q quits." in flat
