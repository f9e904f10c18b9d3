"""Bad options and config are one clear line and exit 125; the backend choice and
``seqbox doctor`` agree with the capability probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import capabilities as caps
from tests.helpers import Completed, SeqboxRunner

BAD_OPTIONS = {
    "mem": (["--mem", "lots"], "--mem"),
    "mem-missing-value": (["--mem"], "--mem"),
    "timeout": (["--timeout", "soon"], "--timeout"),
    "grace": (["--grace", "later"], "--grace"),
    "unknown-option": (["--frobnicate"], "--frobnicate"),
    "backend": (["--backend", "nonsense"], "--backend"),
    "signal": (["--signal", "FOO"], "--signal"),
    "signal-number": (["--signal", "99"], "--signal"),
    "env": (["--env", "NOEQUALS"], "--env"),
    "pids": (["--pids", "-3"], "--pids"),
    "retry": (["--retry", "twice"], "--retry"),
    "warn-at": (["--warn-at", "2"], "--warn-at"),
    "mem-high-above-mem": (["--mem", "1G", "--mem-high", "2G"], "--mem-high"),
    "quiet-and-verbose": (["-q", "-v"], "-q"),
    "flag-with-value": (["--json=yes"], "--json"),
}


def _assert_one_error_line(res: object, marker: Path, *needles: str) -> None:
    assert isinstance(res, Completed)
    assert res.returncode == 125, res
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res
    assert lines[0].startswith("seqbox: "), res
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], res
    assert res.stdout == ""
    assert not marker.exists(), "the command ran although seqbox refused"


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_bad_option(sbx: SeqboxRunner, tmp_path: Path, case: str) -> None:
    args, needle = BAD_OPTIONS[case]
    marker = tmp_path / "ran"
    res = sbx.run(*args, "--", "touch", str(marker))
    _assert_one_error_line(res, marker, needle)


def test_cwd_not_a_directory(sbx: SeqboxRunner, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    missing = tmp_path / "missing"
    res = sbx.run("--cwd", str(missing), "--", "touch", str(marker))
    _assert_one_error_line(res, marker, str(missing))


@pytest.mark.parametrize(
    "args", [[], ["--mem", "1G"], ["--mem", "1G", "--"]], ids=["bare", "options", "dashes"]
)
def test_missing_command(sbx: SeqboxRunner, tmp_path: Path, args: list[str]) -> None:
    res = sbx.run(*args)
    _assert_one_error_line(res, tmp_path / "ran")


def test_bad_config_key(sbx: SeqboxRunner, project: Path, tmp_path: Path) -> None:
    config = project / "seqbox.toml"
    config.write_text('mem = "1G"\nmemx = 1\n')
    marker = tmp_path / "ran"
    res = sbx.run("--", "touch", str(marker))
    _assert_one_error_line(res, marker, str(config), "memx")


def test_bad_config_value(sbx: SeqboxRunner, project: Path, tmp_path: Path) -> None:
    config = project / "seqbox.toml"
    config.write_text('mem = "lots"\n')
    marker = tmp_path / "ran"
    res = sbx.run("--", "touch", str(marker))
    _assert_one_error_line(res, marker, str(config), "mem", "lots")


def test_bad_pyproject_key(sbx: SeqboxRunner, project: Path, tmp_path: Path) -> None:
    config = project / "pyproject.toml"
    config.write_text('[project]\nname = "x"\n\n[tool.seqbox]\ntimeout = "5m"\nmemory = "1G"\n')
    marker = tmp_path / "ran"
    res = sbx.run("--", "touch", str(marker))
    _assert_one_error_line(res, marker, str(config), "memory")


def test_config_not_toml(sbx: SeqboxRunner, project: Path, tmp_path: Path) -> None:
    config = project / "seqbox.toml"
    config.write_text("mem = \n")
    marker = tmp_path / "ran"
    _assert_one_error_line(sbx.run("--", "touch", str(marker)), marker, str(config))


def test_bad_environment_value(sbx: SeqboxRunner, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    res = sbx.run("--", "touch", str(marker), env={"SEQBOX_MEM": "lots"})
    _assert_one_error_line(res, marker, "SEQBOX_MEM")


def test_config_file_is_used(sbx: SeqboxRunner, project: Path) -> None:
    (project / "seqbox.toml").write_text('mem = "300M"\ntimeout = "0.4s"\n')
    res = sbx.run("--json", "--", "sleep", "30")
    assert res.returncode == 124, res
    assert res.json()["mem_limit_bytes"] == 300 << 20


def test_command_line_beats_config(sbx: SeqboxRunner, project: Path) -> None:
    (project / "seqbox.toml").write_text('mem = "300M"\n')
    res = sbx.run("--json", "--mem", "200M", "--", "true")
    assert res.json()["mem_limit_bytes"] == 200 << 20


def test_outside_variables_do_not_leak_in(sbx: SeqboxRunner) -> None:
    """The suite's isolation itself: no SEQBOX_*/CI/recipe variables, defaults apply."""
    res = sbx.run("--json", "--", "sh", "-c", "env")
    doc = res.json()
    assert doc["mem_limit_bytes"] == 2 << 30  # the default
    seen = {line.split("=", 1)[0] for line in str(doc["stdout"]).splitlines() if "=" in line}
    assert not {"CI", "MEMORY_LIMIT_MB", "TIMEOUT", "KILL_TIMEOUT", "CHECK_INTERVAL"} & seen


# -- backends ------------------------------------------------------------------------


def test_backend_auto_picks_the_probes_choice(sbx: SeqboxRunner) -> None:
    choice = caps.auto_choice()
    for args in (["--backend", "auto"], []):
        res = sbx.run(*args, "--json", "--", "true")
        assert res.returncode == 0, res
        assert res.json()["backend"] == choice
    if choice != "poll":
        assert res.seqbox_lines() == []  # no fallback note when a cgroup backend works


def test_unusable_backend_is_125_with_the_reason(
    sbx: SeqboxRunner, tmp_path: Path, unusable_backend: str
) -> None:
    marker = tmp_path / "ran"
    res = sbx.run("--backend", unusable_backend, "--", "touch", str(marker))
    _assert_one_error_line(res, marker, unusable_backend, caps.probe_reason(unusable_backend))


def test_doctor(sbx: SeqboxRunner) -> None:
    res = sbx.cli("doctor")
    kernel = caps.auto_choice() != "poll"
    assert res.returncode == (0 if kernel else 1), res
    assert caps.auto_choice() in res.stdout
    assert "Traceback" not in res.stderr


def _expected_layout() -> str:
    v1 = v2 = False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fstype = line.partition(" - ")[2].split()[:1]
            v1 = v1 or fstype == ["cgroup"]
            v2 = v2 or fstype == ["cgroup2"]
    return {(True, True): "hybrid", (True, False): "v1", (False, True): "v2"}.get((v1, v2), "none")


def test_doctor_json(sbx: SeqboxRunner) -> None:
    res = sbx.cli("doctor", "--json")
    assert res.returncode == (0 if caps.auto_choice() != "poll" else 1), res
    facts = json.loads(res.stdout)
    assert facts["backend"] == caps.auto_choice()
    assert isinstance(facts["why"], str)
    assert facts["why"]
    assert facts["cgroup_layout"] == _expected_layout()


def test_unknown_command(sbx: SeqboxRunner) -> None:
    res = sbx.cli("frobnicate")
    assert res.returncode == 125, res
    res.one_line()


def test_run_help(sbx: SeqboxRunner) -> None:
    res = sbx.run("--help")
    assert res.returncode == 0, res
    for option in (
        "--mem",
        "--timeout",
        "--grace",
        "--signal",
        "--pids",
        "--json",
        "--report",
        "--log",
    ):
        assert option in res.stdout
