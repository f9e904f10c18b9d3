"""``seqbox run`` imports exactly the hot path that ``seqbox/hotpath.py`` names:
a real run in a fresh interpreter, on each path, compared with its lists; and
ruff's exceptions for function-local imports are those modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from seqbox import hotpath
from tests.capabilities import CGROUP_BACKENDS, capability
from tests.helpers import SeqboxRunner

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]

#: the paths of ``seqbox run``: no lock, the queue (the backend auto picks), each backend
#: by name (a backend this host cannot use still loads its module to find that out)
PATHS = {
    "no-lock": ["--no-lock"],
    "queue": [],
    "poll": ["--backend", "poll"],
    "cgroup1": ["--backend", "cgroup1"],
    "cgroup2": ["--backend", "cgroup2"],
}

#: what the run prints: its exit code and the modules it loaded
RUN = (
    "import json, sys\n"
    "from seqbox.cli import main\n"
    "code = main(['run', *{args!r}, '--', 'true'])\n"
    "print(json.dumps([code, sorted(sys.modules)]))\n"
)


def _fresh(sbx: SeqboxRunner, code: str) -> list[object]:
    res = sbx.python(code)
    assert res.returncode == 0, res
    result: list[object] = json.loads(res.stdout.splitlines()[-1])
    return result


def _loaded(sbx: SeqboxRunner, args: list[str]) -> set[str]:
    """The modules a real ``seqbox run ARGS -- true`` loaded (the json that
    reports them imported after the run)."""
    code, modules = _fresh(sbx, RUN.format(args=args))
    assert code == 0 or (code == 125 and "--backend" in args), code  # 125: a backend not usable here
    assert isinstance(modules, list)
    return set(map(str, modules))


def _allowed_stdlib(sbx: SeqboxRunner, scope: bool = False) -> set[str]:
    """What a fresh interpreter has loaded after importing the hot path's stdlib
    modules (and with ``scope``, what the scope step imports)."""
    imports = ", ".join((*hotpath.STDLIB, *(hotpath.SCOPE_IMPORTS if scope else ())))
    [modules] = _fresh(sbx, f"import json, sys\nimport {imports}\nprint(json.dumps([sorted(sys.modules)]))\n")
    assert isinstance(modules, list)
    return set(map(str, modules))


@pytest.mark.parametrize("path", PATHS)
def test_a_run_imports_only_the_hot_path(sbx: SeqboxRunner, path: str) -> None:
    loaded = _loaded(sbx, PATHS[path])
    ours = {name for name in loaded if name.split(".")[0] == "seqbox"}
    assert ours - hotpath.MODULES == set(), "imported by seqbox run, not named in seqbox/hotpath.py"
    # a codec loads the first time a text is encoded with it
    others = {name for name in loaded - ours - {"__main__"} if not name.startswith("encodings.")}
    # an unprivileged run on a systemd host asks for a scope first (the laptop lane)
    scope = bool(ours & hotpath.HOST_SPECIFIC)
    allowed = _allowed_stdlib(sbx, scope)
    assert others - allowed == set(), "imported by seqbox run, not in hotpath.STDLIB (or SCOPE_IMPORTS)"
    never = set(hotpath.NEVER) - (allowed - _allowed_stdlib(sbx) if scope else set())
    assert sorted(never & loaded) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="off Linux, psutil reads the memory facts")
def test_a_budget_run_on_linux_loads_neither_psutil_nor_typing(sbx: SeqboxRunner) -> None:
    """--budget brings admission, learning and suspension in (not the hot
    path), and every run under a budget pays for their imports: on Linux they
    read /proc and cgroup files, and psutil (~15 ms) and typing (~3 ms) would
    be a third of such a run's start-up, twelve times over when twelve
    arrive at once (bench/admission.py)."""
    loaded = _loaded(sbx, ["--budget", "1G", "--mem", "100M"])
    assert {"seqbox.admission", "seqbox.learn", "seqbox.suspend"} <= loaded
    assert sorted(loaded & {"psutil", "typing"}) == []


def test_every_module_named_is_on_the_path(sbx: SeqboxRunner) -> None:
    """The list is exact: each module it names is loaded by some path here
    (but the ones only some hosts load)."""
    loaded = set().union(*(_loaded(sbx, args) for args in PATHS.values()))
    missing = set(hotpath.MODULES - hotpath.HOST_SPECIFIC - loaded)
    if not any(capability(backend).usable for backend in CGROUP_BACKENDS):
        missing.discard("seqbox.backends.clone3")  # forks into a cgroup: none is made here
    assert missing == set(), "named in seqbox/hotpath.py, but no seqbox run loads it"


def _file_of(module: str) -> str:
    path = module.replace(".", "/")
    package = ROOT / path / "__init__.py"
    return f"{path}/__init__.py" if package.exists() else f"{path}.py"


#: modules off the hot path that still import inside functions, until the
#: ordinary-Python pass reaches them (other branches rewrite them now): empty it
NOT_YET_ORDINARY: frozenset[str] = frozenset()


def test_function_local_imports_are_allowed_on_the_hot_path_only() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    ignores = config["tool"]["ruff"]["lint"]["per-file-ignores"]
    local_imports = {path for path, codes in ignores.items() if "PLC0415" in codes}
    assert "PLC0415" not in config["tool"]["ruff"]["lint"]["ignore"]
    expected = {_file_of(module) for module in hotpath.MODULES} | NOT_YET_ORDINARY
    assert local_imports == expected
    assert all((ROOT / path).exists() for path in local_imports)
