"""``seqbox mcp``: an MCP server over stdio for agent hosts (the ``[mcp]`` extra).

Tools: ``run`` (a command under seqbox's limits, through :func:`seqbox.run_async`,
so its runs wait in the same queue and budget as any other), ``status``,
``kill`` (only runs this server started) and ``report``.

The server's options are defaults and ceilings: a call may ask for less memory
or a shorter timeout, never more (a call that asks for more is refused, not
clamped: the caller learns the ceiling instead of meeting a limit it did not
ask for). A ``cwd`` outside ``--root`` is refused. A call that is cancelled,
or whose client goes away, has its seqbox run stopped (SIGTERM: seqbox tears
the whole tree down). It isolates no files and no network: see docs/mcp.md.

This module's name is not ``mcp``: the SDK's package is imported by its
absolute name.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import seqbox
from seqbox import api, history
from seqbox.backends import procinfo
from seqbox.errors import SeqboxError, UsageError
from seqbox.options import parse_value
from seqbox.project import project_key, project_root
from seqbox.status import collect
from seqbox.summary import FIELDS
from seqbox.units import format_duration, format_size

#: the most of a stream's end a ``run`` result carries, in bytes
TAIL_BYTES = 8192
#: ``--pids`` when the server is not told otherwise
DEFAULT_PIDS = 1024
INSTALL_HINT = "seqbox mcp needs the MCP SDK: pip install 'seqbox-cli[mcp]'"
#: what a call's status means when seqbox stopped the command
STOPPED = ("memory", "timeout", "signal", "error")


class Ceilings:
    """The server's options: each a default for a call and the most it may ask for."""

    def __init__(
        self,
        *,
        mem: str | None = "2G",
        timeout: str | None = "10m",
        pids: str | int | None = DEFAULT_PIDS,
        budget: str | None = None,
        root: str | None = None,
        lock: str | None = None,
    ) -> None:
        self.mem = _parse("mem", mem, "--mem")
        self.timeout = _parse("timeout", timeout, "--timeout")
        self.pids = _parse("pids", pids, "--pids")
        self.budget = _parse("budget", budget, "--budget")
        self.lock = _parse("lock", lock, "--lock")
        self.root = os.path.realpath(root or os.getcwd())
        if not os.path.isdir(self.root):
            raise UsageError(f"--root: not a directory: {root}")

    def limit(self, key: str, asked: object, ceiling: Any, unit: str) -> Any:
        """The call's value for ``key``: the server's when not given, else the
        call's, refused when it is more than the ceiling (None: no limit)."""
        if asked is None:
            return ceiling
        value = _parse(key, asked, key)
        if ceiling is not None and (value is None or value > ceiling):
            raise UsageError(f"{key}: {asked!r} is more than this server allows ({_show(ceiling, unit)})")
        return value

    def budget_for(self, asked: object) -> Any:
        if asked is None:
            return self.budget
        value = _parse("budget", asked, "budget")
        if self.budget is None or value == self.budget:
            return value
        if value is None or value == "auto" or (isinstance(self.budget, int) and value > self.budget):
            raise UsageError(
                f"budget: {asked!r} is more than this server allows ({_show(self.budget, 'size')})"
            )
        return value

    def cwd_for(self, asked: str | None) -> str:
        """The call's working directory: inside ``--root`` (relative to it), or refused."""
        if not asked:
            return self.root
        path = os.path.realpath(os.path.join(self.root, os.path.expanduser(asked)))
        if os.path.commonpath([path, self.root]) != self.root:
            raise UsageError(f"cwd: {asked} is outside this server's root {self.root}")
        if not os.path.isdir(path):
            raise UsageError(f"cwd: not a directory: {asked}")
        return path


def _parse(key: str, value: object, what: str) -> Any:
    return None if value is None else parse_value(key, value, what)


def _show(value: object, unit: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_size(int(value)) if unit == "size" else format_duration(float(value))
    return str(value)


def tail(text: str | None, limit: int = TAIL_BYTES) -> tuple[str, int]:
    """The last ``limit`` bytes of ``text`` (UTF-8, cut at a character), and its whole size."""
    data = (text or "").encode("utf-8", "replace")
    return data[-limit:].decode("utf-8", "ignore"), len(data)


def reason_line(status: str, stderr: str | None) -> str | None:
    """seqbox's own line saying why it stopped the command (the last ``seqbox:``
    line of the captured stderr, where the API puts seqbox's lines)."""
    if status not in STOPPED:
        return None
    for line in reversed((stderr or "").splitlines()):
        if line.startswith("seqbox: ") and not line.startswith("seqbox: warning"):
            return line
    return None


def argv_of(command: str | list[str]) -> list[str]:
    if isinstance(command, str):
        if not command.strip():
            raise UsageError("command: an empty command")
        return ["/bin/sh", "-c", command]
    if not command or not all(isinstance(word, str) for word in command):
        raise UsageError("command: expected a shell string or a non-empty list of strings")
    return list(command)


def _ours(pid: object) -> bool:
    """Whether ``pid`` is a seqbox this server started (its child)."""
    if not isinstance(pid, int):
        return False
    info = procinfo.identity(pid)
    return info is not None and info[0] == os.getpid()


def build(ceilings: Ceilings) -> Any:
    """The MCP server with its four tools."""
    from mcp.server.mcpserver import MCPServer  # noqa: PLC0415 - the optional [mcp] extra
    from mcp.server.mcpserver.exceptions import ToolError  # noqa: PLC0415 - the [mcp] extra

    server = MCPServer(
        "seqbox",
        instructions=(
            "Run shell commands under memory, process and time limits on their whole process tree, "
            "queued per project. It does not isolate files or network."
        ),
        version=seqbox.__version__,
        log_level="WARNING",  # a refused call is the caller's answer, not a line in the host's log
    )
    root = project_root(ceilings.root, os.environ)

    def refuse(err: SeqboxError) -> ToolError:
        return ToolError(str(err))

    @server.tool(structured_output=True)
    async def run(
        command: str | list[str],
        mem: str | None = None,
        timeout: str | None = None,
        cwd: str | None = None,
        lock: str | None = None,
        budget: str | None = None,
        key: str | None = None,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Run a command (a shell string, or an argv list) under seqbox and wait for it.

        mem and timeout may only lower the server's ceilings (e.g. "512M", "90s");
        cwd is relative to (and must stay inside) the server's root. Returns the
        run's JSON summary (status ok|failed|timeout|memory|signal|error, exit_code,
        peak_mem_bytes, culprit: the biggest processes near the memory limit, ...)
        with the last 8 KiB of stdout and stderr and, when seqbox stopped the
        command, the reason line."""
        try:
            argv = argv_of(command)
            options: dict[str, Any] = {
                "mem": ceilings.limit("mem", mem, ceilings.mem, "size"),
                "timeout": ceilings.limit("timeout", timeout, ceilings.timeout, "duration"),
                "pids": ceilings.pids,
                "cwd": ceilings.cwd_for(cwd),
                "lock": _parse("lock", lock, "lock") or ceilings.lock,
                "budget": ceilings.budget_for(budget),
            }
            if key is not None and "key" in api.KEYWORDS:  # the learned reservation's key (issue 18)
                options["key"] = key
        except SeqboxError as err:
            raise refuse(err) from None
        # None means "no limit" here, which the API spells "none"
        for name in ("mem", "timeout", "pids"):
            if options[name] is None:
                options[name] = "none"
        result = await seqbox.run_async(argv, capture=True, env=env, **options)
        out, out_size = tail(result.stdout)
        err_tail, err_size = tail(result.stderr)
        document: dict[str, Any] = {name: getattr(result, name) for name in FIELDS}
        document.update(
            stdout=out,
            stderr=err_tail,
            stdout_bytes=out_size,
            stderr_bytes=err_size,
            tail_limit_bytes=TAIL_BYTES,
            reason=reason_line(result.status, result.stderr),
        )
        return document

    @server.tool(structured_output=True)
    def status() -> dict[str, Any]:
        """The project's queue and running commands, as `seqbox status --json`."""
        return dict(collect(project_key(root), root, os.environ))

    @server.tool(structured_output=True)
    def kill(run_id: str | None = None) -> dict[str, Any]:
        """Stop runs this server started: the one with ``run_id`` (from `status`),
        or, without one, every run it started (running or waiting). Their `run`
        calls return with status "signal"."""
        data = collect(project_key(root), root, os.environ)
        pids: list[int] = []
        for lock in data["locks"]:
            for holder in lock["running"]:
                if (run_id is None or holder["run_id"] == run_id) and _ours(holder["pid"]):
                    pids.append(int(holder["pid"]))  # type: ignore[arg-type]  # _ours checked it
            if run_id is None:
                pids += [int(w["pid"]) for w in lock["waiting"] if _ours(w["pid"])]  # type: ignore[arg-type]
        if run_id is not None and not pids:
            raise ToolError(f"no run {run_id!r} of this server is running (see the status tool)")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)  # seqbox tears its whole tree down
            except ProcessLookupError:
                pass
        return {"killed": len(pids), "pids": pids}

    @server.tool(structured_output=True)
    def report(run_id: str) -> dict[str, Any]:
        """One run's summary and its memory over time ([seconds since start, bytes]
        per sample), by run id (or a unique part of one)."""
        try:
            record = history.load(history.find(history.log_directory(root, os.environ), run_id))
        except SeqboxError as err:
            raise refuse(err) from None
        start = record.started_at or 0.0
        samples = [
            [round(t - start, 3), mem]
            for s in record.samples
            if (t := s.get("t")) is not None and (mem := s.get("mem")) is not None
        ]
        return {
            "run_id": record.run_id,
            "status": record.status,
            "summary": dict(record.summary) if record.summary is not None else None,
            "memory": samples,
            "kills": [dict(k) for k in record.kills],
            "log": record.path,
        }

    return server


def serve(ceilings: Ceilings) -> int:
    """Serve over stdin/stdout until the client goes (or SIGTERM/SIGHUP/SIGINT):
    every run still going is stopped first."""
    try:
        import anyio  # noqa: PLC0415 - the [mcp] extra: without it, say how to get it
        import mcp  # noqa: F401, PLC0415 - the SDK, not this module
    except ImportError:
        raise SeqboxError(INSTALL_HINT) from None
    server = build(ceilings)

    async def main() -> None:
        async with anyio.create_task_group() as group:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP, signal.SIGINT) as signals:
                    async for _ in signals:
                        group.cancel_scope.cancel()  # cancels every call: seqbox stops their trees
                        return

            group.start_soon(on_signal)
            await server.run_stdio_async()
            group.cancel_scope.cancel()

    anyio.run(main)
    return 0
