"""Helpers of the test suite: run seqbox, find what survived, find leftover cgroups.

Every process a test starts carries the environment variable ``SBXTEST_TOKEN``
(unique per test), inherited by seqbox and by the command's whole tree. That is
how the suite finds, after a test, anything of it still alive, even a
double-forked ``setsid`` daemon, and kills it by pid, never by name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from seqbox.project import project_key

PROG = str(Path(__file__).with_name("prog.py"))
TOKEN_ENV = "SBXTEST_TOKEN"
CGROUP_ROOT = "/sys/fs/cgroup"
MIB = 1 << 20
#: how far a kernel memory counter may pass its limit: allocations the kernel must
#: not fail (page tables, for one) are charged past memory.max (seen: one page)
FORCED_CHARGES = MIB

#: the contract suite asks for ``--backend auto`` wherever auto must pick the
#: backend a test names (``SEQBOX_TEST_VIA_AUTO=1``; set once per session by the
#: conftest): the placement ``auto`` takes is then under test too, and a run
#: that fell back to polling fails the test
VIA_AUTO = False
#: the backend ``--backend auto`` picks here (set with VIA_AUTO)
AUTO_PICKS: str | None = None
#: what seqbox says when ``auto`` fell back to polling: the short note, the -v one
FALLBACK_NOTES = ("limits are enforced by polling", "enforcing limits by polling instead")

#: how much slower than a laptop this machine is (an emulated VM: 10x or more);
#: set once per session by the conftest, applied to every upper time bound
SLOWDOWN = 1.0


def slack(seconds: float) -> float:
    """An upper time bound, stretched on a slow machine (see SLOWDOWN)."""
    return seconds * SLOWDOWN


def measure_slowdown() -> float:
    """``SEQBOX_TEST_SLOWDOWN``, or how long importing seqbox's run path takes
    here compared with a laptop (~0.1 s), between 1 and 30."""
    text = os.environ.get("SEQBOX_TEST_SLOWDOWN")
    if text:
        return max(1.0, float(text))
    best = float("inf")
    for _ in range(2):
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", "import seqbox.cli.run, seqbox.runner"],
                       check=False, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
        best = min(best, time.monotonic() - start)
    return min(30.0, max(1.0, best / 0.15))


#: the fields of the JSON summary, in order (as the README documents them)
SUMMARY_FIELDS = (
    "command",
    "status",
    "exit_code",
    "signal",
    "wall_s",
    "cpu_s",
    "peak_mem_bytes",
    "mem_limit_bytes",
    "procs_peak",
    "backend",
    "lock",
    "lock_wait_s",
    "attempts",
    "run_id",
    "log",
    "reserved_bytes",
    "frozen_s",
    "culprit",
)
STATUSES = ("ok", "failed", "timeout", "memory", "signal", "error")

#: ``seqbox: killed: memory limit 256.0 MiB exceeded (peak 256.0 MiB)``
#: then the biggest process (when one was read) and the next step
MEMORY_KILL_RE = (
    r"seqbox: killed: memory limit {limit} exceeded \(peak \d+(\.\d)? (B|KiB|MiB|GiB)\)"
    r"(; biggest: pid \d+ \(.+, \d+(\.\d)? (B|KiB|MiB|GiB)\))?; raise --mem if it needs more, .*"
)


def prog(name: str, *args: object) -> list[str]:
    """The argv of a test program (see prog.py)."""
    return [sys.executable, PROG, name, *map(str, args)]


# -- processes -------------------------------------------------------------------


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``R``, ``S``, ``Z``...), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    return None


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (PID 1 here does not reap orphans)."""
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def alive(pids: Iterable[int]) -> list[int]:
    return [pid for pid in pids if is_alive(pid)]


def wait_dead(pids: Iterable[int], timeout: float = 2.0) -> list[int]:
    """Wait up to ``timeout`` for ``pids`` to die; return those still alive."""
    pids = list(pids)
    deadline = time.monotonic() + slack(timeout)
    while True:
        left = alive(pids)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)


def environ_has(pid: int, entry: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return entry in f.read().split(b"\0")
    except OSError:
        return False


def token_pids(token: str) -> list[int]:
    """Live (non-zombie) processes carrying ``SBXTEST_TOKEN=token``, except us."""
    entry = f"{TOKEN_ENV}={token}".encode()
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        if environ_has(pid, entry) and is_alive(pid):
            found.append(pid)
    return found


def kill_token_processes(token: str, rounds: int = 20) -> list[int]:
    """SIGKILL (by pid) every live process carrying ``token``; return what was found."""
    seen: list[int] = []
    for _ in range(rounds):
        pids = token_pids(token)
        if not pids:
            break
        for pid in pids:
            if pid not in seen:
                seen.append(pid)
            try:
                os.kill(pid, signal.SIGSTOP)  # stop first: a stopped process cannot fork
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    return seen


def read_pids(path: Path, timeout: float = 10.0, count: int = 1) -> dict[str, int]:
    """Wait for a pid file of ``role pid`` (or bare ``pid``) lines to hold ``count``
    entries; return {role: pid} (bare pids get their line number as role)."""
    deadline = time.monotonic() + slack(timeout)
    while True:
        try:
            lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            lines = []
        if len(lines) >= count:
            return {(words[0] if len(words) > 1 else str(i)): int(words[-1]) for i, words in enumerate(lines)}
        if time.monotonic() >= deadline:
            raise AssertionError(f"{path} did not get {count} pids within {timeout}s: {lines}")
        time.sleep(0.01)


def wait_for_file(path: Path, timeout: float = 10.0, lines: int = 1) -> str:
    deadline = time.monotonic() + slack(timeout)
    while True:
        try:
            text = path.read_text()
            if text.count("\n") >= lines:
                return text
        except FileNotFoundError:
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.01)


# -- running seqbox ----------------------------------------------------------------


class Completed:
    """How one ``seqbox`` invocation ended."""

    def __init__(
        self, argv: list[str], returncode: int, stdout: bytes, stderr: bytes, duration: float
    ) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout_bytes = stdout
        self.stderr_bytes = stderr
        self.duration = duration

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    def seqbox_lines(self) -> list[str]:
        """seqbox's own messages on stderr (``seqbox: ...`` lines)."""
        return [line for line in self.stderr.splitlines() if line.startswith("seqbox:")]

    def one_line(self) -> str:
        """seqbox's stderr is exactly one ``seqbox: ...`` line (no traceback); return it."""
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self
        assert lines[0].startswith("seqbox: "), self
        return lines[0]

    def json(self) -> dict[str, object]:
        """The ``--json`` document: the last line of stdout."""
        lines = self.stdout.strip().splitlines()
        assert lines, f"no JSON on stdout; {self}"
        data = json.loads(lines[-1])
        assert isinstance(data, dict), data
        return data

    def __repr__(self) -> str:
        return (
            f"exit {self.returncode} after {self.duration:.2f}s\n"
            f"  argv: {self.argv}\n  stdout: {self.stdout[-2000:]!r}\n"
            f"  stderr: {self.stderr[-2000:]!r}"
        )


def argv_of(proc: subprocess.Popen[bytes]) -> list[str]:
    args = proc.args
    assert isinstance(args, list)
    return [str(word) for word in args]


#: pids of the seqbox processes each test (by token) started
SEQBOX_PIDS: dict[str, set[int]] = {}


class SeqboxRunner:
    """Starts ``python -m seqbox`` in the test's isolated environment.

    Every invocation has a time limit and is reaped; whatever it left behind is
    found by the token (see :func:`token_pids`) and killed at teardown.
    """

    def __init__(self, project: Path, token: str) -> None:
        self.project = project
        self.token = token
        self.started: list[subprocess.Popen[bytes]] = []

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env[TOKEN_ENV] = self.token
        env.update(extra or {})
        return env

    @staticmethod
    def argv(args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "seqbox", *args]

    @staticmethod
    def run_args(args: Sequence[str], backend: str | None) -> list[str]:
        if backend and VIA_AUTO and backend == AUTO_PICKS:
            backend = "auto"
        return ["run", *(["--backend", backend] if backend else []), *args]

    def start(
        self,
        *args: str,
        backend: str | None = None,
        cli: bool = False,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = subprocess.PIPE,
        stderr: int | None = subprocess.PIPE,
        new_session: bool = True,
        preexec_fn: Callable[[], object] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``seqbox run [--backend B] ARGS`` (or ``seqbox ARGS`` with ``cli``)."""
        argv = self.argv(list(args) if cli else self.run_args(args, backend))
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd or self.project,
            env=self.env(env),
            start_new_session=new_session and preexec_fn is None,
            preexec_fn=preexec_fn,  # noqa: PLW1509 - the test process forks no threads
        )
        self.started.append(proc)
        SEQBOX_PIDS.setdefault(self.token, set()).add(proc.pid)
        return proc

    def python(self, code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -c CODE`` in the project, in the isolated environment."""
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.project,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=slack(timeout),
            check=False,
        )

    def run(
        self,
        *args: str,
        backend: str | None = None,
        cli: bool = False,
        input: bytes | str | None = None,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Completed:
        """Run ``seqbox run [--backend B] ARGS`` (or ``seqbox ARGS``) to completion."""
        if isinstance(input, str):
            input = input.encode()
        start = time.monotonic()
        proc = self.start(
            *args,
            backend=backend,
            cli=cli,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        )
        try:
            out, err = proc.communicate(input, timeout=slack(timeout))
        except subprocess.TimeoutExpired:
            self.kill(proc)
            out, err = proc.communicate()
            pytest.fail(
                f"seqbox did not return within {slack(timeout)}s: {argv_of(proc)}\n"
                f"stdout: {out[-2000:]!r}\nstderr: {err[-2000:]!r}"
            )
        done = Completed(argv_of(proc), proc.returncode, out, err, time.monotonic() - start)
        if not cli and backend and "auto" in self.run_args((), backend):
            fell_back = any(note in done.stderr for note in FALLBACK_NOTES)
            assert not fell_back, f"--backend auto did not use {backend}: {done}"
        return done

    def cli(self, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> Completed:
        """Run ``seqbox ARGS`` (any command)."""
        return self.run(*args, cli=True, timeout=timeout, env=env)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Kill and reap every seqbox this test started and did not wait for."""
        for proc in self.started:
            if proc.poll() is None:
                self.kill(proc)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a D-state process
                pass
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.started.clear()


# -- cgroups -------------------------------------------------------------------------

_RUN_PID_RE = re.compile(r"T\d{6}-(\d+)(?:-\d+)?$")
_SUP_PID_RE = re.compile(r"^seqbox-sup-(\d+)$")
_FOREIGN_KEY_RE = re.compile(r"^seqbox-.+-[0-9a-f]{16}-")


def seqbox_cgroups(root: str = CGROUP_ROOT, maxdepth: int = 6) -> set[str]:
    """Every directory named ``seqbox-*`` or ``seqboxlock-*`` under ``root``, at most ``maxdepth`` deep."""
    found: set[str] = set()
    base = root.rstrip("/").count("/")
    for dirpath, dirnames, _ in os.walk(root):
        depth = dirpath.rstrip("/").count("/") - base
        for name in dirnames:
            if name.startswith(("seqbox-", "seqboxlock-")):  # a lock's parent (seqbox/ceiling.py) too
                found.add(os.path.join(dirpath, name))
        if depth + 1 >= maxdepth:
            dirnames[:] = []
    return found


def cgroup_owner_pid(path: str) -> int | None:
    """The pid of the seqbox that made ``path``, from its name (run id or ``seqbox-sup-PID``)."""
    name = os.path.basename(path)
    match = _SUP_PID_RE.match(name) or _RUN_PID_RE.search(name)
    return int(match.group(1)) if match else None


def is_ours(path: str, token: str, project_key: str) -> bool:
    """Whether a new ``seqbox-*`` cgroup belongs to this test (and not to someone
    else running seqbox on the same machine at the same time)."""
    name = os.path.basename(path)
    if project_key in name:
        return True  # named after this test's own project
    if _FOREIGN_KEY_RE.match(name) and not name.startswith("seqbox-sup-"):
        return False  # named after another project
    pid = cgroup_owner_pid(path)
    if pid is None:
        return False  # a name we cannot read: do not blame this test
    if pid in SEQBOX_PIDS.get(token, ()):
        return True  # made by a seqbox this test started
    return is_alive(pid) and environ_has(pid, f"{TOKEN_ENV}={token}".encode())


def remove_cgroup(path: str, token: str) -> None:
    """Best effort: kill this test's processes in ``path`` and remove it, bottom up."""
    entry = f"{TOKEN_ENV}={token}".encode()
    for dirpath, _, _ in os.walk(path, topdown=False):
        try:
            pids = Path(dirpath, "cgroup.procs").read_text().split()
        except OSError:
            pids = []
        for text in pids:
            if environ_has(int(text), entry):
                try:
                    os.kill(int(text), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for _ in range(100):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)


def self_cgroups(text: str) -> dict[str, str]:
    """/proc/PID/cgroup text -> {controller or "" for v2: path}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            out[name] = path
    return out


def write_file(path: str, value: str) -> None:
    """Write a cgroup (or other kernel) file in one write."""
    with open(path, "w") as f:
        f.write(value)


def own_v2_cgroup(pid: int) -> str:
    """The cgroup v2 path of ``pid`` (its ``0::`` line)."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line.strip()[3:]
    raise AssertionError(f"pid {pid} has no cgroup v2 line")


def wait_for_exec(pid: int, cmdline: bytes, timeout: float = 10.0) -> None:
    """Wait until ``pid`` runs ``cmdline`` (NUL-terminated arguments): a pid
    written before an ``exec`` names the program before it, for a while."""
    deadline = time.monotonic() + slack(timeout)
    while True:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == cmdline:
                    return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"pid {pid} did not exec {cmdline!r} within {timeout}s")
        time.sleep(0.005)


def ours_left(sbx: SeqboxRunner) -> list[str]:
    """What a second ``seqbox clean`` still finds of this test's project. clean
    acts on the whole machine: a suite running beside this one (another checkout,
    another user's CI job) may leave its own crashed runs for it to remove."""
    key = project_key(os.path.realpath(sbx.project))
    res = sbx.cli("clean")
    assert res.returncode == 0, res
    # a cgroup is named after its project; poll records live in this test's own state dir
    return [line for line in res.stdout.splitlines() if key in line or "recorded in" in line]


def crash_a_holder(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> int:
    """A run whose supervisor is SIGKILLed: its command keeps running in its cgroup."""
    pidfile = tmp_path / "pid"
    proc = sbx.start("--", "sh", "-c", 'echo $$ > "$1"; exec sleep 300', "sh", str(pidfile), backend=backend)
    pid = read_pids(pidfile)["0"]
    wait_for_exec(pid, b"sleep\x00300\x00")  # what status and clean name, not the sh before the exec
    proc.kill()
    proc.wait(timeout=10)
    assert alive([pid]) == [pid], "the command should outlive its SIGKILLed supervisor"
    return pid
