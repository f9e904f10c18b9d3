"""The Python API: the same fields as the JSON summary; misuse
raises SeqboxError, a command's failure is a result."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

import seqbox
from seqbox.api import BackendName
from tests.helpers import MIB, SUMMARY_FIELDS, SeqboxRunner, prog, read_pids, slack, wait_dead


def test_run_captures(sbx: SeqboxRunner, backend: BackendName) -> None:
    result = seqbox.run(
        ["sh", "-c", "echo out; echo err >&2; exit 3"], mem="256M", capture=True, backend=backend
    )
    assert isinstance(result, seqbox.Result)
    names = {field.name for field in dataclasses.fields(result)}
    assert names == {*SUMMARY_FIELDS, "stdout", "stderr"}
    assert (result.status, result.exit_code, result.signal) == ("failed", 3, None)
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    assert result.mem_limit_bytes == 256 * MIB
    assert result.backend == backend
    assert result.attempts == 1
    assert result.command == ["sh", "-c", "echo out; echo err >&2; exit 3"]


def test_run_without_capture(sbx: SeqboxRunner, capfd: pytest.CaptureFixture[str]) -> None:
    result = seqbox.run(["sh", "-c", "echo inherited"], timeout="10s")
    assert (result.status, result.exit_code) == ("ok", 0)
    assert result.stdout is None
    assert "inherited" in capfd.readouterr().out
    assert isinstance(result.wall_s, float)


def test_run_memory_kill_is_a_result(
    sbx: SeqboxRunner, backend: BackendName, capfd: pytest.CaptureFixture[str]
) -> None:
    result = seqbox.run(prog("hog", "--chunk", "64"), mem="128M", backend=backend, capture=True)
    assert (result.status, result.exit_code) == ("memory", 137)
    assert result.peak_mem_bytes is not None
    assert result.peak_mem_bytes > 64 * MIB
    # captured: seqbox's own line saying why it was killed, not printed
    assert result.stderr is not None
    assert "seqbox: killed: memory limit 128.0 MiB exceeded" in result.stderr
    assert capfd.readouterr().err == ""


def test_capture_holds_seqbox_failure(sbx: SeqboxRunner, capfd: pytest.CaptureFixture[str]) -> None:
    result = seqbox.run(["true"], profile="nosuchprofile", capture=True)
    assert (result.status, result.exit_code) == ("error", 125)
    assert result.stderr is not None
    assert result.stderr.startswith("seqbox: ")
    assert "nosuchprofile" in result.stderr
    assert capfd.readouterr().err == ""


def test_quiet_is_quiet(sbx: SeqboxRunner, backend: BackendName, capfd: pytest.CaptureFixture[str]) -> None:
    result = seqbox.run(prog("hog", "--chunk", "64"), mem="128M", warn_at=0.25, backend=backend, quiet=True)
    assert (result.status, result.exit_code) == ("memory", 137)
    assert "seqbox:" not in capfd.readouterr().err


def test_run_options(sbx: SeqboxRunner, tmp_path: Path) -> None:
    count = tmp_path / "count"
    result = seqbox.run(
        prog("counter", "--count", count, "--ok-at", "2"),
        retry=2,
        timeout=30,
        env={"SBX_X": "1"},
        cwd=str(tmp_path),
        quiet=True,
    )
    assert (result.status, result.attempts) == ("ok", 2)


def test_run_async(sbx: SeqboxRunner, backend: BackendName) -> None:
    async def main() -> list[seqbox.Result]:
        return list(
            await asyncio.gather(
                seqbox.run_async(["sh", "-c", "echo one"], capture=True, backend=backend, no_lock=True),
                seqbox.run_async(["sh", "-c", "exit 4"], capture=True, backend=backend, no_lock=True),
            )
        )

    one, four = asyncio.run(main())
    assert (one.status, one.stdout) == ("ok", "one\n")
    assert (four.status, four.exit_code) == ("failed", 4)


def test_run_async_cancel_stops_the_tree(sbx: SeqboxRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "family"

    async def main() -> dict[str, int]:
        task = asyncio.ensure_future(
            seqbox.run_async(prog("family", "--pids", pidfile, "--exit", "wait"), grace="1s")
        )
        deadline = time.monotonic() + slack(10)
        while not pidfile.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        pids = read_pids(pidfile, count=4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids

    pids = asyncio.run(main())
    assert wait_dead(pids.values(), 3) == []


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["true"], {"mem": "lots"}),
        (["true"], {"timeout": "soon"}),
        (["true"], {"signal": "FOO"}),
        (["true"], {"backend": "nonsense"}),
        ([], {}),
        ("true", {}),
    ],
    ids=["mem", "timeout", "signal", "backend", "empty", "string"],
)
def test_misuse_raises(sbx: SeqboxRunner, command: object, options: dict[str, object]) -> None:
    with pytest.raises(seqbox.SeqboxError):
        seqbox.run(command, **options)  # type: ignore[arg-type]


def test_misuse_raises_in_async(sbx: SeqboxRunner) -> None:
    with pytest.raises(seqbox.SeqboxError):
        asyncio.run(seqbox.run_async(["true"], mem="lots"))


def test_missing_cwd_raises(sbx: SeqboxRunner, tmp_path: Path) -> None:
    with pytest.raises(seqbox.SeqboxError):
        seqbox.run(["true"], cwd=str(tmp_path / "missing"))


def test_quiet_and_capture_keep_the_reason_in_stderr(
    sbx: SeqboxRunner, capfd: pytest.CaptureFixture[str]
) -> None:
    """quiet=True with capture=True: nothing on the terminal, and the result's
    stderr still says why the run was killed (as the docs promise)."""
    result = seqbox.run(prog("hog", "--chunk", "16"), mem="64M", quiet=True, capture=True)
    assert result.status == "memory", result
    assert "seqbox: killed: memory limit 64.0 MiB exceeded" in (result.stderr or ""), result
    seen = capfd.readouterr()
    assert "seqbox:" not in seen.err + seen.out
