"""The Python API: ``seqbox.run`` and ``seqbox.run_async``.

Each call runs ``python -m seqbox run`` as a child process: the same lock and
queue as a ``seqbox run`` typed in a terminal, and the caller's own process is
left alone (no signal handlers installed, no subreaper flag, no fork of a
possibly multi-threaded program).

Keyword arguments mirror ``seqbox run``'s long options. One that is not given
(None) is left to the usual precedence: SEQBOX_* environment, profile, config
file, default. To switch a limit off pass ``0`` or ``"none"``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, make_dataclass
from typing import TYPE_CHECKING, Any

from seqbox.errors import UsageError
from seqbox.options import OPTIONS, parse_value
from seqbox.summary import FIELDS, Summary

__all__ = ["Result", "run", "run_async"]

#: options the API takes as keywords: every command-line option but those it
#: handles itself (capture -> --json, env -> --env, the report it reads) and --debug
_KEYWORDS = {
    opt.key: opt for opt in OPTIONS if opt.flags and opt.key not in ("json", "report", "env", "debug")
}


def _ok(self: Result) -> bool:
    return self.status == "ok"


if TYPE_CHECKING:

    @dataclass(frozen=True, init=False)
    class Result(Summary):
        """How a run ended: the fields of the JSON summary, and with
        ``capture=True`` the command's output."""

        stdout: str | None
        stderr: str | None

        def __init__(self, **fields: Any) -> None: ...

        @property
        def ok(self) -> bool: ...

else:
    # A frozen dataclass with the summary's fields (the one list, in seqbox/summary.py)
    Result = make_dataclass(
        "Result",
        [
            *((name, Any) for name in FIELDS),
            ("stdout", Any, field(default=None)),
            ("stderr", Any, field(default=None)),
        ],
        frozen=True,
        namespace={
            "ok": property(_ok),
            "__doc__": "How a run ended: the fields of the JSON summary, and with capture=True the output.",
        },
    )
    Result.__module__ = __name__


def _result_from(data: Mapping[str, Any], **extra: Any) -> Result:
    return Result(**{name: data.get(name) for name in FIELDS}, **extra)


def _command_line(
    command: Sequence[str],
    capture: bool,
    report: str | None,
    env: Mapping[str, str] | None,
    options: Mapping[str, object],
) -> list[str]:
    if isinstance(command, str) or not command:
        raise UsageError("command must be a non-empty list of strings, e.g. ['pytest', '-x']")
    argv = [sys.executable, "-m", "seqbox", "run"]
    for key, value in options.items():
        opt = _KEYWORDS.get(key)
        if opt is None:
            raise UsageError(f"seqbox.run() got an unknown option {key!r}")
        if value is None:
            continue
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


def _result(
    returncode: int, stdout: bytes | None, report_path: str, capture: bool, command: Sequence[str]
) -> Result:
    text = (stdout or b"").decode("utf-8", "replace") if capture else ""
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
        failed.update(wall_s=0.0, procs_peak=0, lock_wait_s=0.0, attempts=0, run_id="")
        return _result_from(failed)
    return _result_from(data, stdout=data.get("stdout"), stderr=data.get("stderr"))


def run(
    command: Sequence[str], *, capture: bool = False, env: Mapping[str, str] | None = None, **options: object
) -> Result:
    """Run ``command`` under seqbox and wait for it.

    ``capture=True`` collects its stdout and stderr into the result (as
    ``--json`` does); otherwise they are inherited. ``env`` adds environment
    variables. Other keywords: ``mem``, ``mem_high``, ``warn_at``, ``timeout``,
    ``grace``, ``signal``, ``pids``, ``cpus``, ``retry``, ``retry_on_oom``,
    ``lock``, ``no_lock``, ``slots``, ``wait_timeout``, ``backend``, ``log``,
    ``profile``, ``cwd``, ``quiet``, ``verbose``.

    Raises UsageError for bad arguments; a failing command is a Result.
    """
    import subprocess

    with tempfile.TemporaryDirectory(prefix="seqbox-api-") as tmp:
        report = None if capture else os.path.join(tmp, "report.json")
        argv = _command_line(command, capture, report, env, options)
        proc = subprocess.run(argv, stdout=subprocess.PIPE if capture else None, check=False)
        return _result(proc.returncode, proc.stdout, report or "", capture, command)


async def run_async(
    command: Sequence[str], *, capture: bool = False, env: Mapping[str, str] | None = None, **options: object
) -> Result:
    """``run`` for asyncio. Cancelling the task stops the command's whole tree
    (seqbox gets SIGTERM and tears it down) before the cancellation propagates."""
    import asyncio

    with tempfile.TemporaryDirectory(prefix="seqbox-api-") as tmp:
        report = None if capture else os.path.join(tmp, "report.json")
        argv = _command_line(command, capture, report, env, options)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE if capture else None
        )
        try:
            stdout, _ = await proc.communicate()
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
            raise
        return _result(proc.returncode or 0, stdout, report or "", capture, command)
