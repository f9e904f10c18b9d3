"""The JSON summary through --json, --report and --log; --retry."""

from __future__ import annotations

import json
import re
import select
from pathlib import Path

import pytest

from tests.helpers import MIB, STATUSES, SUMMARY_FIELDS, SeqboxRunner, prog, slack


def _check_types(doc: dict[str, object]) -> None:
    assert isinstance(doc["command"], list)
    assert all(isinstance(w, str) for w in doc["command"])
    assert doc["status"] in STATUSES
    assert type(doc["exit_code"]) is int
    assert doc["signal"] is None or type(doc["signal"]) is int
    assert isinstance(doc["wall_s"], (int, float))
    assert doc["wall_s"] >= 0
    assert doc["cpu_s"] is None or (isinstance(doc["cpu_s"], (int, float)) and doc["cpu_s"] >= 0)
    assert doc["peak_mem_bytes"] is None or type(doc["peak_mem_bytes"]) is int
    assert doc["mem_limit_bytes"] is None or type(doc["mem_limit_bytes"]) is int
    assert type(doc["procs_peak"]) is int
    assert doc["procs_peak"] >= 0
    assert isinstance(doc["backend"], str)
    assert doc["lock"] is None or isinstance(doc["lock"], str)
    assert isinstance(doc["lock_wait_s"], (int, float))
    assert doc["lock_wait_s"] >= 0
    assert type(doc["attempts"]) is int
    assert doc["attempts"] >= 1
    assert isinstance(doc["run_id"], str)
    assert doc["run_id"]
    assert doc["log"] is None or isinstance(doc["log"], str)


def test_json_fields(sbx: SeqboxRunner, backend: str) -> None:
    command = ["sh", "-c", "echo hello; echo oops >&2; sleep 0.2; exit 2"]
    res = sbx.run("--json", "--mem", "256M", "--", *command, backend=backend)
    assert res.returncode == 2, res
    doc = res.json()
    assert set(doc) == {*SUMMARY_FIELDS, "stdout", "stderr"}
    _check_types(doc)
    assert doc["command"] == command
    assert (doc["status"], doc["exit_code"], doc["signal"]) == ("failed", 2, None)
    assert doc["backend"] == backend
    assert doc["mem_limit_bytes"] == 256 * MIB
    assert doc["attempts"] == 1
    assert 0.2 <= doc["wall_s"] < slack(5)  # type: ignore[operator]
    assert (doc["stdout"], doc["stderr"]) == ("hello\n", "oops\n")
    assert res.stdout.count("\n") == 1  # one JSON object, nothing else on stdout
    assert res.stderr == ""


def test_json_lock_field(sbx: SeqboxRunner) -> None:
    assert sbx.run("--json", "--", "true").json()["lock"] == "default"
    assert sbx.run("--json", "--lock", "docs", "--", "true").json()["lock"] == "docs"


def test_json_mem_sizes(sbx: SeqboxRunner) -> None:
    assert sbx.run("--json", "--mem", "1.5GiB", "--", "true").json()["mem_limit_bytes"] == 1536 * MIB
    assert sbx.run("--json", "--mem", "2048MB", "--", "true").json()["mem_limit_bytes"] == 2048 * MIB


def test_report_file_while_output_stays_live(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    """--report writes the summary; the command's output is not held back meanwhile:
    the command only goes on once the test has seen its first line."""
    report, go = tmp_path / "report.json", tmp_path / "go"
    proc = sbx.start("--report", str(report), "--", *prog("live", "--go", go), backend=backend)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready, "no output while the command runs"
    assert proc.stdout.readline() == b"first\n"
    assert not report.exists()  # the run is not over yet
    go.touch()
    out, err = proc.communicate(timeout=slack(30))
    assert proc.returncode == 0
    assert out == b"second\n"
    assert b"first-err" in err
    doc = json.loads(report.read_text())
    assert set(doc) == set(SUMMARY_FIELDS)
    _check_types(doc)
    assert doc["status"] == "ok"
    assert doc["backend"] == backend


def test_log_file(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    """--log appends the output and an exit status per try; the output still
    reaches seqbox's stdout and stderr."""
    log, count = tmp_path / "run.log", tmp_path / "count"
    log.write_text("earlier content\n")
    res = sbx.run(
        "--log",
        str(log),
        "--retry",
        "1",
        "--",
        *prog("counter", "--count", count, "--fail", "3"),
        backend=backend,
    )
    assert res.returncode == 3, res
    assert res.stdout == "try 1 out\ntry 2 out\n"
    assert "try 1 err\n" in res.stderr
    assert "try 2 err\n" in res.stderr
    text = log.read_text()
    assert text.startswith("earlier content\n")  # appended
    for line in ("try 1 out", "try 1 err", "try 2 out", "try 2 err"):
        assert line in text
    statuses = [line for line in text.splitlines() if re.search(r"exit.*\b3\b", line)]
    assert len(statuses) >= 2, text  # one exit status per try
    assert text.index("try 1 out") < text.index("try 2 out")


def test_unwritable_log_warns_and_runs(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    res = sbx.run(
        "--log",
        str(tmp_path / "missing" / "run.log"),
        "--",
        "sh",
        "-c",
        "echo ran; exit 4",
        backend=backend,
    )
    assert res.returncode == 4, res
    assert res.stdout == "ran\n"
    assert len(res.seqbox_lines()) == 1, res


def test_retry_until_success(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    count = tmp_path / "count"
    res = sbx.run(
        "--json",
        "--retry",
        "2",
        "--",
        *prog("counter", "--count", count, "--ok-at", "3"),
        backend=backend,
    )
    assert res.returncode == 0, res
    doc = res.json()
    assert (doc["status"], doc["attempts"]) == ("ok", 3)
    assert count.read_text() == "3\n"


def test_retry_exhausted(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    count = tmp_path / "count"
    res = sbx.run(
        "--json",
        "--retry",
        "2",
        "--",
        *prog("counter", "--count", count, "--fail", "4"),
        backend=backend,
    )
    assert res.returncode == 4, res
    doc = res.json()
    assert (doc["status"], doc["exit_code"], doc["attempts"]) == ("failed", 4, 3)
    assert count.read_text() == "3\n"


def test_no_retry_after_success(sbx: SeqboxRunner, tmp_path: Path) -> None:
    count = tmp_path / "count"
    res = sbx.run("--json", "--retry", "3", "--", *prog("counter", "--count", count, "--ok-at", "1"))
    assert res.json()["attempts"] == 1
    assert count.read_text() == "1\n"


def test_retry_after_timeout(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    count = tmp_path / "count"
    res = sbx.run(
        "--json",
        "--retry",
        "1",
        "--timeout",
        f"{slack(0.5):.2f}",
        "--",
        "sh",
        "-c",
        f"echo x >> {count}; sleep 30",
        backend=backend,
    )
    assert res.returncode == 124, res
    assert (res.json()["status"], res.json()["attempts"]) == ("timeout", 2)
    assert count.read_text() == "x\nx\n"


@pytest.mark.parametrize("retry_on_oom", [False, True], ids=["plain", "retry-on-oom"])
def test_retry_after_memory_kill(sbx: SeqboxRunner, backend: str, tmp_path: Path, retry_on_oom: bool) -> None:
    count = tmp_path / "count"
    res = sbx.run(
        "--json",
        "--retry",
        "2",
        *(["--retry-on-oom"] if retry_on_oom else []),
        "--mem",
        "128M",
        "--",
        *prog("hog", "--chunk", "64", "--count", count),
        backend=backend,
    )
    assert res.returncode == 137, res
    doc = res.json()
    tries = 3 if retry_on_oom else 1
    assert (doc["status"], doc["attempts"]) == ("memory", tries)
    assert count.read_text() == f"{tries}\n"


def test_report_when_the_command_is_not_found(sbx: SeqboxRunner, backend: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    res = sbx.run("--report", str(report), "--", "no-such-command-seqbox-test", backend=backend)
    assert res.returncode == 127, res
    doc = json.loads(report.read_text())
    _check_types(doc)
    assert (doc["status"], doc["exit_code"]) == ("error", 127)


def test_report_and_json_agree(sbx: SeqboxRunner, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    res = sbx.run("--json", "--report", str(report), "--", "sh", "-c", "exit 6")
    doc = res.json()
    reported = json.loads(report.read_text())
    assert {key: doc[key] for key in SUMMARY_FIELDS} == reported
