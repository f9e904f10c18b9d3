"""``seqbox init``: a commented config for a project, the recipe's drop-in scripts,
and how to wire seqbox into pre-commit and CI."""

from __future__ import annotations

import os
import sys
from importlib.resources import files

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from seqbox._version import __version__
from seqbox.config import load_file_config
from seqbox.errors import UsageError
from seqbox.options import OPTIONS

#: a value to show for config keys whose default is "none"
EXAMPLES: dict[str, object] = {
    "mem_high": "1536M",
    "pids": 512,
    "cpus": 2,
    "slots": 2,
    "wait_timeout": "1h",
    "budget": "auto",
    "reserve": "512M",
    "key": "agent",
    "log_dir": "logs",
}
#: keys written active (not commented out), with these values
ACTIVE: dict[str, object] = {"mem": "2G", "timeout": "30m"}

#: the recipe's scripts, shipped in seqbox/recipe/
RECIPE_SCRIPTS = (
    "seq",
    "safe-run.sh",
    "sequential-executor.sh",
    "wait_all.sh",
    "git-safe.sh",
    "make-sequential.sh",
    "monitor-queue.sh",
    "memory_monitor.sh",
    "kill-orphans.sh",
)

#: the distribution on the package index (the command and the import are `seqbox`)
DISTRIBUTION = "seqbox-cli"

PRE_COMMIT = f"""\
repos:
  - repo: local
    hooks:
      - id: mypy
        name: mypy (under seqbox)
        entry: seqbox run --mem 1G -- mypy --strict
        language: python
        additional_dependencies: [{DISTRIBUTION}=={__version__}, mypy]
        require_serial: true
        types: [python]
      - id: pytest
        name: pytest (under seqbox)
        entry: seqbox run --mem 2G --timeout 10m -- python -m pytest -q
        language: system
        pass_filenames: false
"""

GITHUB_ACTIONS = """\
name: test
on: [push, pull_request]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - run: pip install seqbox-cli pytest
      - run: seqbox run --mem 4G --timeout 30m --report seqbox.json -- python -m pytest -q
      - uses: actions/upload-artifact@v4
        if: always()
        with:
          name: seqbox-report
          path: seqbox.json
"""

GITLAB_CI = """\
test:
  image: python:3.12
  script:
    - pip install seqbox-cli pytest
    - seqbox run --mem 4G --timeout 30m --report seqbox.json -- python -m pytest -q
  artifacts:
    when: always
    paths: [seqbox.json]
"""


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(table: str | None, profile_table: str) -> str:
    """The commented config: every key of the option table that a config may set,
    under ``[table]`` (or at top level: None)."""
    lines = [f"[{table}]"] if table else []
    lines += [
        "# seqbox's settings for this project (written by `seqbox init`). Each key is a",
        "# `seqbox run` option with _ for -; the command line, SEQBOX_* variables and a",
        "# profile override them. Sizes: 512M, 2G; durations: 90s, 5m, 1h30m.",
    ]
    entries = []
    for opt in OPTIONS:
        if not opt.config:
            continue
        if opt.key in ACTIVE:
            entries.append((f"{opt.key} = {_toml_value(ACTIVE[opt.key])}", opt.help))
            continue
        value = opt.default if opt.default is not None else EXAMPLES.get(opt.key)
        if value is None:
            continue  # nothing sensible to show (a key added without an example)
        entries.append((f"# {opt.key} = {_toml_value(value)}", opt.help))
    width = max(len(setting) for setting, _ in entries) + 2
    lines += [f"{setting:<{width}}# {help}" for setting, help in entries]
    lines += [
        "",
        "# A profile applies with --profile NAME; `ci` also when CI=true (GitHub, GitLab).",
        f"[{profile_table}]",
        '# mem = "4G"',
        '# timeout = "1h"',
    ]
    return "\n".join(lines) + "\n"


def _has_seqbox_table(pyproject: str) -> bool:
    try:
        with open(pyproject, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"{pyproject}: cannot read it as TOML: {err}") from None
    tool = data.get("tool")
    return isinstance(tool, dict) and "seqbox" in tool


def existing_config(root: str) -> str | None:
    """Where the project's config is already ("seqbox.toml", "[tool.seqbox] in
    pyproject.toml", as a path), or None when it has none."""
    seqbox_toml = os.path.join(root, "seqbox.toml")
    pyproject = os.path.join(root, "pyproject.toml")
    if os.path.lexists(seqbox_toml):
        return seqbox_toml
    if os.path.isfile(pyproject) and _has_seqbox_table(pyproject):
        return f"[tool.seqbox] in {pyproject}"
    return None


def describe_config(root: str) -> str:
    """One line on what the project's config sets: its keys and profiles."""
    found = load_file_config(root)
    keys = ", ".join(f"{key} = {value!r}" for key, value in found.top.items()) or "no keys"
    profiles = ", ".join(sorted(found.profiles))
    return keys + (f"; profiles: {profiles}" if profiles else "")


def write_config(root: str, *, toml: bool) -> str:
    """Write the commented config at ``root`` and return its path.

    Into pyproject.toml's ``[tool.seqbox]`` when there is a pyproject.toml
    (and ``toml`` is false), else into seqbox.toml. Never overwrites: refuses
    when the project already has a config.
    """
    seqbox_toml = os.path.join(root, "seqbox.toml")
    pyproject = os.path.join(root, "pyproject.toml")
    if os.path.lexists(seqbox_toml):
        raise UsageError(f"{seqbox_toml} exists already; left as it is (edit it, or remove it first)")
    if os.path.isfile(pyproject) and _has_seqbox_table(pyproject):
        raise UsageError(f"{pyproject} has a [tool.seqbox] section already; left as it is (edit it)")
    try:
        if os.path.isfile(pyproject) and not toml:
            with open(pyproject, "rb") as f:
                ending = f.read()[-1:]
            with open(pyproject, "a", encoding="utf-8") as f:
                f.write(
                    ("\n" if ending == b"\n" else "\n\n")
                    + config_text("tool.seqbox", "tool.seqbox.profiles.ci")
                )
            return pyproject
        with open(seqbox_toml, "x", encoding="utf-8") as f:
            f.write(config_text(None, "profiles.ci"))
    except OSError as err:
        raise UsageError(f"cannot write the config: {err.strerror}: {err.filename}") from None
    return seqbox_toml


def recipe_sources() -> dict[str, bytes]:
    """The recipe's scripts as installed with seqbox: name -> content."""
    folder = files("seqbox").joinpath("recipe")
    return {name: folder.joinpath(name).read_bytes() for name in RECIPE_SCRIPTS}


def write_recipe(folder: str, *, force: bool) -> list[str]:
    """Write the recipe's drop-in scripts into ``folder``; return what was written.

    A file that exists with other content is left alone unless ``force``: then
    nothing is written and the error names the files.
    """
    sources = recipe_sources()
    differing = []
    for name, content in sources.items():
        path = os.path.join(folder, name)
        if os.path.lexists(path):
            try:
                with open(path, "rb") as f:
                    same = f.read() == content
            except OSError:
                same = False
            if not same:
                differing.append(name)
    if differing and not force:
        raise UsageError(
            f"{folder} has its own {', '.join(differing)}; left as they are (--force replaces them)"
        )
    written = []
    try:
        os.makedirs(folder, exist_ok=True)
        for name, content in sources.items():
            path = os.path.join(folder, name)
            if os.path.lexists(path) and name not in differing:
                continue  # already this content
            tmp = f"{path}.seqbox-new"
            with open(tmp, "wb") as f:
                f.write(content)
            os.chmod(tmp, 0o755)
            os.replace(tmp, path)
            written.append(path)
    except OSError as err:
        raise UsageError(f"cannot write the recipe's scripts: {err.strerror}: {err.filename}") from None
    return written
