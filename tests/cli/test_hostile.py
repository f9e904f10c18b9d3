"""Hostile input and a hostile environment: every failure is 125 and one
``seqbox:`` line, before anything runs; a state directory tampered with is
refused, never followed; a full disk or too few file descriptors are said in
one line; the command's output, exit code and environment are never cut."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from seqbox.config import resolve
from seqbox.errors import ConfigError, UsageError
from seqbox.options import BY_KEY, CONFIG_KEYS
from seqbox.project import project_key
from tests.capabilities import needs
from tests.helpers import SeqboxRunner, ours_left, prog, read_pids, wait_dead

# -- options ------------------------------------------------------------------------

HOSTILE_OPTIONS = [
    ["--mem", "99999999999999999999G"],
    ["--mem", "16E"],
    ["--mem", "300"],
    ["--mem", "1K"],
    ["--mem-high", "12"],
    ["--pids", "18446744073709551616"],
    ["--pids", "0"],
    ["--cpus", "0"],
    ["--cpus", "0.001"],
    ["--timeout", "99999999999999d"],
    ["--slots", "100000"],
    ["--lock", "a", "--no-lock"],
    ["--slots", "2", "--no-lock"],
    ["--wait-timeout", "5", "--no-lock"],
    ["--report", "/nonexistent/x.json"],
    ["--report", "/"],
    ["--mem", "1G", "--mem-high", "2G"],
    ["--lock", "ci\n"],  # a regex's $ let a trailing newline through, into a directory's name
    ["--lock", "../x"],
]


@pytest.mark.parametrize("args", HOSTILE_OPTIONS, ids=" ".join)
def test_hostile_options_are_refused_before_anything_runs(
    sbx: SeqboxRunner, tmp_path: Path, args: list[str]
) -> None:
    marker = tmp_path / "ran"
    res = sbx.run(*args, "--", "sh", "-c", 'touch "$1"; exit 3', "sh", str(marker))
    assert res.returncode == 125, res
    line = res.one_line()
    assert args[0] in line or "--no-lock" in line, line
    assert not marker.exists(), "the command ran"


def test_a_forgotten_unit_gets_a_hint(sbx: SeqboxRunner) -> None:
    assert "did you mean 300M?" in sbx.run("--mem", "300", "--", "true").one_line()


# -- config files: every key x every wrong type ----------------------------------------

WRONG = {"string": "%%bad%%", "number": -1, "boolean": True, "list": [20], "table": {}}


def _toml_value(value: object) -> str:
    if isinstance(value, dict):
        return "{}"
    return json.dumps(value)


def _wrong_types(key: str) -> list[str]:
    kinds = ["number", "list", "table"]
    if BY_KEY[key].takes and key != "lock":  # not a flag; true is a fine lock name
        kinds.append("boolean")
    if key not in ("log_dir", "key"):  # any string is a directory name, or a key of learned reservations
        kinds.append("string")
    return kinds


CASES = [(key, kind) for key in sorted(CONFIG_KEYS) for kind in _wrong_types(key)]


@pytest.mark.parametrize(("key", "kind"), CASES, ids=[f"{k}={t}" for k, t in CASES])
@pytest.mark.parametrize("where", ["top", "unselected-profile"])
def test_every_key_with_every_wrong_type_names_the_file_and_the_key(
    tmp_path: Path, key: str, kind: str, where: str
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    line = f"{key} = {_toml_value(WRONG[kind])}\n"
    body = line if where == "top" else f"[profiles.other]\n{line}"
    (root / "seqbox.toml").write_text(body)
    with pytest.raises((ConfigError, UsageError)) as info:
        resolve({}, str(root), {})
    message = str(info.value)
    assert str(root / "seqbox.toml") in message, message
    assert key in message, message
    assert "\n" not in message


def test_a_wrong_type_in_pyproject_through_the_cli(sbx: SeqboxRunner, project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.seqbox]\npids = [20]\n")
    res = sbx.run("--", "true")
    assert res.returncode == 125, res
    assert "tool.seqbox.pids" in res.one_line()
    (project / "pyproject.toml").write_text("[tool.seqbox.profiles.x]\nmem = {}\n")
    res = sbx.run("--", "true")
    assert res.returncode == 125, res
    assert "tool.seqbox.profiles.x.mem" in res.one_line()


# -- what the command sees is never changed -----------------------------------------------


def test_json_stays_valid_with_arguments_that_are_not_utf8(sbx: SeqboxRunner, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    argv = [
        sys.executable,
        "-m",
        "seqbox",
        "run",
        "--json",
        "--report",
        str(report),
        "--",
        "echo",
        "a\udcffb",
    ]
    proc = subprocess.run(argv, env=sbx.env(), cwd=sbx.project, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc
    document = json.loads(proc.stdout.decode("utf-8"))
    assert document["command"] == ["echo", "a\ufffdb"]
    assert json.loads(report.read_text(encoding="utf-8"))["command"] == ["echo", "a\ufffdb"]


@pytest.mark.parametrize("name", [b"A.B", b"\xff\xfe", b"x-y"])
def test_the_environment_passes_byte_for_byte(sbx: SeqboxRunner, backend: str, name: bytes) -> None:
    env = {os.fsencode(k): os.fsencode(v) for k, v in sbx.env().items()}
    env[name] = b"v\xfe1"
    argv = [sys.executable, "-m", "seqbox", "run", "--backend", backend, "--", "env", "-0"]
    proc = subprocess.run(argv, env=env, cwd=sbx.project, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc
    assert name + b"=v\xfe1" in proc.stdout.split(b"\0")


def test_a_report_that_fails_after_the_run_keeps_the_exit_code(sbx: SeqboxRunner, tmp_path: Path) -> None:
    where = tmp_path / "reports"
    where.mkdir()
    res = sbx.run("--report", str(where / "r.json"), "--", "sh", "-c", 'rmdir "$1"; exit 3', "sh", str(where))
    assert res.returncode == 3, res
    assert "warning: cannot write the report" in res.one_line()


# -- a state directory tampered with ------------------------------------------------------


def _lock_dir(project: Path) -> Path:
    key = project_key(os.path.realpath(project))
    return Path(os.environ["SEQBOX_STATE_DIR"]) / "projects" / key / "locks" / "default"


@pytest.mark.parametrize("name", ["door", "slot-0", "t-1", "cancel"])
def test_a_planted_symlink_in_the_lock_dir_is_refused(
    sbx: SeqboxRunner, project: Path, tmp_path: Path, name: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    lock = _lock_dir(project)
    lock.mkdir(parents=True, mode=0o700)
    (lock / name).symlink_to(victim)
    res = sbx.run("--", "true")
    assert res.returncode == 125, res
    assert "not a regular file" in res.one_line()
    assert victim.read_text() == "keep\n"


@pytest.mark.parametrize("kind", ["fifo-door", "dir-slot", "symlink-projects", "symlink-locks"])
def test_odd_files_in_the_state_dir_are_refused(
    sbx: SeqboxRunner, project: Path, tmp_path: Path, kind: str
) -> None:
    lock = _lock_dir(project)
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    if kind == "fifo-door":
        lock.mkdir(parents=True, mode=0o700)
        os.mkfifo(lock / "door")
    elif kind == "dir-slot":
        lock.mkdir(parents=True, mode=0o700)
        (lock / "slot-0").mkdir()
    elif kind == "symlink-projects":
        lock.parents[3].mkdir(parents=True, mode=0o700)
        lock.parents[3].joinpath("projects").symlink_to(victim)
    else:
        lock.parents[1].mkdir(parents=True, mode=0o700)
        lock.parents[1].joinpath("locks").symlink_to(victim)
    res = sbx.run("--", "true")
    assert res.returncode == 125, res
    assert res.one_line().startswith("seqbox: refusing to use"), res
    assert victim.read_text() == "keep\n"
    for command in (["status"], ["kill", "--all"], ["clean"]):
        other = sbx.cli(*command)
        assert other.returncode in (0, 1, 125), other
        assert "internal error" not in other.stderr, other
        assert "Traceback" not in other.stderr, other


def test_a_half_joined_ticket_is_removed(sbx: SeqboxRunner, project: Path) -> None:
    """A supervisor killed while joining leaves ``.new-<pid>-<n>``: the next run
    (or ``seqbox clean``) removes it with the lock's other files."""
    lock = _lock_dir(project)
    lock.mkdir(parents=True, mode=0o700)
    for name in (".new-99999999-1", "door", "slot-0"):
        (lock / name).write_text("")
    res = sbx.run("--", "true")
    assert res.returncode == 0, res
    assert not lock.parents[2].exists(), sorted(p.name for p in lock.iterdir())
    lock.mkdir(parents=True, mode=0o700)
    (lock / ".new-99999999-2").write_text("")
    (lock / "door").write_text("")
    assert "idle lock files" in sbx.cli("clean").stdout
    assert not lock.exists()


# -- a crashed poll run --------------------------------------------------------------------


def test_clean_ends_a_crashed_poll_tree(sbx: SeqboxRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "fam"
    proc = sbx.start("--", *prog("family", "--pids", pidfile, "--exit", "wait"), backend="poll")
    pids = list(read_pids(pidfile, count=4).values())
    proc.kill()
    proc.wait(timeout=10)
    assert wait_dead(pids, timeout=0.5) != [], "the tree should outlive its SIGKILLed supervisor"
    res = sbx.cli("clean")
    assert res.returncode == 0, res
    assert "the processes recorded in" in res.stdout, res
    assert wait_dead(pids) == []
    assert ours_left(sbx) == []


# -- the system says no -------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (root only), unmounted afterwards."""
    path = tmp_path / "tiny"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path: Path) -> None:
    with open(path / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


@needs("root")
def test_a_full_state_disk_is_one_line(sbx: SeqboxRunner, tiny_fs: Path) -> None:
    _fill(tiny_fs)
    res = sbx.run("--", "true", env={"SEQBOX_STATE_DIR": str(tiny_fs / "state")})
    assert res.returncode == 125, res
    assert "no space left" in res.one_line()


@needs("root")
def test_a_log_on_a_full_disk_cuts_nothing(sbx: SeqboxRunner, tiny_fs: Path) -> None:
    """1 MiB of output into a 256 KiB file system: all of it reaches stdout, the
    exit code is the command's, and one warning says the log is incomplete."""
    script = "import sys; sys.stdout.buffer.write(b'x' * 1048576); sys.exit(3)"
    res = sbx.run("--log", str(tiny_fs / "out.log"), "--", sys.executable, "-c", script, timeout=60)
    assert res.returncode == 3, res
    assert len(res.stdout_bytes) == 1048576
    assert "cannot write the log" in res.one_line()


@pytest.mark.parametrize("limit", [5, 8, 11, 14, 17, 20, 22])
def test_too_few_file_descriptors_is_one_line(sbx: SeqboxRunner, backend: str, limit: int) -> None:
    _one_line_with_too_few_fds(sbx, backend, limit)


@pytest.mark.parametrize("limit", [8, 9, 10, 11, 12, 14, 17])
def test_too_few_file_descriptors_under_auto_is_one_line(sbx: SeqboxRunner, limit: int) -> None:
    """A cgroup backend short of descriptors is no reason to fall back to
    polling (which is as short of them): one line says what is short."""
    _one_line_with_too_few_fds(sbx, "auto", limit)


def _one_line_with_too_few_fds(sbx: SeqboxRunner, backend: str, limit: int) -> None:
    command = f"ulimit -n {limit}; exec {sys.executable} -m seqbox run --backend {backend} -- echo hi"
    proc = subprocess.run(
        ["sh", "-c", command],
        env=sbx.env(),
        cwd=sbx.project,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode == 0:
        assert proc.stdout == "hi\n"
        return
    assert proc.returncode == 125, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("seqbox: "), proc.stderr
    assert "internal error" not in lines[0]


@pytest.mark.parametrize(
    "args",
    [["run", "--", "true"], ["status"], ["logs"], ["init"], ["kill", "--all"], ["monitor", "--once"],
     ["report"]],
)  # fmt: skip
def test_a_deleted_current_directory_is_one_line(sbx: SeqboxRunner, tmp_path: Path, args: list[str]) -> None:
    """Started in a directory that was deleted (a shell left in a removed
    build directory): one line that says so, not an internal error."""
    gone = tmp_path / "gone"
    gone.mkdir()
    res = subprocess.run(
        ["sh", "-c", 'cd "$1" && rmdir "$1" && shift && exec "$@"', "sh", str(gone), *sbx.argv(args)],
        env=sbx.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 125, res
    assert res.stderr == "seqbox: the current directory was deleted: cd into one that exists\n", res


@pytest.mark.parametrize("parking", ["sh", "python"])
@pytest.mark.parametrize("closed", ["0", "1", "2", "012"])
def test_a_closed_standard_descriptor_stays_closed_for_the_command(
    sbx: SeqboxRunner, tmp_path: Path, closed: str, parking: str
) -> None:
    """Started with stdin, stdout or stderr closed (``>&-``): the command finds
    it closed as it would without seqbox, and its exit status comes back (it
    was an internal error, or a traceback and exit 1, from a stream Python
    starts as None). Whether the command waits for its turn in ``sh`` or in
    Python (an environment whose ``PWD`` is not the command's directory)."""
    seen = tmp_path / "open"
    probe = 'o=; for fd in 0 1 2; do [ -e /proc/$$/fd/$fd ] && o="$o$fd"; done; echo "$o" > "$1"; exit 3'
    close = " ".join(f"{fd}>&-" if fd != "0" else "0<&-" for fd in closed)
    seqbox = sbx.argv(["run", "--", "sh", "-c", probe, "sh", str(seen)])
    pwd = str(sbx.project) if parking == "sh" else "/"  # sh sets its own PWD: env gives it afterwards
    res = subprocess.run(
        ["sh", "-c", f'pwd="$1"; shift; exec env PWD="$pwd" "$@" {close}', "sh", pwd, *seqbox],
        env=sbx.env(), cwd=sbx.project, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 3, res
    assert seen.read_text().strip() == "".join(fd for fd in "012" if fd not in closed)
    if "2" not in closed:
        assert res.stderr == "", res


def _no_files() -> None:
    """``ulimit -f 0`` in the child (no file may grow)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


def test_a_file_size_limit_is_one_line(sbx: SeqboxRunner) -> None:
    """``ulimit -f 0``: seqbox cannot write its queue entry; one line that says
    which limit, not an internal error."""
    res = subprocess.run(
        sbx.argv(["run", "--", "true"]), env=sbx.env(), cwd=sbx.project, capture_output=True, text=True,
        timeout=60, check=False, preexec_fn=_no_files,
    )  # fmt: skip
    assert res.returncode == 125, res
    assert res.stderr.count("\n") == 1, res
    assert res.stderr.startswith("seqbox: file too large"), res
    assert "the file size limit (ulimit -f) is 0 KiB: raise it" in res.stderr, res
