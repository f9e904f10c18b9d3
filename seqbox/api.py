"""The Python API: ``seqbox.run`` and ``seqbox.run_async``.

Each call runs ``python -m seqbox run`` as a child process: the same lock and
queue as a ``seqbox run`` typed in a terminal, and the caller's own process is
left alone (no signal handlers installed, no subreaper flag, no fork of a
possibly multi-threaded program).

Keyword arguments are ``seqbox run``'s long options (``--mem-high`` is
``mem_high``), each with its type. One that is not given (None) is left to the
usual precedence: SEQBOX_* environment, profile, config file, default. To
switch a limit off pass ``0`` or ``"none"``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec

from seqbox.errors import UsageError
from seqbox.options import OPTIONS, parse_value
from seqbox.schema import SUMMARY, check
from seqbox.summary import FIELDS, Summary

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeAlias

    from seqbox.records import Culprit

    Command: TypeAlias = "list[str] | tuple[str, ...]"
    Size: TypeAlias = "str | int"
    Duration: TypeAlias = "str | float"
    PathText: TypeAlias = "str | os.PathLike[str]"

#: the names ``backend=`` takes
BackendName = Literal["auto", "cgroup2", "cgroup1", "poll"]

__all__ = ["BackendName", "Result", "run", "run_async"]

_P = ParamSpec("_P")

#: keywords of ``run``/``run_async`` that are not options of the table
OWN_KEYWORDS = ("command", "capture", "env")
#: options of the table the API does not take as keywords: it handles them itself
#: (``capture`` is ``--json``, ``env`` is ``--env``, it reads its own ``--report``)
#: or they make no sense for a caller (``--debug``)
NOT_KEYWORDS = ("json", "report", "env", "debug")
#: the options the API takes as keywords: every command-line option but those above
KEYWORDS = {opt.key: opt for opt in OPTIONS if opt.flags and opt.key not in NOT_KEYWORDS}


@dataclass(frozen=True)
class Result(Summary):
    """How a run ended: the fields of the JSON summary (:class:`seqbox.summary.Summary`,
    in its order), and with ``capture=True`` the command's output; its ``stderr``
    then also holds seqbox's own lines (why the command was killed, why it could not run)."""

    command: list[str]
    status: str
    exit_code: int
    signal: int | None
    wall_s: float
    cpu_s: float | None
    peak_mem_bytes: int | None
    mem_limit_bytes: int | None
    procs_peak: int
    backend: str | None
    lock: str | None
    lock_wait_s: float
    attempts: int
    run_id: str
    log: str | None
    reserved_bytes: int | None
    frozen_s: float
    culprit: list[Culprit] | None
    stdout: str | None = None
    stderr: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _result_from(data: Mapping[str, Any], **extra: Any) -> Result:
    fields = check(data, SUMMARY)
    values: dict[str, Any] = {name: fields.get(name) for name in FIELDS}
    return Result(**values, **extra)


def _command_line(
    command: Command,
    capture: bool,
    report: str | None,
    env: Mapping[str, str] | None,
    options: Mapping[str, object],
) -> list[str]:
    if isinstance(command, str) or not isinstance(command, (list, tuple)) or not command:
        raise UsageError("command must be a non-empty list of strings, e.g. ['pytest', '-x']")
    argv = [sys.executable, "-m", "seqbox", "run"]
    for key, given in options.items():
        opt = KEYWORDS.get(key)
        if opt is None:
            raise UsageError(f"seqbox.run() got an unknown option {key!r}")
        if given is None or (key == "quiet" and capture):  # captured, seqbox's lines reach no terminal:
            continue  # they stay, for the result's stderr to say why a run was killed
        value = os.fspath(given) if isinstance(given, os.PathLike) else given
        parse_value(key, value, key)  # misuse raises here, in the caller
        if key == "cwd" and not os.path.isdir(str(value)):
            raise UsageError(f"cwd: not a directory: {value}")
        flag = opt.flags[-1]
        if not opt.takes:  # a flag
            if value:
                argv.append(flag)
        else:
            argv += [flag, str(value)]
    for name, value in (env or {}).items():
        argv += ["--env", f"{name}={value}"]
    if capture:
        argv.append("--json")
    if report is not None:
        argv += ["--report", report]
    return [*argv, "--", *map(str, command)]


def _options(given: Mapping[str, object]) -> dict[str, object]:
    """The option keywords of a call (from its ``locals()``), in table order."""
    return {key: given[key] for key in KEYWORDS}


def _result(
    returncode: int,
    stdout: bytes | None,
    stderr: bytes | None,
    report_path: str,
    capture: bool,
    command: Command,
) -> Result:
    text = (stdout or b"").decode("utf-8", "replace") if capture else ""
    own = (stderr or b"").decode("utf-8", "replace")  # seqbox's own lines (capture only)
    if not capture:
        try:
            with open(report_path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            text = ""
    try:
        data = json.loads(text.strip().splitlines()[-1]) if text.strip() else None
    except ValueError:
        data = None
    if not isinstance(data, dict):  # seqbox itself failed before a summary (its stderr says why)
        failed: dict[str, Any] = {"command": list(command), "status": "error", "exit_code": returncode}
        failed.update(wall_s=0.0, procs_peak=0, lock_wait_s=0.0, attempts=0, run_id="", frozen_s=0.0)
        if capture:
            return _result_from(failed, stdout="", stderr=own)
        return _result_from(failed)
    errors = str(data.get("stderr") or "") + own if capture else None
    return _result_from(data, stdout=data.get("stdout"), stderr=errors)


async def run_async(
    command: Command,
    *,
    capture: bool = False,
    env: Mapping[str, str] | None = None,
    mem: Size | None = None,
    mem_high: Size | None = None,
    warn_at: float | str | None = None,
    timeout: Duration | None = None,
    grace: Duration | None = None,
    signal: str | int | None = None,
    pids: int | None = None,
    cpus: float | None = None,
    retry: int | None = None,
    retry_on_oom: bool | None = None,
    lock: str | None = None,
    no_lock: bool | None = None,
    slots: int | None = None,
    budget: Size | None = None,
    reserve: Size | None = None,
    key: str | None = None,
    wait_timeout: Duration | None = None,
    backend: BackendName | None = None,
    log: PathText | None = None,
    quiet: bool | None = None,
    verbose: bool | None = None,
    cwd: PathText | None = None,
    profile: str | None = None,
) -> Result:
    """``run`` for asyncio, with the same keywords. Cancelling the task stops the
    command's whole tree (seqbox gets SIGTERM and tears it down) before the
    cancellation propagates."""
    options = _options(locals())  # the keywords are declared once, here: run takes this signature
    with tempfile.TemporaryDirectory(prefix="seqbox-api-") as tmp:
        report = None if capture else os.path.join(tmp, "report.json")
        argv = _command_line(command, capture, report, env, options)
        pipe = asyncio.subprocess.PIPE if capture else None
        proc = await asyncio.create_subprocess_exec(*argv, stdout=pipe, stderr=pipe)
        try:
            stdout, stderr = await proc.communicate()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
            raise
        return _result(proc.returncode or 0, stdout, stderr, report or "", capture, command)


def _keywords_of(
    source: Callable[_P, Coroutine[Any, Any, Result]],
) -> Callable[[Callable[..., Result]], Callable[_P, Result]]:
    """Give the decorated function ``source``'s parameters: mypy checks each call
    against them (the ParamSpec), ``help()``, ``inspect.signature`` and editors
    show them (``__signature__``). The function binds its call with :func:`_arguments`."""

    def give(function: Callable[..., Result]) -> Callable[_P, Result]:
        function.__signature__ = inspect.signature(source)  # type: ignore[attr-defined]
        return function

    return give


def _arguments(function: Callable[..., object], *args: object, **kwargs: object) -> dict[str, Any]:
    """A call's arguments by name, the defaults of ``function``'s signature filled
    in: what ``locals()`` holds on entry to a function declaring it. A keyword
    the signature lacks raises TypeError, as Python's own call does."""
    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


@_keywords_of(run_async)
def run(command: Command, **keywords: Any) -> Result:
    """Run ``command`` (a list of strings) under seqbox and wait for it.

    With ``capture`` true, its stdout and stderr are collected into the result
    (as ``--json`` does), with seqbox's own lines after the command's in
    ``stderr``; otherwise both are inherited. ``env`` adds environment variables.

    The limits, each as ``seqbox run``'s option of the same name:
    ``mem`` and ``mem_high`` (``"512M"``, ``"2G"`` or bytes), ``warn_at``
    (a fraction of ``mem``), ``timeout`` and ``grace`` (``"90s"``, ``"5m"`` or
    seconds), ``signal`` (``"TERM"``, ``"INT"``, 9), ``pids``, ``cpus``.
    ``retry`` and ``retry_on_oom`` run it again after a failure.
    The queue: ``lock`` (a name), ``no_lock``, ``slots``, ``budget`` (a size or
    ``"auto"``: runs of the lock start only while their ``mem`` fits in it),
    ``reserve`` (what this run reserves under ``budget``; default learned from
    the runs of the same ``key``, a name a program's agents can share),
    ``wait_timeout``.
    ``backend`` forces ``"cgroup2"``, ``"cgroup1"`` or ``"poll"``; ``log`` appends
    the output to a file; ``quiet`` silences seqbox's lines (only its own
    failures are printed), ``verbose`` shows what it does; ``cwd`` is the
    working directory; ``profile`` picks a profile from the config.

    Raises ``seqbox.SeqboxError`` for bad arguments; a failing command is a Result.
    """
    given = _arguments(run, command, **keywords)
    capture, env, options = given["capture"], given["env"], _options(given)
    with tempfile.TemporaryDirectory(prefix="seqbox-api-") as tmp:
        report = None if capture else os.path.join(tmp, "report.json")
        argv = _command_line(command, capture, report, env, options)
        pipe = subprocess.PIPE if capture else None
        proc = subprocess.run(argv, stdout=pipe, stderr=pipe, check=False)
        return _result(proc.returncode, proc.stdout, proc.stderr, report or "", capture, command)
