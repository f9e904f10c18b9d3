"""When seqbox asks systemd for a delegated scope (issue 2: an unprivileged user
on a systemd machine gets a cgroup v2 of its own). The decision is pure; the
re-exec itself needs a systemd user manager, which the test machines lack."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqbox.backends.scope import SCOPE_ENV, scope_command


@pytest.fixture
def runtime(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "systemd").mkdir()
    (tmp_path / "systemd" / "private").touch()  # the user manager's socket
    return {"XDG_RUNTIME_DIR": str(tmp_path)}


def _decide(environ: dict[str, str], **overrides: object) -> list[str] | None:
    args: dict[str, object] = {
        "python": "/usr/bin/python3",
        "environ": environ,
        "uid": 1000,
        "backend": "auto",
        "cgroup2_needs_delegation": True,
        "systemd_run": "/usr/bin/systemd-run",
    }
    args.update(overrides)
    return scope_command(["--mem", "1G", "--", "make"], **args)  # type: ignore[arg-type]


def test_an_unprivileged_user_on_systemd_gets_a_delegated_scope(runtime: dict[str, str]) -> None:
    assert _decide(runtime) == [
        "/usr/bin/systemd-run", "--user", "--scope", "--quiet", "--collect", "-p", "Delegate=yes",
        "--", "/usr/bin/python3", "-m", "seqbox", "run", "--mem", "1G", "--", "make",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("why", "overrides"),
    [
        ("root makes its own cgroups", {"uid": 0}),
        ("another backend was asked for", {"backend": "poll"}),
        ("cgroup2 is missing for another reason", {"cgroup2_needs_delegation": False}),
        ("no systemd-run", {"systemd_run": None}),
    ],
)
def test_no_scope_when_it_would_not_help(
    runtime: dict[str, str], why: str, overrides: dict[str, object]
) -> None:
    assert _decide(runtime, **overrides) is None, why


def test_no_scope_without_a_user_manager(tmp_path: Path) -> None:
    assert _decide({"XDG_RUNTIME_DIR": str(tmp_path)}) is None
    assert _decide({}) is None


def test_never_twice(runtime: dict[str, str]) -> None:
    assert _decide({**runtime, SCOPE_ENV: "1"}) is None
