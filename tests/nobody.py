"""An interpreter that uid 65534 can run, with seqbox and its dependencies.

The tests' own interpreter often is not one: a venv made from an interpreter
under ``/root`` (mode 0700, as pyenv installs it) cannot be started by another
user. Then a venv is made, once per session, in a world-readable temporary
directory from a system interpreter of the same version (so that the compiled
dependencies, psutil, load), holding copies of seqbox (this checkout), its
run-time dependencies (as installed here) and ``tests/prog.py``. It is removed
when the session ends.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import seqbox

#: the user the "unprivileged" capability runs seqbox as
NOBODY = 65534
#: system interpreters tried when the tests' own cannot be run by NOBODY
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
PROG = Path(__file__).with_name("prog.py")


@dataclass(frozen=True)
class NobodyPython:
    """An interpreter and a copy of tests/prog.py that NOBODY can run."""

    executable: str
    prog_path: str

    def seqbox(self, *args: str) -> list[str]:
        """The argv of ``seqbox ARGS`` run by this interpreter."""
        return [self.executable, "-m", "seqbox", *args]

    def prog(self, name: str, *args: object) -> list[str]:
        """The argv of a test program (see prog.py) run by this interpreter."""
        return [self.executable, self.prog_path, name, *map(str, args)]


def runs_as_nobody(executable: str, code: str = "import seqbox.cli, psutil") -> str | None:
    """None when NOBODY can run ``code`` with ``executable`` (from ``/``), else why not."""
    try:
        proc = subprocess.run(
            [executable, "-c", code],
            cwd="/",
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"cannot start {executable} as uid {NOBODY}: {err}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return f"uid {NOBODY} cannot run {executable} with seqbox: {last}"
    return None


@functools.cache
def nobody_python() -> NobodyPython | str:
    """The interpreter for NOBODY, or why there is none. Needs root."""
    own = runs_as_nobody(sys.executable)
    if own is None:
        return NobodyPython(sys.executable, str(PROG))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    tried = []
    for base in SYSTEM_PYTHONS:
        found = version_of(base)
        if found is None:
            continue
        if found != version:
            tried.append(f"{base} is {found}")
            continue
        if runs_as_nobody(base, "pass") is not None:
            tried.append(f"uid {NOBODY} cannot run {base}")
            continue
        try:
            made = make_venv(base, version)
        except (OSError, subprocess.SubprocessError, ImportError) as err:  # shutil.Error is an OSError
            tried.append(f"cannot make a venv from {base}: {err}")
            continue
        why = runs_as_nobody(made.executable)
        if why is None:
            return made
        tried.append(why)
    return f"{own}; and no system python {version} it can run ({', '.join(tried) or 'none installed'})"


def version_of(python: str) -> str | None:
    try:
        proc = subprocess.run(
            [python, "-c", "import sys; print(f'{sys.version_info.major}.{sys.version_info.minor}')"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def make_venv(base: str, version: str) -> NobodyPython:
    """A venv from ``base`` in a new world-readable directory, with copies of
    seqbox, its dependencies and prog.py; removed at exit."""
    top = tempfile.mkdtemp(prefix="seqbox-test-python-")
    atexit.register(shutil.rmtree, top, True)
    os.chmod(top, 0o755)
    env_dir = os.path.join(top, "venv")
    # the venv module runs base's own copy: made from a path, it links to base
    subprocess.run(
        [base, "-m", "venv", "--without-pip", env_dir], check=True, capture_output=True, timeout=60
    )
    site = Path(env_dir, "lib", f"python{version}", "site-packages")

    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(Path(seqbox.__file__).parent, site / "seqbox", ignore=skip)
    for dist in _dependencies(own_distribution()):
        for file in dist.files or ():
            source = Path(str(dist.locate_file(file)))
            parts = Path(str(file)).parts
            if ".." in parts or "__pycache__" in parts or not source.is_file():
                continue  # scripts in bin/, byte code
            target = site.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shutil.copy2(PROG, Path(top, PROG.name))
    for directory, _, files in os.walk(top):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)
    return NobodyPython(os.path.join(env_dir, "bin", "python3"), os.path.join(top, PROG.name))


def own_distribution() -> str:
    """The name of the distribution that ships the ``seqbox`` package
    (``seqbox-cli``), read from this checkout's ``pyproject.toml``, not
    spelled out, so that a rename cannot break the copy again. (Asking
    ``packages_distributions()`` finds nothing for an editable install.)"""
    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["name"])


def _dependencies(name: str) -> list[Distribution]:
    """The installed distributions ``name`` needs at run time, transitively
    (not itself, no extras)."""
    found: dict[str, Distribution] = {}
    todo = list(distribution(name).requires or ())
    while todo:
        req = Requirement(todo.pop())
        key = canonicalize_name(req.name)
        if key in found or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            continue  # seqbox's own import fails then, and says which
        found[key] = dist
        todo.extend(dist.requires or ())
    return list(found.values())
