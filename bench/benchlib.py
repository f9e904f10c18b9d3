"""Shared helpers for the benchmark scripts in bench/ (not a test suite).

Each script runs seqbox as a user would (a separate process, the console
script next to the interpreter), prints numbers and one PASS/FAIL line per
target, optionally a JSON document, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1 << 20
CGROUP_ROOT = "/sys/fs/cgroup"
#: environment variables that would change what seqbox does (config layers)
_SEQBOX_INPUTS = ("MEMORY_LIMIT_MB", "TIMEOUT", "KILL_TIMEOUT", "CHECK_INTERVAL", "SEQBOX_PROFILE")


def seqbox_argv() -> tuple[list[str], str]:
    """How to start seqbox, and a description of it for the output."""
    script = Path(sys.executable).parent / "seqbox"
    if script.exists():
        return [str(script)], f"console script {script}"
    return [sys.executable, "-m", "seqbox"], f"{sys.executable} -m seqbox"


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for seqbox: without PYTHONDONTWRITEBYTECODE (an
    installed seqbox has its bytecode precompiled) and without the variables
    that would change seqbox's options behind the bench's back."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "PYTHONDONTWRITEBYTECODE" and not (key.startswith("SEQBOX_") or key in _SEQBOX_INPUTS)
    }
    env.update(extra or {})
    return env


#: a backend measured another way: name -> (the backend, the environment that selects the way);
#: poll-psutil is the poll backend on its macOS code path (psutil, no subreaper), on Linux
VARIANTS = {"poll-psutil": ("poll", {"SEQBOX_POLL_READER": "psutil"})}


def variant_env(name: str) -> dict[str, str]:
    """The environment seqbox runs with to measure backend ``name``."""
    return bench_env(VARIANTS[name][1] if name in VARIANTS else None)


ENV_NOTE = (
    "environment: PYTHONDONTWRITEBYTECODE, SEQBOX_* and the recipe's variables removed; "
    "commands run in a scratch directory outside any project"
)


class Doctor:
    """What ``seqbox doctor --json`` says about the backends."""

    def __init__(self) -> None:
        argv, _ = seqbox_argv()
        proc = subprocess.run(
            [*argv, "doctor", "--json"], capture_output=True, text=True, env=bench_env(), check=False
        )
        try:
            facts: dict[str, Any] = json.loads(proc.stdout)
        except ValueError:
            print(f"FAIL: seqbox doctor --json failed (exit {proc.returncode}): {proc.stderr.strip()}")
            sys.exit(0)
        self.facts = facts
        self.auto: str | None = facts.get("backend")
        self.usable: dict[str, bool] = {}
        self.reasons: dict[str, str] = {}
        for probe in facts.get("backends", []):
            self.usable[probe["name"]] = bool(probe["usable"])
            self.reasons[probe["name"]] = str(probe["reason"])

    def pick(self, wanted: str, allowed: tuple[str, ...]) -> list[str]:
        """The backends to measure: ``wanted`` is ``all`` or one name in
        ``allowed``. Unusable ones are skipped with a line saying why."""
        names = list(allowed) if wanted == "all" else [wanted]
        picked = []
        for name in names:
            if name == "auto":
                if self.auto is None:
                    print("SKIP backend auto: seqbox doctor finds no usable backend")
                else:
                    picked.append(name)
            elif self.usable.get(VARIANTS[name][0] if name in VARIANTS else name):
                picked.append(name)
            else:
                why = self.reasons.get(name, "not available on this platform")
                print(f"SKIP backend {name}: {why}")
        return picked

    def resolve(self, name: str) -> str:
        """The concrete backend ``name`` stands for (``auto`` -> what doctor picks)."""
        if name in VARIANTS:
            return VARIANTS[name][0]
        return (self.auto or "?") if name == "auto" else name


def parser(description: str, allowed: tuple[str, ...]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--backend",
        default="all",
        choices=("all", *allowed),
        help="backend to measure (default: every usable one)",
    )
    p.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    return p


def add_also(p: argparse.ArgumentParser, what: str) -> None:
    """``--also LABEL=PATH`` (repeatable): another seqbox console script (another
    checkout's, say the commit before a change) timed in the same rounds."""
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help=f"another seqbox console script to {what} in the same rounds (repeatable)",
    )


def also_scripts(p: argparse.ArgumentParser, specs: list[str]) -> dict[str, str]:
    """The ``--also`` scripts by label (a usage error for one that is no executable)."""
    also: dict[str, str] = {}
    for spec in specs:
        label, _, path = spec.partition("=")
        if not label or not os.access(path, os.X_OK):
            p.error(f"--also {spec}: expected LABEL=PATH, PATH an executable seqbox")
        also[label] = os.path.abspath(path)
    return also


class Report:
    """Numbers and PASS/FAIL lines of one benchmark script."""

    def __init__(self, bench: str) -> None:
        if not sys.platform.startswith("linux"):  # /proc, /sys/fs/cgroup
            print(f"SKIP {bench}: the benchmarks read /proc and run on Linux only")
            sys.exit(0)
        self.bench = bench
        self.started = time.monotonic()
        self.results: dict[str, Any] = {}
        self.checks: list[dict[str, Any]] = []
        self.seqbox_pids: list[int] = []
        self.cgroups_before = seqbox_cgroups()
        self.argv, how = seqbox_argv()
        self.seqbox_source = describe_seqbox()
        print(f"== {bench}: seqbox started as {how}")
        print(f"   seqbox under test: {self.seqbox_source}")
        print(f"   {ENV_NOTE}")
        print(
            f"   load average at start: {loadavg()} ({os.cpu_count()} CPUs); numbers are only "
            f"as quiet as the machine"
        )

    def check(self, name: str, ok: bool, measured: str, target: str) -> None:
        self.checks.append({"name": name, "pass": ok, "measured": measured, "target": target})

    def finish(self, as_json: bool) -> int:
        leftovers, foreign = self.leftover_cgroups()
        self.check("no seqbox cgroups left behind", not leftovers, ", ".join(leftovers) or "none", "none")
        if foreign:
            print(
                f"note: {len(foreign)} seqbox-* cgroups appeared meanwhile that belong to "
                f"another seqbox (not started by this bench): {', '.join(foreign)}"
            )
        elapsed = time.monotonic() - self.started
        print()
        for c in self.checks:
            verdict = "PASS" if c["pass"] else "FAIL"
            print(f"{verdict}: {c['name']}: {c['measured']} (target {c['target']})")
        print(f"({self.bench} took {elapsed:.1f} s; load average at the end: {loadavg()})")
        if as_json:
            doc = {
                "bench": self.bench,
                "elapsed_s": round(elapsed, 2),
                "seqbox": self.seqbox_source,
                "results": self.results,
                "checks": self.checks,
            }
            print(json.dumps(doc, indent=None, sort_keys=True, default=str))
        return 0

    def leftover_cgroups(self) -> tuple[list[str], list[str]]:
        """``seqbox-*`` cgroups that appeared during the bench: those of a
        seqbox this bench started (the run id ends with the supervisor's pid,
        possibly followed by the try number), and the others (a seqbox run
        by someone else on this machine)."""
        mine, foreign = [], []
        for path in sorted(seqbox_cgroups() - self.cgroups_before):
            name = os.path.basename(path)
            if any(name.endswith(f"-{pid}") or f"-{pid}-" in name for pid in self.seqbox_pids):
                mine.append(path)
            else:
                foreign.append(path)
        return mine, foreign


def describe_seqbox() -> str:
    """Which seqbox the runs import (PYTHONPATH may point at another checkout),
    its version, and the git commit of its checkout (+ "dirty" when edited)."""
    code = "import os, seqbox; print(os.path.dirname(seqbox.__file__), seqbox.__version__)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=bench_env(),
        cwd=tempfile.gettempdir(),
        check=False,
    )
    if proc.returncode != 0:
        return f"not importable ({proc.stderr.strip().splitlines()[-1:]})"
    where, _, version = proc.stdout.strip().rpartition(" ")
    git = subprocess.run(
        ["git", "-C", where, "log", "-1", "--format=%h"], capture_output=True, text=True, check=False
    )
    state = ""
    if git.returncode == 0:
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        state = f", git {git.stdout.strip()}{' + uncommitted edits' if dirty else ''}"
    return f"{where} (version {version}{state})"


def loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def seqbox_cgroups() -> set[str]:
    """Every cgroup directory named seqbox-* in every mounted hierarchy."""
    found: set[str] = set()
    for dirpath, dirnames, _ in os.walk(CGROUP_ROOT):
        for name in dirnames:
            if name.startswith("seqbox-"):
                found.add(os.path.join(dirpath, name))
    return found


class SeqboxRun:
    """One finished ``seqbox run``: exit code, output, wall time, pid."""

    def __init__(
        self, pid: int, returncode: int, *, stdout: str, stderr: str, wall_s: float, ended: float
    ) -> None:
        self.pid = pid
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.wall_s = wall_s
        self.ended = ended  # time.monotonic() when the bench saw seqbox exit

    def summary(self) -> dict[str, Any]:
        """The JSON summary (``--json``: the last line of stdout that parses)."""
        for raw in reversed(self.stdout.splitlines()):
            line = raw.strip()
            if line.startswith("{"):
                try:
                    doc: dict[str, Any] = json.loads(line)
                    return doc
                except ValueError:
                    continue
        return {}


def run_seqbox(
    report: Report,
    run_args: list[str],
    command: list[str],
    *,
    cwd: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> SeqboxRun:
    """``seqbox run RUN_ARGS -- COMMAND``, waited for; the pid is remembered
    for the leftover-cgroup check."""
    argv = [*report.argv, "run", *run_args, "--", *command]
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env if env is not None else bench_env(),
    )
    report.seqbox_pids.append(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n[bench] seqbox did not exit within {timeout} s: killed it"
    ended = time.monotonic()
    return SeqboxRun(proc.pid, proc.returncode, stdout=out, stderr=err, wall_s=ended - start, ended=ended)


def scratch_dir(prefix: str) -> str:
    """A scratch directory outside any git project (so no project config applies)."""
    return tempfile.mkdtemp(prefix=f"seqbox-bench-{prefix}-")


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- processes ------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) from /proc/PID/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[19])


def is_alive(pid: int, starttime: int | None = None) -> bool:
    """True when ``pid`` is a live process (a zombie is dead), and the same
    process as the one that started at ``starttime`` (against pid reuse)."""
    stat = proc_stat(pid)
    if stat is None:
        return False
    state, started = stat
    if starttime is not None and started != starttime:
        return False
    return state not in ("Z", "X", "x")


# -- numbers ---------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mib(nbytes: float | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / MIB:.1f} MiB"
