"""The CI job summary: a Markdown block per top-level run appended to
$GITHUB_STEP_SUMMARY, ``summary = false`` to turn it off, and ``seqbox report
--markdown`` printing the same block."""

from __future__ import annotations

from pathlib import Path

from seqbox import stepsummary
from tests.helpers import MIB, SeqboxRunner, prog

SUMMARY = {
    "command": ["python3", "-m", "pytest", "-x", "a|b"],
    "status": "memory",
    "exit_code": 137,
    "signal": None,
    "wall_s": 72.5,
    "cpu_s": 70.0,
    "peak_mem_bytes": 1024 * MIB,
    "mem_limit_bytes": 1024 * MIB,
    "procs_peak": 9,
    "lock_wait_s": 3.25,
    "culprit": [
        {"pid": 4242, "command": "python3 -m pytest -n 8", "rss_bytes": 900 * MIB},
        {"pid": 4250, "command": "python3 -c `x`", "rss_bytes": 60 * MIB},
    ],
}


def test_block_on_canned_summary() -> None:
    text = stepsummary.block(SUMMARY, [100 * MIB, 512 * MIB, 1024 * MIB])
    lines = text.splitlines()
    assert lines[0] == "#### seqbox: `python3 -m pytest -x 'a\\|b'`"
    assert lines[2] == "| status | peak of limit | duration | lock wait |"
    assert lines[4] == "| 💥 memory (exit 137) | 1.0 GiB of 1.0 GiB (100%) ▂▅█ | 1m12s | 3.2s |"
    assert lines[6] == (
        "Biggest processes: pid 4242 `python3 -m pytest -n 8` 900.0 MiB; "
        "pid 4250 `` python3 -c `x` `` 60.0 MiB"
    )
    assert text.endswith("\n\n")  # blocks appended one after another stay apart


def test_block_without_limit_samples_or_culprit() -> None:
    text = stepsummary.block({"command": ["true"], "status": "ok", "exit_code": 0, "wall_s": 0.01})
    assert "| ✅ ok (exit 0) | - | 0.0s | - |" in text
    assert "Biggest" not in text


def test_sparkline_squeezes_and_scales() -> None:
    assert stepsummary.sparkline([0, 50, 100], top=100) == "▁▅█"
    assert len(stepsummary.sparkline(list(range(1000)))) == stepsummary.SPARK_WIDTH
    assert stepsummary.sparkline([]) == ""


def test_a_run_appends_its_block(sbx: SeqboxRunner, tmp_path: Path) -> None:
    job = tmp_path / "summary.md"
    job.write_text("earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(job)}
    res = sbx.run("--mem", "256M", "--", *prog("hog", "--total", "32", "--hold", "1.2"), env=env)
    assert res.returncode == 0, res
    text = job.read_text()
    assert text.startswith("earlier step\n#### seqbox: `")
    assert "prog.py hog --total 32 --hold 1.2`\n" in text
    assert "| ✅ ok (exit 0) | " in text
    assert " of 256.0 MiB (" in text
    assert any(char in text for char in stepsummary.BLOCKS)  # the sparkline
    # report --markdown prints the same block
    again = sbx.run("report", "--markdown", "1", cli=True, env=env)
    assert again.returncode == 0, again
    assert again.stdout == text[len("earlier step\n") :]


def test_a_memory_kill_names_the_culprit(sbx: SeqboxRunner, tmp_path: Path) -> None:
    job = tmp_path / "summary.md"
    job.touch()
    res = sbx.run("--mem", "96M", "--", *prog("hog", "--chunk", "8", "--pause", "0.02"),
                  env={"GITHUB_STEP_SUMMARY": str(job)})  # fmt: skip
    assert res.returncode == 137, res
    text = job.read_text()
    assert "| 💥 memory (exit 137) | " in text
    assert "Biggest processes: pid " in text


def test_a_nested_run_appends_nothing(sbx: SeqboxRunner, tmp_path: Path) -> None:
    job = tmp_path / "summary.md"
    job.touch()
    res = sbx.run("--", *sbx.argv(["run", "--", "echo", "inner"]), env={"GITHUB_STEP_SUMMARY": str(job)})
    assert res.returncode == 0, res
    assert job.read_text().count("#### seqbox:") == 1, job.read_text()


def test_summary_false_turns_it_off(sbx: SeqboxRunner, project: Path, tmp_path: Path) -> None:
    (project / "seqbox.toml").write_text("summary = false\n")
    job = tmp_path / "summary.md"
    job.touch()
    res = sbx.run("--", "true", env={"GITHUB_STEP_SUMMARY": str(job)})
    assert res.returncode == 0, res
    assert job.read_text() == ""


def test_an_unwritable_summary_is_left_alone(sbx: SeqboxRunner, tmp_path: Path) -> None:
    res = sbx.run("--", "true", env={"GITHUB_STEP_SUMMARY": str(tmp_path / "no" / "such.md")})
    assert res.returncode == 0, res
    assert res.stderr == "", res
