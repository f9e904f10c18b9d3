"""The Python API is typed: every option of ``seqbox run`` is an explicit keyword
of ``seqbox.run`` and ``seqbox.run_async`` with its type (checked against the
option table), and ``mypy --strict`` rejects each misuse in tests/api/typing_misuse.py."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import seqbox
from seqbox import api
from seqbox.options import OPTIONS

MISUSES = Path(__file__).with_name("typing_misuse.py")


@pytest.mark.parametrize("function", [seqbox.run, seqbox.run_async], ids=["run", "run_async"])
def test_keywords_are_the_option_table(function: object) -> None:
    params = inspect.signature(function).parameters  # type: ignore[arg-type]
    table = {opt.key for opt in OPTIONS if opt.flags and opt.key not in api.NOT_KEYWORDS}
    assert set(params) - set(api.OWN_KEYWORDS) == table
    assert list(params)[: len(api.OWN_KEYWORDS)] == list(api.OWN_KEYWORDS)
    for name, param in params.items():
        if name == "command":
            continue
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert param.annotation != inspect.Parameter.empty, name
    for opt in OPTIONS:
        if opt.key in table:
            assert params[opt.key].default is None, opt.key  # not given: the usual precedence
            if not opt.takes:  # a flag of the command line is a bool keyword
                assert params[opt.key].annotation == "bool | None", opt.key


def test_every_keyword_is_documented() -> None:
    doc = seqbox.run.__doc__ or ""
    missing = [name for name in inspect.signature(seqbox.run).parameters if f"``{name}``" not in doc]
    assert missing == []


def test_unknown_keywords_are_refused_at_run_time(sbx: object) -> None:
    with pytest.raises(TypeError):
        seqbox.run(["true"], memory="1G")  # type: ignore[call-arg]
    with pytest.raises(TypeError):  # at the call, before there is a coroutine to await
        seqbox.run_async(["true"], memory="1G")  # type: ignore[call-arg, unused-coroutine]


def test_run_and_run_async_have_one_signature() -> None:
    """The keywords are declared once (on run_async); run shows and checks the same."""
    assert inspect.signature(seqbox.run) == inspect.signature(seqbox.run_async)
    assert not inspect.iscoroutinefunction(seqbox.run)
    assert inspect.iscoroutinefunction(seqbox.run_async)


def test_mypy_rejects_each_misuse(tmp_path: Path) -> None:
    lines = MISUSES.read_text().splitlines()
    expected = {n for n, line in enumerate(lines, 1) if re.search(r"#\s*error:", line)}
    assert len(expected) >= 15
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            f"--cache-dir={tmp_path}",
            str(MISUSES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    reported = {
        int(m.group(1)) for m in re.finditer(r"^[^:\n]*typing_misuse\.py:(\d+): error:", res.stdout, re.M)
    }
    assert res.returncode == 1, res.stdout + res.stderr
    assert sorted(expected - reported) == [], "misuses mypy accepted:\n" + "\n".join(
        lines[n - 1] for n in sorted(expected - reported)
    )
    assert sorted(reported - expected) == [], "correct uses mypy rejected:\n" + res.stdout
