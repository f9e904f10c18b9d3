"""``seqbox init``: thin wrapper over seqbox.init."""

from __future__ import annotations

import os
import sys

from seqbox.errors import UsageError
from seqbox.init import (
    ACTIVE,
    GITHUB_ACTIONS,
    GITLAB_CI,
    PRE_COMMIT,
    describe_config,
    existing_config,
    write_config,
    write_recipe,
)
from seqbox.project import project_root


def _indent(text: str) -> str:
    return "".join(f"    {line}\n" if line else "\n" for line in text.splitlines())


def wiring() -> str:
    """How to use seqbox from pre-commit and CI (the README shows the same)."""
    return (
        "\npre-commit: in .pre-commit-config.yaml (the first hook installs seqbox-cli and mypy in\n"
        "pre-commit's own environment and runs mypy under seqbox on the staged files; the second\n"
        "runs your tests with the seqbox and pytest of your environment):\n\n"
        + _indent(PRE_COMMIT)
        + "\nGitHub Actions: in .github/workflows/test.yml (CI=true selects the `ci` profile):\n\n"
        + _indent(GITHUB_ACTIONS)
        + "\nGitLab CI: in .gitlab-ci.yml:\n\n"
        + _indent(GITLAB_CI)
        + "\nTry it: seqbox run -- python -m pytest   (seqbox doctor: which backend, and why)\n"
    )


def init_main(toml: bool, recipe: bool, folder: str | None, force: bool) -> int:
    root = project_root(os.getcwd())
    if folder is not None and not recipe:
        raise UsageError(f"a folder ({folder}) is only for --recipe (seqbox init --recipe [DIR])")
    if force and not recipe:
        raise UsageError("--force only replaces the recipe's scripts (seqbox init --recipe --force)")
    if recipe:
        target = os.path.abspath(folder) if folder else os.path.join(root, "scripts")
        written = write_recipe(target, force=force)
        for path in written:
            sys.stdout.write(f"wrote {path}\n")
        if not written:
            sys.stdout.write(
                f"{target}: the recipe's scripts are there already, as this seqbox ships them"
                " (--force replaces ones you edited)\n"
            )
        sys.stdout.write(
            "Each calls seqbox (which must be on PATH), e.g. scripts/seq pytest -x; the old\n"
            "MEMORY_LIMIT_MB, TIMEOUT, KILL_TIMEOUT and CHECK_INTERVAL variables still apply.\n"
        )
        return 0
    there = existing_config(root)
    if there is not None:
        sys.stdout.write(
            f"{there} is there already, left as it is (edit it to change seqbox's settings):"
            f" {describe_config(root)}\n"
        )
        sys.stdout.write(wiring())
        return 0
    path = write_config(root, toml=toml)
    where = "[tool.seqbox] in " if path.endswith("pyproject.toml") else ""
    active = " and ".join(f"{key} = {value}" for key, value in ACTIVE.items())
    sys.stdout.write(f"wrote {where}{path}: {active}; the other keys are commented out\n")
    sys.stdout.write(wiring())
    return 0
