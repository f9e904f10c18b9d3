"""The recipe's drop-in scripts: POSIX sh (run here with dash and with bash),
``set -u`` safe, each naming itself in its errors; shipped in the package
(seqbox/recipe/, their one copy: ``seqbox init --recipe`` writes them into a project)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seqbox.init import RECIPE_SCRIPTS, recipe_sources
from tests.helpers import prog, slack

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "seqbox" / "recipe"
SHELLS = [name for name in ("dash", "bash") if shutil.which(name)]
NEEDS_COMMAND = ("seq", "safe-run.sh", "sequential-executor.sh", "wait_all.sh")


def _shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the recipe's scripts are tested with dash and bash")
    return path


def _run(
    shell: str, script: str, *args: str, path: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_shell(shell), "-u", str(RECIPE / script), *args],
        env={**os.environ, "PATH": path, **(env or {})},
        capture_output=True,
        text=True,
        timeout=slack(timeout),
        check=False,
    )


@pytest.fixture
def echo_seqbox(tmp_path: Path) -> str:
    """A PATH whose `seqbox` prints its arguments, one per line in brackets."""
    folder = tmp_path / "fakebin"
    folder.mkdir()
    fake = folder / "seqbox"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf \'[%s]\\n\' "$a"; done\n')
    fake.chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


@pytest.fixture
def real_seqbox() -> str:
    """A PATH whose `seqbox` is this checkout's (the test venv's console script)."""
    scripts = Path(sys.executable).parent
    assert (scripts / "seqbox").exists(), "pip install -e '.[test]' makes the seqbox command"
    return f"{scripts}:/usr/bin:/bin"


def test_the_package_ships_every_script_once() -> None:
    shipped = recipe_sources()
    assert sorted(shipped) == sorted(RECIPE_SCRIPTS)
    assert sorted(p.name for p in RECIPE.iterdir() if p.is_file()) == sorted(RECIPE_SCRIPTS)
    for name, content in shipped.items():
        assert os.access(RECIPE / name, os.X_OK), name
        assert content.startswith(b"#!/bin/sh\n"), name
        # one copy: the repository's scripts/ holds only its own (dev) scripts
        assert not (ROOT / "scripts" / name).exists(), f"scripts/{name}: the recipe lives in seqbox/recipe/"


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("script", RECIPE_SCRIPTS)
def test_names_itself_when_seqbox_is_missing(shell: str, script: str, tmp_path: Path) -> None:
    args = ["--", "true"] if script == "wait_all.sh" else ["true"]
    res = _run(shell, script, *args, path=str(tmp_path))  # an empty PATH: no seqbox
    assert res.returncode == 127, res
    assert res.stderr.startswith(f"{script}: seqbox is not installed"), res.stderr
    assert res.stderr.count("\n") == 1, res.stderr


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("script", NEEDS_COMMAND)
def test_names_itself_without_a_command(shell: str, script: str, echo_seqbox: str) -> None:
    res = _run(shell, script, path=echo_seqbox)
    assert res.returncode == 125, res
    assert res.stderr.startswith(f"{script}: no command given"), res.stderr
    assert res.stdout == ""


_COMMAND = ["echo", "a  b", "", "--json", "*"]
WAIT_ALL_CASES = [
    (["--", "true"], ["run", "--", "true"]),  # no options: nothing unset under set -u
    (["true", "a b"], ["run", "--", "true", "a b"]),
    (
        [
            "--timeout",
            "5",
            "--kill-signal",
            "INT",
            "--retry",
            "2",
            "--json",
            "--log",
            "o g",
            "-v",
            "--",
            *_COMMAND,
        ],
        [
            "run",
            "--timeout",
            "5",
            "--signal",
            "INT",
            "--retry",
            "2",
            "--json",
            "--log",
            "o g",
            "-v",
            "--",
            *_COMMAND,
        ],
    ),
    (
        ["--timeout=90s", "--kill-signal=KILL", "--retry=1", "--log=x", "--verbose", "make", "-j2"],
        ["run", "--timeout=90s", "--signal=KILL", "--retry=1", "--log=x", "-v", "--", "make", "-j2"],
    ),
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(("args", "expected"), WAIT_ALL_CASES, ids=["bare", "plain", "all", "inline"])
def test_wait_all_translates_the_recipe_options(
    shell: str, args: list[str], expected: list[str], echo_seqbox: str
) -> None:
    res = _run(shell, "wait_all.sh", *args, path=echo_seqbox)
    assert res.returncode == 0, res
    assert res.stdout.splitlines() == [f"[{word}]" for word in expected]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout"], "wait_all.sh: --timeout needs a value"),
        (["--log"], "wait_all.sh: --log needs a value"),
        (["--bogus", "true"], "wait_all.sh: unknown option --bogus"),
        (["--json"], "wait_all.sh: no command given"),
        (["--json", "--"], "wait_all.sh: no command given"),
    ],
)
def test_wait_all_usage_errors_name_it(shell: str, args: list[str], message: str, echo_seqbox: str) -> None:
    res = _run(shell, "wait_all.sh", *args, path=echo_seqbox)
    assert res.returncode == 125, res
    assert res.stderr.startswith(message + " (usage: wait_all.sh "), res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize("shell", SHELLS)
def test_wait_all_runs_under_seqbox(shell: str, real_seqbox: str, project: Path) -> None:
    res = _run(
        shell, "wait_all.sh", "--timeout", "1", "--kill-signal", "INT", "--", "sleep", "30", path=real_seqbox
    )
    assert res.returncode == 124, res
    assert "seqbox: timeout: stopped after 1" in res.stderr, res.stderr


def test_seq_passes_arguments_and_status(real_seqbox: str, tmp_path: Path) -> None:
    out = tmp_path / "args"
    res = _run(
        "dash",
        "seq",
        "sh",
        "-c",
        'printf "%s|" "$@" > "$0"; exit 3',
        str(out),
        "a b",
        "",
        "*",
        path=real_seqbox,
    )
    assert res.returncode == 3, res
    assert out.read_text() == "a b||*|"


def test_safe_run_reads_the_recipe_variables(real_seqbox: str) -> None:
    res = _run(
        "dash", "safe-run.sh", *prog("hog", "--chunk", "16"), path=real_seqbox, env={"MEMORY_LIMIT_MB": "64"}
    )
    assert res.returncode == 137, res
    assert "seqbox: killed: memory limit 64.0 MiB exceeded" in res.stderr, res.stderr


@pytest.mark.parametrize("script", ["monitor-queue.sh", "memory_monitor.sh", "kill-orphans.sh"])
def test_status_and_clean_scripts(script: str, real_seqbox: str) -> None:
    res = _run("dash", script, path=real_seqbox)
    assert res.returncode == 0, res
    assert res.stdout.strip(), res
