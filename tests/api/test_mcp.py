"""``seqbox mcp`` driven as an agent host drives it: the MCP SDK's own client
(stdio_client + ClientSession) starts the server from the host configuration
that docs/mcp.md shows, and calls its tools.

Marked ``ecosystem`` (the SDK is the ``[mcp]`` extra, installed in that lane);
skipped only where the SDK cannot be imported.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MIB, SeqboxRunner, prog, slack, wait_dead

pytestmark = pytest.mark.ecosystem
mcp = pytest.importorskip("mcp", reason="the MCP SDK is not installed (pip install '.[mcp]')")
anyio = pytest.importorskip("anyio")

from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"


def host_config() -> dict[str, Any]:
    """The ``mcpServers`` JSON block of the README, as a host reads it (docs/mcp.md
    shows the same: tests/project/test_docs.py)."""
    text = README.read_text()
    block = re.search(r"<!-- mcp-host-config -->\s*```json\n(.*?)```", text, re.S)
    assert block, "README.md has no host configuration block"
    config: dict[str, Any] = json.loads(block.group(1))
    return config


def server_params(sbx: SeqboxRunner, **options: str) -> StdioServerParameters:
    """The documented server, rooted at the test's project, with ``options`` changed."""
    entry = host_config()["mcpServers"]["seqbox"]
    args: list[str] = list(entry["args"])
    options = {"root": str(sbx.project), **options}
    for name, value in options.items():
        flag = f"--{name}"
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert entry["command"] == "seqbox"
    script = Path(sys.executable).parent / "seqbox"  # this venv's, as PATH would find it
    command, args = (str(script), args) if script.exists() else (sys.executable, ["-m", "seqbox", *args])
    return StdioServerParameters(command=command, args=args, env=sbx.env(), cwd=str(sbx.project))


@asynccontextmanager
async def connected(sbx: SeqboxRunner, **options: str) -> AsyncIterator[ClientSession]:
    async with (
        stdio_client(server_params(sbx, **options)) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def call(sbx: SeqboxRunner, tool: str, arguments: dict[str, Any], **options: str) -> Any:
    """One tool call on a fresh server: its result."""

    async def main() -> Any:
        async with connected(sbx, **options) as session:
            return await session.call_tool(tool, arguments)

    return anyio.run(main)


def run_with(sbx: SeqboxRunner, body: Callable[[ClientSession], Awaitable[Any]], **options: str) -> Any:
    async def main() -> Any:
        async with connected(sbx, **options) as session:
            return await body(session)

    return anyio.run(main)


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result
    data: dict[str, Any] = result.structured_content
    return data


def error_text(result: Any) -> str:
    assert result.is_error, result
    return " ".join(block.text for block in result.content)


async def wait_file(path: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + slack(timeout)
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        await anyio.sleep(0.05)
    raise AssertionError(f"{path} never written")


# -- the tools -------------------------------------------------------------------------------


def test_the_tools_are_listed(sbx: SeqboxRunner) -> None:
    async def body(session: ClientSession) -> Any:
        return await session.list_tools()

    tools = {tool.name: tool for tool in run_with(sbx, body).tools}
    assert set(tools) == {"run", "status", "kill", "report"}
    assert {"command", "mem", "timeout", "cwd", "lock", "budget", "key", "env"} <= set(
        tools["run"].input_schema["properties"]
    )


def test_a_command_runs_and_reports(sbx: SeqboxRunner) -> None:
    result = call(sbx, "run", {"command": "echo out; echo err >&2; exit 3", "env": {"WHO": "x"}})
    doc = structured(result)
    assert doc["status"] == "failed"
    assert doc["exit_code"] == 3
    assert doc["stdout"] == "out\n"
    assert doc["stderr"].startswith("err\n")
    assert doc["mem_limit_bytes"] == 2 << 30  # the server's default
    assert doc["reason"] is None
    assert doc["tail_limit_bytes"] == 8192

    async def body(session: ClientSession) -> Any:
        return await session.call_tool("report", {"run_id": doc["run_id"]})

    report = structured(run_with(sbx, body))
    assert report["summary"]["exit_code"] == 3
    assert isinstance(report["memory"], list)


def test_output_tails_are_bounded(sbx: SeqboxRunner) -> None:
    doc = structured(call(sbx, "run", {"command": ["python3", "-c", "print('x' * 100000)"]}))
    assert doc["status"] == "ok"
    assert len(doc["stdout"].encode()) == 8192
    assert doc["stdout_bytes"] == 100001


def test_a_memory_kill(sbx: SeqboxRunner) -> None:
    doc = structured(
        call(sbx, "run", {"command": prog("hog", "--chunk", "8", "--pause", "0.02"), "mem": "96M"})
    )
    assert doc["status"] == "memory"
    assert doc["exit_code"] == 137
    assert doc["mem_limit_bytes"] == 96 * MIB
    assert doc["reason"].startswith("seqbox: killed: memory limit 96.0 MiB exceeded"), doc["reason"]
    assert "; raise --mem if it needs more" in doc["reason"]
    assert doc["culprit"][0]["command"].endswith("prog.py hog --chunk 8 --pause 0.02"), doc["culprit"]


def test_a_timeout(sbx: SeqboxRunner) -> None:
    doc = structured(call(sbx, "run", {"command": "sleep 30", "timeout": "1s"}))
    assert doc["status"] == "timeout"
    assert doc["exit_code"] == 124
    assert doc["reason"].startswith("seqbox: timeout"), doc["reason"]
    assert doc["wall_s"] < slack(8)


def test_a_fork_bomb_under_the_default_pids(sbx: SeqboxRunner) -> None:
    command = prog("bomb", "--for", "20", "--retry", "0.2")
    doc = structured(call(sbx, "run", {"command": command, "timeout": "3s"}))
    assert doc["status"] in ("timeout", "signal", "memory"), doc
    assert doc["procs_peak"] <= 1024, doc  # the documented --pids 1024
    assert doc["wall_s"] < slack(15)


def test_limits_above_the_ceilings_are_refused(sbx: SeqboxRunner, tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    async def body(session: ClientSession) -> list[Any]:
        command = f"touch {marker}"
        return [
            await session.call_tool("run", {"command": command, "mem": "8G"}),
            await session.call_tool("run", {"command": command, "mem": "none"}),
            await session.call_tool("run", {"command": command, "timeout": "1h"}),
        ]

    more_mem, no_limit, longer = run_with(sbx, body)
    assert "more than this server allows (2.0 GiB)" in error_text(more_mem)
    assert "more than this server allows" in error_text(no_limit)
    assert "more than this server allows (10m" in error_text(longer)
    assert not marker.exists()


def test_a_cwd_outside_the_root_is_refused(sbx: SeqboxRunner, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (sbx.project / "sub").mkdir()

    async def body(session: ClientSession) -> list[Any]:
        return [
            await session.call_tool("run", {"command": f"touch {marker}", "cwd": "/"}),
            await session.call_tool("run", {"command": f"touch {marker}", "cwd": "../"}),
            await session.call_tool("run", {"command": "pwd", "cwd": "sub"}),
        ]

    absolute, relative, inside = run_with(sbx, body)
    assert "outside this server's root" in error_text(absolute)
    assert "outside this server's root" in error_text(relative)
    assert not marker.exists()
    assert structured(inside)["stdout"] == f"{(sbx.project / 'sub').resolve()}\n"


def test_four_concurrent_calls_under_a_budget(sbx: SeqboxRunner, tmp_path: Path) -> None:
    """Each reserves its 100M of a 256M budget: two at a time, all four done."""
    spans = tmp_path / "spans"
    script = (
        f"import time; t = time.time(); time.sleep(1.0); "
        f"open({str(spans)!r}, 'a').write(f'{{t}} {{time.time()}}\\n')"
    )

    async def body(session: ClientSession) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []

        async def one() -> None:
            results.append(
                structured(
                    await session.call_tool("run", {"command": ["python3", "-c", script], "mem": "100M"})
                )
            )

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(one)
        return results

    results = run_with(sbx, body, budget="256M")
    assert [doc["status"] for doc in results] == ["ok"] * 4, results
    intervals = [tuple(map(float, line.split())) for line in spans.read_text().splitlines()]
    most = max(sum(1 for s, e in intervals if s <= t < e) for t, _ in intervals)
    assert most <= 2, intervals
    assert sum(1 for doc in results if doc["lock_wait_s"] >= 0.5) >= 2, results


def test_a_cancelled_call_has_its_tree_killed(sbx: SeqboxRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    async def body(session: ClientSession) -> str:
        scope = anyio.CancelScope()

        async def long_call() -> None:
            with scope:
                await session.call_tool("run", {"command": f"sleep 300 & echo $! > {pidfile}; wait"})

        async with anyio.create_task_group() as group:
            group.start_soon(long_call)
            pid = await wait_file(pidfile)
            scope.cancel()
        return pid

    pid = int(run_with(sbx, body))
    assert wait_dead([pid], timeout=10) == [], "the cancelled call's tree is still running"


def test_a_client_that_goes_away_has_its_tree_killed(sbx: SeqboxRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    async def main() -> str:
        async with anyio.create_task_group() as group, connected(sbx) as session:

            async def long_call() -> None:
                await session.call_tool("run", {"command": f"sleep 300 & echo $! > {pidfile}; wait"})

            group.start_soon(long_call)
            pid = await wait_file(pidfile)
            group.cancel_scope.cancel()  # the host quits: the session and the server's stdin close
        return pid

    pid = int(anyio.run(main))
    assert wait_dead([pid], timeout=15) == [], "the tree outlived its client"


def test_kill_stops_a_run_of_this_server(sbx: SeqboxRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    async def body(session: ClientSession) -> tuple[dict[str, Any], dict[str, Any]]:
        results: list[dict[str, Any]] = []

        async def long_call() -> None:
            results.append(
                structured(await session.call_tool("run", {"command": f"echo $$ > {pidfile}; sleep 300"}))
            )

        async with anyio.create_task_group() as group:
            group.start_soon(long_call)
            await wait_file(pidfile)
            status = structured(await session.call_tool("status", {}))
            (running,) = status["locks"][0]["running"]
            killed = structured(await session.call_tool("kill", {"run_id": running["run_id"]}))
        return killed, results[0]

    killed, doc = run_with(sbx, body)
    assert killed["killed"] == 1
    assert doc["status"] == "signal", doc
